"""Per tensor (or per entry), how much the gradients move with the domain gap and with the group balance, and
the selection rule that keeps the parameters sensitive to bias and insensitive to the domain gap."""

from __future__ import annotations

import pandas as pd
import torch

from aimfair.config import RULES
from aimfair.core.errors import AimfairError
from aimfair.selective.gradients import SETS


def _distance(a: torch.Tensor, b: torch.Tensor, rule: str) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    if rule == "absolute":
        return float((a - b).abs().mean())
    return float(1 - torch.nn.functional.cosine_similarity(a, b, dim=0, eps=1e-30))


def sensitivity_scores(gradients: dict[str, dict[str, torch.Tensor]], rule: str = "absolute") -> pd.DataFrame:
    """Per tensor, in model order: name, numel, domain (d1: D_R vs D_S1), bias (d2: D_S1 vs D_S2).

    `gradients` maps each of SETS to the output of mean_gradients.
    """
    if rule not in RULES:
        raise AimfairError(f"selection.rule must be one of {RULES}, got {rule!r}")
    real, biased, balanced = (gradients[name] for name in SETS)
    rows = [dict(name=name, numel=g.numel(), domain=_distance(g, biased[name], rule),
                 bias=_distance(biased[name], balanced[name], rule)) for name, g in real.items()]
    return pd.DataFrame(rows)


def select_tensors(scores: pd.DataFrame, k: int) -> list[str]:
    """(k smallest domain scores) ∩ (k largest bias scores), in model order."""
    n = len(scores)
    if not 1 <= k <= n:
        raise AimfairError(f"selection.top_k must be between 1 and {n} (the model's parameter tensors), got {k}")
    # a stable sort: ties keep model order, so the choice is deterministic
    domain_safe = set(scores.sort_values("domain", kind="stable")["name"][:k])
    bias_prone = set(scores.sort_values("bias", ascending=False, kind="stable")["name"][:k])
    chosen = [name for name in scores["name"] if name in domain_safe and name in bias_prone]
    if not chosen:
        raise AimfairError(
            f"the {k} tensors least sensitive to the domain gap and the {k} most sensitive to bias have none in "
            f"common, so there is nothing to fine-tune: raise selection.top_k (of {n}; the paper uses 55 of "
            "ResNet-18's 62)")
    return chosen


def select_elements(gradients: dict[str, dict[str, torch.Tensor]], fraction: float) -> dict[str, torch.Tensor]:
    """Entry-level masks: (the `fraction` of all entries with the smallest |g_R - g_S1|) ∩ (the `fraction`
    with the largest |g_S1 - g_S2|). Returns {name: bool tensor} for tensors with at least one entry."""
    if not 0 < fraction <= 1:
        raise AimfairError(f"selection.element_fraction must be in (0, 1], got {fraction}")
    real, biased, balanced = (gradients[name] for name in SETS)
    names = list(real)
    domain = torch.cat([(real[n] - biased[n]).abs().flatten() for n in names])
    bias = torch.cat([(biased[n] - balanced[n]).abs().flatten() for n in names])
    k = max(1, round(fraction * domain.numel()))
    keep = torch.zeros(domain.numel(), dtype=torch.bool)
    safe = torch.zeros_like(keep)
    safe[torch.argsort(domain, stable=True)[:k]] = True
    keep[torch.argsort(bias, descending=True, stable=True)[:k]] = True
    keep &= safe
    if not keep.any():
        raise AimfairError(f"no parameter entry is both among the {fraction:.0%} least domain-sensitive and the "
                           f"{fraction:.0%} most bias-sensitive: raise selection.element_fraction")
    masks, start = {}, 0
    for n in names:
        size = real[n].numel()
        m = keep[start:start + size].view_as(real[n])
        start += size
        if m.any():
            masks[n] = m.clone()
    return masks

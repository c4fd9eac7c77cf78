"""Selective mask generation (SMG): which parameters of the biased model to fine-tune.

The paper's second contribution; docs/strategies.md describes it with its measurements.

For the biased model, the dataset-mean gradient of the loss is computed for every named parameter tensor on
three sets: D_R (the biased real training set), D_S1 (synthetic, skewed like D_R) and D_S2 (synthetic,
balanced). Two scores per tensor follow:

* the domain score d1 = mean |g(D_R) - g(D_S1)|: same bias, different domain, so a large d1 means the
  tensor reacts to the real/synthetic gap;
* the bias score d2 = mean |g(D_S1) - g(D_S2)|: same domain, different bias, so a large d2 means the tensor
  reacts to the group balance.

The mask is (the k tensors with the smallest d1) ∩ (the k tensors with the largest d2). The cosine variant
(the paper's Table 4) scores 1 - cos(g_a, g_b) instead. As an extension, the same rule can pick single
entries instead of whole tensors ("element" granularity; k is then a fraction of all entries).
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from aimfair import io
from aimfair.data.loading import BatchLoader, ImageSet
from aimfair.errors import AimfairError
from aimfair.train import prepare_model

RULES = ("absolute", "cosine")
GRANULARITIES = ("tensor", "element")
BN_MODES = ("train", "eval")
SETS = ("real", "biased_synthetic", "balanced_synthetic")  # D_R, D_S1, D_S2


def mean_gradients(model: nn.Module, images: ImageSet, device: torch.device, batch_size: int = 128,
                   bn_mode: str = "train", seed: int = 0, progress: bool = False) -> dict[str, torch.Tensor]:
    """The dataset-mean gradient of the BCE loss for every named parameter, {name: tensor on the CPU}.

    Works on a copy, so the caller's model (weights, BatchNorm statistics, requires_grad) is untouched.
    Each batch's summed loss is back-propagated and the sum divided by the set size once: the mean over
    batches weighted by batch size. Images get the test-time transform (no augmentation draws); the order
    is shuffled with `seed` so that, with BatchNorm in train mode, batches mix the groups.
    """
    if bn_mode not in BN_MODES:
        raise AimfairError(f"selection.bn_mode must be one of {BN_MODES}, got {bn_mode!r}")
    if len(images) == 0:
        raise AimfairError("cannot compute gradients on an empty set")
    if bn_mode == "train" and len(images) % batch_size == 1:
        raise AimfairError(f"selection.batch_size {batch_size} leaves one image of {len(images)} alone in the last "
                           "batch, which BatchNorm in train mode cannot normalise: choose another batch size")
    probe = prepare_model(copy.deepcopy(model), device)  # (channels-last on a CPU: faster, same maths)
    probe.train(bn_mode == "train")
    for p in probe.parameters():
        p.requires_grad_(True)
        p.grad = None
    loss_fn = nn.BCEWithLogitsLoss(reduction="sum")
    loader = BatchLoader(images, batch_size, device, augment=None, shuffle=True, seed=seed)
    for x, y, _ in tqdm(loader, desc="gradients", leave=False, disable=not progress):
        loss_fn(probe(x).squeeze(1), y.float()).backward()  # gradients add up over the batches
    return {name: (p.grad / len(images)).detach().cpu().contiguous() for name, p in probe.named_parameters()}


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


# ----------------------------------------------------------------------------- masks on disk


@dataclass
class Mask:
    """What to fine-tune: whole tensors (`tensors`) and, at element granularity, which entries of them."""

    arch: str
    tensors: list[str]  # names of the parameter tensors with anything to train, in model order
    shapes: dict[str, list[int]]  # every parameter tensor of the model it was made for
    rule: str = "absolute"
    granularity: str = "tensor"
    top_k: int = 0
    elements: dict[str, torch.Tensor] | None = None  # element granularity: {name: bool tensor}

    def trainable_entries(self) -> int:
        if self.elements is not None:
            return int(sum(int(m.sum()) for m in self.elements.values()))
        return int(sum(int(np.prod(self.shapes[n])) for n in self.tensors))


def save_mask(mask: Mask, folder: str | os.PathLike, scores: pd.DataFrame | None = None) -> Path:
    """mask.json (and mask.safetensors at element granularity) into `folder`; with `scores`, their rows go
    into mask.json too and into scores.csv (for a spreadsheet)."""
    folder = Path(folder)
    meta = dict(arch=mask.arch, rule=mask.rule, granularity=mask.granularity, top_k=mask.top_k,
                n_tensors=len(mask.shapes), n_selected=len(mask.tensors),
                trainable_entries=mask.trainable_entries(),
                total_entries=int(sum(int(np.prod(s)) for s in mask.shapes.values())),
                selected=mask.tensors, shapes=mask.shapes)
    if scores is not None:
        meta["scores"] = scores.to_dict("records")
    if mask.elements is not None:
        with io.atomic_path(folder / "mask.safetensors") as tmp:
            save_file({n: m.to(torch.uint8).contiguous() for n, m in mask.elements.items()}, str(tmp))
    if scores is not None:
        io.write_csv(folder / "scores.csv", scores)
    io.write_json(folder / "mask.json", meta)
    return folder / "mask.json"


def load_mask(path: str | os.PathLike, model: nn.Module, arch: str) -> Mask:
    """Read mask.json (and its entry masks) and check it was made for this architecture."""
    path = Path(path)
    if not path.exists():
        raise AimfairError(f"mask file {path} does not exist: run the mask stage first (dvc repro mask)")
    meta = json.loads(path.read_text())
    shapes = {name: list(p.shape) for name, p in model.named_parameters()}
    stored = meta.get("shapes", {})
    if meta.get("arch") != arch or stored != shapes:
        only_one = sorted(set(stored) ^ set(shapes))
        reshaped = [n for n in shapes if n in stored and stored[n] != shapes[n]]
        if only_one:
            detail = f"{only_one[0]} is in only one of them"
        elif reshaped:
            detail = f"{reshaped[0]} is {stored[reshaped[0]]} in the mask, {shapes[reshaped[0]]} here"
        else:
            detail = f"architecture {meta.get('arch')!r} in the mask, {arch!r} here"
        raise AimfairError(f"mask file {path} was made for another model ({len(stored)} tensors in the mask, "
                           f"{len(shapes)} here; {detail}): rerun the mask stage for this model")
    elements = None
    if meta["granularity"] == "element":
        stored = load_file(str(path.with_suffix(".safetensors")))
        elements = {n: m.bool() for n, m in stored.items()}
    return Mask(arch=meta["arch"], tensors=meta["selected"], shapes=shapes, rule=meta["rule"],
                granularity=meta["granularity"], top_k=meta["top_k"], elements=elements)


def freeze_except(model: nn.Module, names: list[str]) -> int:
    """requires_grad only on the named tensors (the others get no gradient at all); returns their count."""
    known = {n for n, _ in model.named_parameters()}
    unknown = sorted(set(names) - known)
    if unknown:
        raise AimfairError(f"the model has no parameter tensor {unknown[0]!r}: the mask was made for another model")
    for name, p in model.named_parameters():
        p.requires_grad_(name in names)
    return len(names)

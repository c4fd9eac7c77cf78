"""The selective mask: what to fine-tune, on disk (mask.json, scores.csv) and applied to a model."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from aimfair.core import io
from aimfair.core.errors import AimfairError
from aimfair.selective.scores import select_tensors


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
    meta = io.read_json(path, "re-run the mask stage (dvc repro mask)")
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


def tensor_mask(scores: pd.DataFrame, model, arch: str, top_k: int, rule: str) -> Mask:
    """The tensor mask (top-k smallest domain ∩ top-k largest bias scores); marks `scores`' selected column."""
    chosen = select_tensors(scores, top_k)
    scores["selected"] = scores["name"].isin(chosen)
    return Mask(arch=arch, tensors=chosen, shapes={n: list(q.shape) for n, q in model.named_parameters()},
                rule=rule, granularity="tensor", top_k=top_k)

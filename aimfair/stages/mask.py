"""Stage 05_mask: selective mask generation (SMG) on each seed's biased model (aimfair.selection)."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pandas as pd
import torch

from aimfair import paths
from aimfair.config import Params
from aimfair.errors import AimfairError
from aimfair.models import build_classifier, load_checkpoint
from aimfair.selection import Mask, mean_gradients, save_mask, select_elements, select_tensors, sensitivity_scores
from aimfair.stages.common import setup_torch
from aimfair.strategies import Setting


@contextmanager
def full_float32() -> Iterator[None]:
    """No TF32 inside: on an H100, PyTorch's default TF32 convolutions moved the mean gradients of a ResNet-18
    by up to 14% against the CPU's float32 (1e-5 without TF32: tests/test_cuda.py), enough to change which
    tensors a mask keeps. The gradient passes are short, so full precision costs little."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@dataclass
class MaskResult:
    scores: pd.DataFrame  # name, numel, domain, bias, selected
    mask: Mask
    seconds: float  # the three gradient passes and the selection


def run_mask(params: Params, root: Path, seed: int, progress: bool = True) -> MaskResult:
    """Gradients of the seed's biased model on D_R, D_S1 and D_S2; scores and mask in work/masks/seed_<seed>/,
    and the cosine-rule tensor mask of Table 4's aimfair_cosine in its subfolder cosine/."""
    sel, p = params.selection, params.pretrain
    device = setup_torch(p.threads, p.device)
    setting = Setting(params, root, seed, device, progress)
    model = build_classifier(p.arch, "none")
    load_checkpoint(model, setting.biased_checkpoint)
    sets = dict(real=setting.real_train, biased_synthetic=setting.synthetic["biased"],
                balanced_synthetic=setting.synthetic["balanced"])
    started = time.perf_counter()
    with full_float32():
        gradients = {name: mean_gradients(model, images, device, sel.batch_size, sel.bn_mode, sel.seed, progress)
                     for name, images in sets.items()}
    scores = sensitivity_scores(gradients, sel.rule)
    elements = None
    if sel.granularity == "tensor":
        chosen = select_tensors(scores, sel.top_k)
    else:
        elements = select_elements(gradients, sel.element_fraction)
        chosen = [name for name in scores["name"] if name in elements]
    seconds = time.perf_counter() - started
    scores["selected"] = scores["name"].isin(chosen)
    mask = Mask(arch=p.arch, tensors=chosen, shapes={n: list(q.shape) for n, q in model.named_parameters()},
                rule=sel.rule, granularity=sel.granularity, top_k=sel.top_k, elements=elements)
    save_mask(mask, root / paths.mask_dir(seed), scores)
    save_cosine_mask(gradients, model, p.arch, sel.top_k, root / paths.cosine_mask_dir(seed))
    return MaskResult(scores, mask, seconds)


def save_cosine_mask(gradients: dict, model, arch: str, top_k: int, folder: Path) -> Mask:
    """The tensor mask by the cosine rule from the same gradients, for the aimfair_cosine strategy (Table 4)."""
    scores = sensitivity_scores(gradients, "cosine")
    try:
        chosen = select_tensors(scores, top_k)
    except AimfairError as e:
        raise AimfairError(f"the cosine-rule mask for Table 4's aimfair_cosine (written beside the mask): {e}") from None
    scores["selected"] = scores["name"].isin(chosen)
    mask = Mask(arch=arch, tensors=chosen, shapes={n: list(q.shape) for n, q in model.named_parameters()},
                rule="cosine", granularity="tensor", top_k=top_k)
    save_mask(mask, folder, scores)
    return mask

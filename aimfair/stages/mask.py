"""Stage 05_mask: selective mask generation (SMG) on each seed's biased model (aimfair.selection)."""

from __future__ import annotations

import copy
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
from aimfair.small_maps import whole_map_matmuls
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


def biased_model(params: Params, checkpoint: Path):
    """The seed's biased classifier, loaded from `checkpoint`."""
    model = build_classifier(params.pretrain.arch, "none")
    load_checkpoint(model, checkpoint)
    return model


def set_gradients(params: Params, model, sets: dict, device: torch.device, progress: bool = True) -> dict:
    """The dataset-mean gradients of `model` on each of `sets` (selection's batch size, BatchNorm mode and
    order seed), in full float32. On a CPU, the convolutions of layer3's 2x2 and layer4's 1x1 maps run as
    matrix products (aimfair.small_maps: the same gradients, faster); `model` itself is left as it is."""
    sel = params.selection
    # mean_gradients works on its own copy; the extra copy here is only for the CPU's convolution swap
    probe = whole_map_matmuls(copy.deepcopy(model)) if device.type == "cpu" else model  # GPUs keep cuDNN's
    with full_float32():
        return {name: mean_gradients(probe, images, device, sel.batch_size, sel.bn_mode, sel.seed, progress)
                for name, images in sets.items()}


def run_mask(params: Params, root: Path, seed: int, progress: bool = True) -> MaskResult:
    """Gradients of the seed's biased model on D_R, D_S1 and D_S2; scores and mask in work/masks/seed_<seed>/,
    and the cosine-rule tensor mask of Table 4's aimfair_cosine in its subfolder cosine/."""
    sel, p = params.selection, params.pretrain
    device = setup_torch(p.threads, p.device)
    setting = Setting(params, root, seed, device, progress)
    model = biased_model(params, setting.biased_checkpoint)
    sets = dict(real=setting.real_train, biased_synthetic=setting.synthetic["biased"],
                balanced_synthetic=setting.synthetic["balanced"])
    started = time.perf_counter()
    gradients = set_gradients(params, model, sets, device, progress)
    scores = sensitivity_scores(gradients, sel.rule)
    if sel.granularity == "tensor":
        mask = tensor_mask(scores, model, p.arch, sel.top_k, sel.rule)
    else:
        elements = select_elements(gradients, sel.element_fraction)
        chosen = [name for name in scores["name"] if name in elements]
        scores["selected"] = scores["name"].isin(chosen)
        mask = Mask(arch=p.arch, tensors=chosen, shapes={n: list(q.shape) for n, q in model.named_parameters()},
                    rule=sel.rule, granularity=sel.granularity, top_k=sel.top_k, elements=elements)
    seconds = time.perf_counter() - started
    save_mask(mask, root / paths.mask_dir(seed), scores)
    cosine = sensitivity_scores(gradients, "cosine")
    try:
        cosine_mask = tensor_mask(cosine, model, p.arch, sel.top_k, "cosine")
    except AimfairError as e:
        raise AimfairError(f"the cosine-rule mask for Table 4's aimfair_cosine (written beside the mask): {e}") from None
    save_mask(cosine_mask, root / paths.cosine_mask_dir(seed), cosine)
    return MaskResult(scores, mask, seconds)


def tensor_mask(scores: pd.DataFrame, model, arch: str, top_k: int, rule: str) -> Mask:
    """The tensor mask (top-k smallest domain ∩ top-k largest bias scores); marks `scores`' selected column."""
    chosen = select_tensors(scores, top_k)
    scores["selected"] = scores["name"].isin(chosen)
    return Mask(arch=arch, tensors=chosen, shapes={n: list(q.shape) for n, q in model.named_parameters()},
                rule=rule, granularity="tensor", top_k=top_k)

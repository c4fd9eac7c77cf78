"""The dataset-mean gradients of the biased model on D_R, D_S1 and D_S2, the input of the sensitivity scores."""

from __future__ import annotations

import copy
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from torch import nn
from tqdm import tqdm

from aimfair.classifier.models import build_classifier, load_checkpoint
from aimfair.classifier.small_maps import whole_map_matmuls
from aimfair.classifier.train import prepare_model
from aimfair.config import BN_MODES, Params
from aimfair.core.errors import AimfairError
from aimfair.data.loading import BatchLoader, ImageSet

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


def biased_model(params: Params, checkpoint: Path):
    """The seed's biased classifier, loaded from `checkpoint`."""
    model = build_classifier(params.pretrain.arch, "none")
    load_checkpoint(model, checkpoint)
    return model


def set_gradients(params: Params, model, sets: dict, device: torch.device, progress: bool = True) -> dict:
    """The dataset-mean gradients of `model` on each of `sets` (selection's batch size, BatchNorm mode and
    order seed), in full float32. On a CPU, the convolutions of layer3's 2x2 and layer4's 1x1 maps run as
    matrix products (aimfair.classifier.small_maps: the same gradients, faster); `model` itself is left as it is."""
    sel = params.selection
    # mean_gradients works on its own copy; the extra copy here is only for the CPU's convolution swap
    probe = whole_map_matmuls(copy.deepcopy(model)) if device.type == "cpu" else model  # GPUs keep cuDNN's
    with full_float32():
        return {name: mean_gradients(probe, images, device, sel.batch_size, sel.bn_mode, sel.seed, progress)
                for name, images in sets.items()}

"""Masks that ablations compute: from the pipeline's saved scores with another k, or from new gradients."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from aimfair.ablations.base import AblationSetting
from aimfair.config import Params
from aimfair.errors import AimfairError
from aimfair.models import build_classifier
from aimfair.selection import Mask, save_mask, sensitivity_scores
from aimfair.stages.mask import biased_model, set_gradients, tensor_mask


def require_tensor_masks(params: Params, ablation: str) -> None:
    if params.selection.granularity != "tensor":
        raise AimfairError(f"the {ablation} ablation selects whole tensors, as the paper: set selection.granularity "
                           "to tensor")


def save_tensor_mask(scores: pd.DataFrame, params: Params, top_k: int, folder: Path, what: str) -> Mask:
    """The tensor mask of `scores` with `top_k` into `folder`; an empty one is an error naming `what`."""
    model = build_classifier(params.pretrain.arch, "none")  # only the names and shapes are read
    try:
        mask = tensor_mask(scores, model, params.pretrain.arch, top_k, params.selection.rule)
    except AimfairError as e:
        raise AimfairError(f"{what}: {e}") from None
    save_mask(mask, folder, scores)
    return mask


def mask_from_gradients(setting: AblationSetting, folder: Path, what: str,
                        known: dict | None = None) -> tuple[Mask, dict]:
    """The mask of the setting's biased model from its D_R, D_S1 and D_S2, and the gradients (those in `known`
    are reused, not recomputed)."""
    params = setting.params
    model = biased_model(params, setting.biased_checkpoint)
    sets = dict(real=lambda: setting.real_train, biased_synthetic=lambda: setting.synthetic["biased"],
                balanced_synthetic=lambda: setting.synthetic["balanced"])
    gradients = dict(known or {})
    for name, images in sets.items():
        if name not in gradients:
            gradients.update(set_gradients(params, model, {name: images()}, setting.device, setting.progress))
    scores = sensitivity_scores(gradients, params.selection.rule)
    return save_tensor_mask(scores, params, params.selection.top_k, folder, what), gradients

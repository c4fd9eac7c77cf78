"""Masks that ablations compute: from the pipeline's saved scores with another k, or from new gradients."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from aimfair.ablations.base import AblationSetting
from aimfair.classifier.models import build_classifier
from aimfair.classifier.train import data_fingerprint
from aimfair.config import Params, to_dict
from aimfair.core import io
from aimfair.core.errors import AimfairError
from aimfair.selective.gradients import biased_model, set_gradients
from aimfair.selective.masks import Mask, save_mask, tensor_mask
from aimfair.selective.scores import sensitivity_scores


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


def mask_from_gradients(setting: AblationSetting, folder: Path, what: str, known: dict | None = None) -> dict:
    """The mask of the setting's biased model from its D_R, D_S1 and D_S2, into `folder`, unless it is there
    already for the same biased model, images and selection settings (on a GPU, recomputed gradients can differ
    in the last bits and flip a tensor at the top-k boundary, which would retrain its runs). Returns the
    gradients it computed, with `known` (a seed's D_R and D_S2 gradients serve every skew), for the next mask."""
    params = setting.params
    sets = dict(real=setting.real_train, biased_synthetic=setting.synthetic["biased"],
                balanced_synthetic=setting.synthetic["balanced"])
    identity = dict(biased=hashlib.sha1(setting.biased_checkpoint.read_bytes()).hexdigest(),
                    images={name: data_fingerprint(images) for name, images in sets.items()},
                    selection=to_dict(params.selection))
    record = folder / "identity.json"
    gradients = dict(known or {})
    if (folder / "mask.json").exists() and io.read_record(record) == identity:
        return gradients
    model = biased_model(params, setting.biased_checkpoint)
    missing = {name: images for name, images in sets.items() if name not in gradients}
    gradients.update(set_gradients(params, model, missing, setting.device, setting.progress))
    save_tensor_mask(sensitivity_scores(gradients, params.selection.rule), params, params.selection.top_k, folder, what)
    io.write_json(record, identity)
    return gradients

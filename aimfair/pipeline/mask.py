"""Stage 05_mask: selective mask generation (SMG) on each seed's biased model (aimfair.selective)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from aimfair.config import Params
from aimfair.core import paths
from aimfair.core.device import setup_torch
from aimfair.core.errors import AimfairError
from aimfair.selective.gradients import biased_model, set_gradients
from aimfair.selective.masks import Mask, save_mask, tensor_mask
from aimfair.selective.scores import select_elements, sensitivity_scores
from aimfair.strategies.base import Setting


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



"""Top-k: how many tensors each of the two score rankings keeps before they are intersected."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from aimfair.ablations.base import Ablation, Arm, register_ablation
from aimfair.ablations.masks import require_tensor_masks, save_tensor_mask
from aimfair.config import Params
from aimfair.core import paths
from aimfair.core.errors import AimfairError
from aimfair.strategies.table3 import AimFair


@register_ablation
class TopK(Ablation):
    name = "top_k"
    title = "Top-k: tensors kept by each ranking before the intersection"
    knob = "k (of ResNet-18's 62 tensors)"
    paper_direction = ("the paper plots accuracy and fairness against k and picks k = 55 for ResNet-18; a small k "
                       "trains too little, k = 62 is full fine-tuning")

    def mask_file(self, k: int):
        return lambda seed: self.folder / "masks" / f"k{k}" / f"seed_{seed}" / "mask.json"

    def arms(self, params: Params, root: Path) -> list[Arm]:
        pipeline = params.selection.top_k
        arms = [Arm(f"k={k}", str(k), self.variant(AimFair, f"k{k}", f"AIM-Fair with top-k {k}"),
                    setting=dict(mask_file=self.mask_file(k))) for k in params.ablations.top_k if k != pipeline]
        arms.append(Arm(f"k={pipeline} (pipeline)", str(pipeline), "aimfair", reference=True))
        return sorted(arms, key=lambda arm: int(arm.value))

    def prepare(self, params: Params, root: Path, seeds: list[int], device: torch.device, progress: bool) -> None:
        require_tensor_masks(params, self.name)
        for seed in seeds:
            scores_file = root / paths.mask_dir(seed) / "scores.csv"
            if not scores_file.exists():
                raise AimfairError(f"{scores_file} does not exist: run the mask stage (dvc repro)")
            scores = pd.read_csv(scores_file)
            for k in params.ablations.top_k:
                if k != params.selection.top_k:
                    save_tensor_mask(scores.copy(), params, k, root / self.mask_file(k)(seed).parent,
                                     f"ablations.top_k holds {k} (seed {seed}); drop it or choose another k")

"""Skew of D_S1: the biased synthetic set whose gradients stand for the real data's skew in the mask."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import torch

from aimfair.ablations.base import Ablation, AblationSetting, Arm, register_ablation
from aimfair.ablations.masks import mask_from_gradients, require_tensor_masks
from aimfair.config import Params, parse_bias_degree
from aimfair.strategies.table3 import AimFair


def _ratio(skew: str) -> str:
    return skew.replace("/", ":")


@register_ablation
class Skew(Ablation):
    name = "skew"
    title = "Skew of D_S1, the biased synthetic set the mask compares with"
    knob = "D_S1 minority:majority"
    paper_direction = "hardly matters: WST 83.90 (4:6), 83.52 (3:7), 83.16 (2:8), 84.20 (1:9, the real data's skew)"

    def mask_file(self, skew: str):
        return lambda seed: self.folder / "masks" / _ratio(skew).replace(":", "_") / f"seed_{seed}" / "mask.json"

    def arms(self, params: Params, root: Path) -> list[Arm]:
        pipeline = params.synthetic.biased_skew or params.data.bias_degree
        arms = [Arm(f"D_S1 {_ratio(skew)}", _ratio(skew),
                    self.variant(AimFair, _ratio(skew).replace(":", "_"), f"AIM-Fair, mask with D_S1 at {_ratio(skew)}"),
                    setting=dict(mask_file=self.mask_file(skew)))
                for skew in params.ablations.skew if parse_bias_degree(skew) != parse_bias_degree(pipeline)]
        arms.append(Arm(f"D_S1 {_ratio(pipeline)} (pipeline)", _ratio(pipeline), "aimfair", reference=True))
        return sorted(arms, key=lambda arm: -Fraction(arm.value.replace(":", "/")))  # towards the real skew

    def prepare(self, params: Params, root: Path, seeds: list[int], device: torch.device, progress: bool) -> None:
        require_tensor_masks(params, self.name)
        for seed in seeds:
            known = None  # D_R's and D_S2's gradients are the same for every skew
            for arm in self.arms(params, root):
                if not arm.reference:
                    skewed = AblationSetting(params, root, seed, device, progress, biased_skew=arm.value.replace(":", "/"))
                    gradients = mask_from_gradients(skewed, root / self.mask_file(arm.value)(seed).parent,
                                                    f"the mask with D_S1 at {arm.value} (seed {seed})", known)
                    known = {k: v for k, v in gradients.items() if k != "biased_synthetic"}

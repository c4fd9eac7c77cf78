"""Less real data: the biased model, its mask and AIM-Fair from a share of the real training set."""

from __future__ import annotations

from pathlib import Path

import torch

from aimfair.ablations.base import Ablation, Arm, register_ablation, values_key
from aimfair.ablations.masks import mask_from_gradients, require_tensor_masks
from aimfair.config import Params
from aimfair.data.loading import ImageSet
from aimfair.strategies.base import Setting, Strategy
from aimfair.strategies.registry import run_dir
from aimfair.strategies.runner import run_locked
from aimfair.strategies.table3 import AimFair


class RealOnly(Strategy):
    """ERM on the setting's real training set from a new model: the biased model of a smaller real set."""

    from_biased = False

    def training_set(self, setting: Setting) -> ImageSet:
        return setting.real_train


@register_ablation
class RealFraction(Ablation):
    name = "real_fraction"
    title = "Less real data: baseline and AIM-Fair when the biased model sees a share of the real training set"
    knob = "share of the real training set"
    paper_direction = ("AIM-Fair degrades gently: ACC/WST/EO 89.02/84.20/6.07 (100%), 88.85/83.99/6.28 (50%), "
                       "88.89/82.54/7.59 (25%), 87.90/81.73/8.16 (10%)")

    def mask_file(self, key: str):
        return lambda seed: self.folder / "masks" / f"real_{key}" / f"seed_{seed}" / "mask.json"

    def arms(self, params: Params, root: Path) -> list[Arm]:
        arms = [Arm("baseline, 100% real (pipeline)", "1", "baseline", series="baseline", reference=True),
                Arm("AIM-Fair, 100% real (pipeline)", "1", "aimfair", reference=True)]
        for fraction in sorted(params.ablations.real_fraction, reverse=True):
            key, percent = values_key(fraction), f"{100 * fraction:.4g}%"
            erm = self.variant(RealOnly, f"erm_{key}", f"the biased model of {percent} of the real data")
            arms.append(Arm(f"baseline, {percent} real", key, erm, series="baseline",
                            setting=dict(real_fraction=fraction)))
            arms.append(Arm(f"AIM-Fair, {percent} real", key,
                            self.variant(AimFair, f"aimfair_{key}", f"AIM-Fair on the biased model of {percent}"),
                            setting=dict(real_fraction=fraction, mask_file=self.mask_file(key),
                                         biased_file=lambda seed, erm=erm: run_dir(erm, seed) / "best.safetensors")))
        return arms

    def prepare(self, params: Params, root: Path, seeds: list[int], device: torch.device, progress: bool) -> None:
        """Train each share's biased model (reused later as the baseline arm), then its mask."""
        require_tensor_masks(params, self.name)
        arms = self.arms(params, root)
        for seed in seeds:
            for erm, aimfair in zip(arms[2::2], arms[3::2]):
                run_locked(erm.strategy, erm.setting_for(params, root, seed, device, progress))
                mask_from_gradients(aimfair.setting_for(params, root, seed, device, progress),
                                    root / self.mask_file(aimfair.value)(seed).parent,
                                    f"the mask of the biased model of {aimfair.label} (seed {seed})")

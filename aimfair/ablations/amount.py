"""Amount of balanced synthetic data: D_S2's size as a multiple of the real training set's."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import torch

from aimfair.ablations.base import Ablation, Arm, register_ablation, values_key
from aimfair.config import Params
from aimfair.core import paths
from aimfair.core.groups import GROUPS
from aimfair.csdg.generation import build_generator, pool_plan, read_prompts
from aimfair.csdg.pool import generate_pool, plan_jobs
from aimfair.strategies.table3 import AimFair


def real_size(root: Path) -> int:
    return len(pd.read_csv(root / paths.SPLITS / "train.csv"))


def link_pool(source: Path, target: Path) -> None:
    """Seed `target` with `source`'s images (hard links where the disk allows): a larger pool planned from the
    same prompts and seed starts with the same jobs, so only the new images are generated."""
    for group in GROUPS:
        (target / group).mkdir(parents=True, exist_ok=True)
        for image in sorted((source / group).glob("*.png")):
            copy = target / group / image.name
            if not copy.exists():
                try:
                    os.link(image, copy)
                except OSError:
                    shutil.copy2(image, copy)


@register_ablation
class Amount(Ablation):
    name = "amount"
    title = "Amount of balanced synthetic data (D_S2) relative to the real training set"
    knob = "D_S2 size / real training set size"
    paper_direction = "no trend: WST 80.80 (0.5), 84.20 (1), 81.25 (1.5), 83.36 (2); the paper keeps 1"

    def per_group(self, ratio: float, root: Path) -> int:
        return max(1, round(ratio * real_size(root) / len(GROUPS)))

    def arms(self, params: Params, root: Path) -> list[Arm]:
        own = params.synthetic.balanced_per_group
        pipeline = f"{own * len(GROUPS) / real_size(root):.2f}".rstrip("0").rstrip(".")  # 0.67, or 1 (the paper's key)
        arms = [Arm(f"{ratio:g}× real", values_key(ratio),
                    self.variant(AimFair, f"x{values_key(ratio)}", f"AIM-Fair on {ratio:g}x the real set's size of D_S2"),
                    setting=dict(pool=self.folder / "pool", balanced_per_group=self.per_group(ratio, root)))
                for ratio in params.ablations.amount if self.per_group(ratio, root) != own]
        arms.append(Arm(f"{pipeline}× real (pipeline)", pipeline, "aimfair", reference=True))
        return sorted(arms, key=lambda arm: float(arm.value))

    def prepare(self, params: Params, root: Path, seeds: list[int], device: torch.device, progress: bool) -> None:
        largest = max(self.per_group(ratio, root) for ratio in params.ablations.amount)
        sizes = {g: max(n, largest) for g, n in pool_plan(params).items()}
        pool = root / self.folder / "pool"
        link_pool(root / paths.POOL, pool)
        jobs = plan_jobs(read_prompts(root), sizes, params.generate.seed)
        generate_pool(build_generator(params, root), jobs, pool, params.generate.batch_size, progress)

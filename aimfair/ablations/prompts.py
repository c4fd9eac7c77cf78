"""Prompts: one plain prompt per group against contextual ones, and how many contextual prompts per group."""

from __future__ import annotations

from pathlib import Path

import torch

from aimfair.ablations.base import Ablation, Arm, register_ablation
from aimfair.config import Params
from aimfair.core.errors import AimfairError
from aimfair.core.groups import GROUPS
from aimfair.csdg.generation import build_generator, pool_plan, read_prompts
from aimfair.csdg.pool import generate_pool, plan_jobs
from aimfair.csdg.prompts.grammar import single_prompt
from aimfair.strategies.table3 import SyntheticOnly


def _tag(value: str) -> str:
    return "single" if value == "single" else f"contextual_{value}"


@register_ablation
class Prompts(Ablation):
    name = "prompts"
    title = "Prompts: a new model trained on synthetic data only, from one plain or n contextual prompts per group"
    knob = "prompts per group"
    paper_direction = ("richer prompts help: synthetic-only ACC/WST 71.65/43.28 with one plain prompt, 81.85/69.73 "
                       "with 25 contextual, 82.66/72.22 with 50, 85.98/78.52 with 50 that also vary the head pose")

    def arms(self, params: Params, root: Path) -> list[Arm]:
        n = params.prompts.n_per_group
        if params.prompts.mode != "contextual":
            raise AimfairError("the prompts ablation compares with the pipeline's contextual prompts: set prompts.mode "
                               "to contextual")
        too_many = [v for v in params.ablations.prompts if v != "single" and int(v) > n]
        if too_many:
            raise AimfairError(f"ablations.prompts holds {too_many[0]}: at most prompts.n_per_group ({n}), the "
                               "contextual prompts the pipeline wrote")
        arms = [Arm("1 plain prompt" if v == "single" else f"{v} contextual", v,
                    self.variant(SyntheticOnly, _tag(v), f"synthetic only, from {_tag(v).replace('_', ' ')} prompts"),
                    series="synthetic only", setting=dict(pool=self.folder / _tag(v) / "pool"))
                for v in params.ablations.prompts if v != str(n)]
        arms.append(Arm(f"{n} contextual (pipeline)", str(n), "synthetic_only", series="synthetic only", reference=True))
        return sorted(arms, key=lambda arm: 1 if arm.value == "single" else int(arm.value))

    def prepare(self, params: Params, root: Path, seeds: list[int], device: torch.device, progress: bool) -> None:
        contextual, d = read_prompts(root), params.data
        generator = None
        for arm in self.arms(params, root):
            if arm.reference:
                continue
            if arm.value == "single":  # the paper's plain prompt, e.g. "Portrait face photo of a smiling man."
                prompts = {g: [single_prompt(d.target, d.sensitive, g)] for g in GROUPS}
            else:
                prompts = {g: contextual[g][:int(arm.value)] for g in GROUPS}
            generator = generator or build_generator(params, root)
            jobs = plan_jobs(prompts, pool_plan(params), params.generate.seed)
            generate_pool(generator, jobs, root / arm.setting["pool"], params.generate.batch_size, progress)

"""Stage repair: the edited real images of the data-repairing strategy (aimfair.csdg.repair), in work/repaired/."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from aimfair.config import Params
from aimfair.core import paths
from aimfair.core.errors import AimfairError
from aimfair.csdg.generation import build_generator, read_prompts
from aimfair.csdg.pool import PoolRun, generate_pool
from aimfair.csdg.repair import SourceEditor, plan_repairs
from aimfair.data.images import image_dir


def run_repair(params: Params, root: Path, progress: bool = True, state=None) -> PoolRun:
    """Edit real training images until every group is as large as the largest; resumable like the pool."""
    split = root / paths.SPLITS / "train.csv"
    if not split.exists():
        raise AimfairError(f"{split} does not exist: run the data stage first (dvc repro data)")
    device = state.device if state is not None and state.num_processes > 1 else None
    generator = build_generator(params, root, device, steps=params.repair.steps or None)
    jobs = plan_repairs(pd.read_csv(split), read_prompts(root), params.repair.seed)
    source_size = getattr(generator, "size", generator.info.resolution)  # SD edits at its native size
    editor = SourceEditor(generator, image_dir(params, root), params.repair.strength, source_size)
    return generate_pool(editor, jobs, root / paths.REPAIRED, params.generate.batch_size, progress, state)

"""Stage 03_generate: the synthetic pool per group, from the prompts, with the built-in model or SD.

Several GPUs (or CPU processes) share the work when the command runs under accelerate:
`accelerate launch -m aimfair generate` (see aimfair.csdg.pool for why the pool does not depend on it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aimfair.config import Params
from aimfair.core import paths
from aimfair.csdg.fidelity import FidelityResult, run_fidelity
from aimfair.csdg.generation import build_generator, pool_plan, read_prompts
from aimfair.csdg.pool import PoolRun, generate_pool, load_pool_images, plan_jobs


@dataclass
class GenerateRun(PoolRun):
    """The pool run, its images and the fidelity oracle's reading of them (None on processes other than the
    main one)."""

    pixels: np.ndarray | None = None  # uint8 (N, H, W, 3), manifest order
    fidelity: FidelityResult | None = None


def run_generate(params: Params, root: Path, progress: bool = True, state=None) -> GenerateRun:
    """Generate (or complete) work/pool, then read it with the fidelity oracle (reports/fidelity.json).

    `state` is an accelerate PartialState for multi-process runs: the processes share the pool, and the main
    one alone trains the oracle and scores the pool.
    """
    device = state.device if state is not None and state.num_processes > 1 else None
    generator = build_generator(params, root, device)
    jobs = plan_jobs(read_prompts(root), pool_plan(params), params.generate.seed)
    pool = generate_pool(generator, jobs, root / paths.POOL, params.generate.batch_size, progress, state)
    if pool.manifest is None:
        return GenerateRun(**vars(pool))
    del generator  # free its memory before the oracle trains
    pixels = load_pool_images(root / paths.POOL, pool.manifest)
    return GenerateRun(**vars(pool), pixels=pixels,
                       fidelity=run_fidelity(params, root, pool.manifest, pixels, progress))

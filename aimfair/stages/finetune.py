"""Stage 06_finetune: every strategy of params.finetune.strategies for every seed (aimfair.strategies).

Runs already done with the same settings and data are reused (their run record matches), so a killed or
extended run only trains what is missing.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from aimfair.config import Params
from aimfair.stages.common import setup_torch
from aimfair.strategies import run_all


def run_finetune(params: Params, root: Path, progress: bool = True) -> pd.DataFrame:
    """Train (or reuse) every strategy x seed; one row per run (strategy, seed, skipped, seconds, ...)."""
    device = setup_torch(params.pretrain.threads, params.pretrain.device)
    return run_all(params, root, device, progress)

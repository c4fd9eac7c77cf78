"""Stage 06_finetune: every strategy of params.finetune.strategies for every seed (aimfair.strategies).

Runs already done with the same settings and data are reused (their run record matches), so a killed or
extended run only trains what is missing. Several GPUs or CPU processes share the runs when the command
runs under torchrun or accelerate (`torchrun --nproc_per_node 2 -m aimfair finetune`); `dvc repro` then
finds every run done and reuses it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from aimfair.config import Params
from aimfair.strategies.runner import run_all, training_device


def run_finetune(params: Params, root: Path, progress: bool = True, state=None) -> pd.DataFrame:
    """Train (or reuse) every strategy x seed; one row per run of this process (strategy, seed, skipped,
    seconds, ...). `state`: an accelerate PartialState when several processes share the runs."""
    return run_all(params, root, training_device(params, state), progress, state=state)

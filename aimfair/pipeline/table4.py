"""Stage table4 (experiments/dvc.yaml, opt-in): the partial fine-tuning baselines of the paper's Table 4.

Trains the strategies of table4.strategies that stage finetune does not run (aimfair.strategies.table4; a
family as all its variants) into work/partial/, reuses stage finetune's models of the others (baseline,
full_ft, aimfair), and evaluates them all as stage evaluate does, into reports/table4/.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from aimfair.config import Params
from aimfair.core import paths
from aimfair.evaluation.evaluate import Evaluation, shown_names, write_evaluation
from aimfair.pipeline.evaluate import run_evaluate
from aimfair.strategies.registry import to_train_beside_finetune
from aimfair.strategies.runner import run_all, training_device


@dataclass
class Table4Result:
    runs: pd.DataFrame  # one row per trained (or reused) run of the Table 4 strategies
    evaluation: Evaluation
    shown: list[str]  # the table's rows, in order
    files: dict[str, Path]


def strategies_to_train(params: Params) -> list[str]:
    """The strategies of table4.strategies that this stage trains; those of stage finetune are read from it,
    so they must be among finetune.strategies."""
    return to_train_beside_finetune(params.table4.strategies, params.finetune.strategies, "table4.strategies")


def run_table4(params: Params, root: Path, progress: bool = True, state=None) -> Table4Result | None:
    """Train what is missing, evaluate every strategy of table4.strategies, write reports/table4/.
    `state`: an accelerate PartialState when several processes share the runs; only the main process
    evaluates (the others return None)."""
    names = params.table4.strategies
    partial = strategies_to_train(params)
    runs = pd.DataFrame()
    if partial:
        runs = run_all(params, root, training_device(params, state), progress, strategies=partial, state=state)
    if state is not None and not state.is_main_process:
        return None
    evaluation = run_evaluate(params, root, progress, strategies=names)
    shown = shown_names(names)
    # Table 4 asks whether the mask beats simpler choices of what to fine-tune: every row against AIM-Fair
    files = write_evaluation(evaluation, params, root, paths.TABLE4_REPORTS, shown=shown,
                             references=("aimfair", "baseline"))
    return Table4Result(runs, evaluation, shown, files)

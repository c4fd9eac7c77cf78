"""Stage robust (experiments/dvc.yaml, opt-in): the group-robustness baselines beside AIM-Fair.

Trains the strategies of robust.strategies that stage finetune does not run (aimfair.strategies.robust: JTT as
all its variants) into work/robust/, reuses stage finetune's models of the others, and evaluates them all as
stage evaluate does, into reports/robust/. The table answers: on the same real data, how does fine-tuning on
synthetic data compare with methods that reweight the real data, with and without group labels?
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from aimfair.config import Params
from aimfair.core import paths
from aimfair.core.groups import GROUPS, group_key
from aimfair.evaluation.evaluate import Evaluation, shown_names, write_evaluation
from aimfair.pipeline.evaluate import run_evaluate
from aimfair.strategies.base import Setting
from aimfair.strategies.registry import STRATEGIES, to_train_beside_finetune
from aimfair.strategies.robust import register_jtt
from aimfair.strategies.runner import run_all, training_device


@dataclass
class RobustResult:
    runs: pd.DataFrame  # one row per trained (or reused) run of the robust strategies
    evaluation: Evaluation
    shown: list[str]  # the table's rows, in order
    files: dict[str, Path]


def strategies_to_train(params: Params) -> list[str]:
    """The strategies of robust.strategies that this stage trains; stage finetune's must be in
    finetune.strategies, as they are read from it."""
    return to_train_beside_finetune(params.robust.strategies, params.finetune.strategies, "robust.strategies")


def run_robust(params: Params, root: Path, progress: bool = True) -> RobustResult:
    """Train what is missing, evaluate every strategy of robust.strategies, write reports/robust/."""
    register_jtt(params)
    names = params.robust.strategies
    trained = strategies_to_train(params)
    runs = run_all(params, root, training_device(params), progress, strategies=trained) if trained else pd.DataFrame()
    evaluation = run_evaluate(params, root, progress, strategies=names)
    shown = shown_names(names)
    # every row against the biased model (ERM on the same real data) and against AIM-Fair
    files = write_evaluation(evaluation, params, root, paths.ROBUST_REPORTS, shown=shown,
                             references=("baseline", "aimfair"))
    return RobustResult(runs, evaluation, shown, files)


def jtt_errors(params: Params, root: Path, result: RobustResult) -> pd.DataFrame:
    """Per seed and T: how many real training images JTT's identification model gets wrong, in all and per
    group, and the (T, λ_up) that validation chose for the seed."""
    if "jtt" not in params.robust.strategies:
        return pd.DataFrame()
    chosen = result.evaluation.per_seed.query("strategy == 'jtt'").set_index("seed")["variant"]
    device, rows = training_device(params), []
    for seed in params.seeds:
        setting = Setting(params, root, seed, device, progress=False)
        real = setting.real_train
        for epochs in params.robust.jtt_epochs:
            errors = STRATEGIES[f"jtt_identify-T{epochs}"]().errors(setting)
            wrong = pd.Series([group_key(y, s) for y, s in zip(real.y[errors], real.s[errors])], dtype=object)
            rows.append(dict(seed=seed, T=epochs, errors=len(errors), **{f"errors in {g}": int((wrong == g).sum())
                                                                         for g in GROUPS},
                             chosen=chosen.get(seed, "")))
    return pd.DataFrame(rows)

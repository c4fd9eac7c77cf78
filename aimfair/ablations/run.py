"""Run one ablation: prepare, train every arm for every seed, evaluate, write its table and figure."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from aimfair.ablations.base import ABLATIONS, Ablation, Arm, replace_seeds
from aimfair.config import Params
from aimfair.core import io, paths
from aimfair.core.errors import AimfairError
from aimfair.evaluation.evaluate import Evaluation, evaluate_checkpoints, write_evaluation
from aimfair.evaluation.report import plot_ablation, save_figure
from aimfair.paper.numbers import ABLATIONS as PAPER_ABLATIONS
from aimfair.strategies.registry import checkpoint_path
from aimfair.strategies.runner import run_locked, run_row, training_device


@dataclass
class AblationResult:
    ablation: Ablation
    arms: list[Arm]  # the table's rows, in order
    runs: pd.DataFrame  # one row per run trained or reused here
    evaluation: Evaluation  # per_seed has the arm's label as strategy, and its value and series
    files: dict[str, Path]


def get_ablation(name: str) -> Ablation:
    if name not in ABLATIONS:
        raise AimfairError(f"unknown ablation {name!r}: choose from {', '.join(ABLATIONS)}")
    return ABLATIONS[name]()


def run_ablation(name: str, params: Params, root: Path, progress: bool = True) -> AblationResult:
    """The ablation `name` on params.ablations.seeds (default: every seed) into reports/ablations/<name>/."""
    ablation = get_ablation(name)
    seeds = params.ablations.seeds or params.seeds
    device = training_device(params)
    arms = ablation.arms(params, root)
    ablation.prepare(params, root, seeds, device, progress)
    checkpoints, runs = {}, []
    for seed in seeds:
        for arm in arms:
            if arm.reference:
                checkpoint = checkpoint_path(root, arm.strategy, seed)
                if not checkpoint.exists():
                    raise AimfairError(f"the {name} ablation compares with stage finetune's {arm.strategy} for seed "
                                       f"{seed}, which is not at {checkpoint}: add {arm.strategy} to "
                                       "finetune.strategies and run dvc repro")
            else:
                result = run_locked(arm.strategy, arm.setting_for(params, root, seed, device, progress))
                runs.append(run_row(result))
                checkpoint = result.checkpoint
            checkpoints[arm.label, seed] = checkpoint
    evaluation = evaluate_checkpoints(params, root, checkpoints, progress)
    by_label = {arm.label: arm for arm in arms}
    evaluation.per_seed["value"] = evaluation.per_seed["strategy"].map(lambda label: by_label[label].value)
    evaluation.per_seed["series"] = evaluation.per_seed["strategy"].map(lambda label: by_label[label].series)
    folder = paths.ABLATION_REPORTS / name
    files = write_evaluation(evaluation, replace_seeds(params, seeds), root, folder, shown=[a.label for a in arms],
                             pairs=ablation.pairs(arms))
    io.write_text(files["table_md"], f"## Ablation: {ablation.title}\n\n" + files["table_md"].read_text() +
                  f"\nThe paper (CelebA Smiling/Male): {ablation.paper_direction}.\n")
    figure = plot_ablation(evaluation.per_seed, arms, ablation.knob, ablation.title, PAPER_ABLATIONS.get(name))
    files["figure"] = save_figure(figure, root / paths.FIGURES / "ablations" / f"{name}.png")
    return AblationResult(ablation, arms, pd.DataFrame(runs), evaluation, files)


def beside_paper(result: AblationResult) -> pd.DataFrame:
    """Per arm, our mean ACC, WST and EO over seeds beside the paper's numbers for the same value (CelebA
    Smiling/Male; blank where the paper gives none)."""
    paper = PAPER_ABLATIONS.get(result.ablation.name, {})
    means = result.evaluation.per_seed.groupby("strategy", sort=False)[["ACC", "WST", "EO_paper"]].mean()
    rows = []
    for arm in result.arms:
        theirs = paper.get(arm.value, {}) if arm.series != "baseline" else {}
        rows.append({"arm": arm.label, **{f"{m} (ours)": means.loc[arm.label, m] for m in ("ACC", "WST", "EO_paper")},
                     **{f"{m} (paper)": theirs.get(m) for m in ("ACC", "WST", "EO_paper")}})
    return pd.DataFrame(rows).set_index("arm").round(2)

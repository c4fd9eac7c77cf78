"""Model selection: which epoch a fine-tuning run keeps, under each rule of finetune.selection.

Stage finetune's runs keep the epoch of the pipeline's rule (by default the paper's: overall accuracy on real
validation images). Here AIM-Fair, full fine-tuning and linear probing train again under each other rule of
ablations.model_selection. Every run trained here scores two validation sets after each epoch:

* the real validation images, per group (real_val_worst selects on them: it needs real group labels, an oracle);
* a balanced synthetic validation set (synthetic_val_worst selects on it: no real group labels). Its images are
  the ones a pool grown by `val_per_group` per group would add after its own, so they are disjoint from D_S1 and
  D_S2; they live in this ablation's folder and are not filtered by the fidelity oracle.

Test images are never looked at during training. Besides the table (test metrics per rule, with intervals),
`tracking` measures how well the synthetic set's WST and EO follow the real validation set's over epochs and runs,
and `toward_oracle` how much of the oracle's gain on the test split the label-free rule keeps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib import pyplot as plt

from aimfair.ablations.base import Ablation, Arm, register_ablation
from aimfair.ablations.run import AblationResult, run_ablation
from aimfair.config import Params
from aimfair.core import io, paths
from aimfair.core.errors import AimfairError
from aimfair.core.groups import GROUPS
from aimfair.csdg.generation import build_generator, read_prompts
from aimfair.csdg.pool import Job, generate_pool, plan_jobs, pool_sizes
from aimfair.csdg.synthetic import draw_sets, usable_pool
from aimfair.evaluation.evaluate import Evaluation, add_intervals
from aimfair.evaluation.report import difference_cell, save_figure
from aimfair.evaluation.uncertainty import compare
from aimfair.strategies.registry import STRATEGIES, run_dir

VALIDATION_POOL = "validation_pool"  # under the ablation's folder
ORACLE = "real_val_worst"
LABEL_FREE = "synthetic_val_worst"
RULE_NAMES = {"real_val_acc": "real val accuracy", LABEL_FREE: "synthetic val worst group",
              ORACLE: "real val worst group (oracle)"}
MONITORED = ("real_val", "synthetic_val")  # fit's history prefixes


def validation_jobs(params: Params, prompts: dict[str, list[str]], per_group: int) -> list[Job]:
    """The synthetic validation set's jobs: per group, the `per_group` images that follow the ones D_S1 and D_S2
    can draw (those a pool grown by synthetic.val_per_group would add), from the pool's prompts and seed."""
    s = params.synthetic
    start = pool_sizes(s.balanced_per_group, s.biased_size, s.biased_skew or params.data.bias_degree)
    jobs = plan_jobs(prompts, {g: start[g] + per_group for g in GROUPS}, params.generate.seed)
    index = {g: 0 for g in GROUPS}
    kept = []
    for job in jobs:  # plan_jobs lists each group's images in order
        if index[job.group] >= start[job.group]:
            kept.append(job)
        index[job.group] += 1
    return kept


@register_ablation
class ModelSelection(Ablation):
    name = "model_selection"
    title = "Model selection: the epoch a fine-tuning run keeps, by rule"
    knob = "selection rule"
    paper_direction = ("the paper keeps the epoch with the best overall accuracy on real validation images and "
                       "reports no other rule")

    @property
    def validation_pool(self) -> Path:
        return self.folder / VALIDATION_POOL

    def arms(self, params: Params, root: Path) -> list[Arm]:
        cfg, own = params.ablations.model_selection, params.finetune.selection
        missing = [name for name in cfg.strategies if name not in params.finetune.strategies]
        if missing:
            raise AimfairError(f"ablations.model_selection.strategies names {missing[0]!r}, which finetune.strategies "
                               "does not run: add it there (dvc repro trains it) or remove it from the ablation")
        arms = []
        for name in cfg.strategies:
            arms.append(Arm(f"{name}, {own} (pipeline)", own, name, series=name, reference=True))
            for rule in cfg.rules:
                if rule != own:
                    strategy = self.variant(STRATEGIES[name], f"{name}-{rule}",
                                            f"{name}, keeping the epoch of the best {RULE_NAMES[rule]}")
                    arms.append(Arm(f"{name}, {rule}", rule, strategy, series=name,
                                    setting=dict(selection=rule, validation_pool=self.validation_pool)))
        return arms

    def pairs(self, arms: list[Arm]) -> list[tuple[str, str]]:
        """Every rule against the pipeline's, and the label-free rule against the oracle."""
        pairs = super().pairs(arms)
        by_rule = {(arm.series, arm.value): arm.label for arm in arms}
        for series in dict.fromkeys(arm.series for arm in arms):
            if (series, LABEL_FREE) in by_rule and (series, ORACLE) in by_rule:
                pairs.append((by_rule[series, LABEL_FREE], by_rule[series, ORACLE]))
        return pairs

    def prepare(self, params: Params, root: Path, seeds: list[int], device: torch.device, progress: bool) -> None:
        jobs = validation_jobs(params, read_prompts(root), params.ablations.model_selection.val_per_group)
        s = params.synthetic
        drawn = draw_sets(usable_pool(params, root), s.balanced_per_group, s.biased_size,
                          s.biased_skew or params.data.bias_degree)
        shared = {job.path for job in jobs} & {path for rows in drawn.values() for path in rows["path"]}
        if shared:  # only when the fidelity filter pushes D_S1 or D_S2 past the pool's first images
            raise AimfairError(f"the synthetic validation set would share {len(shared)} images with D_S1 or D_S2 "
                               f"(e.g. {sorted(shared)[0]}): set synthetic.val_per_group to 0 or turn fidelity.filter "
                               "off for this ablation")
        generate_pool(build_generator(params, root), jobs, root / self.validation_pool, params.generate.batch_size,
                      progress)


def _eo(history: pd.DataFrame, prefix: str) -> pd.Series:
    """EO (the paper's: the larger of the TPR gap and the FPR gap) from a monitored set's group accuracies: the
    TPR of s is the accuracy of group (1, s), the FPR is 100 minus that of (0, s)."""
    acc = {g: history[f"{prefix}_acc_{g}"] for g in GROUPS}
    return np.maximum((acc["1_1"] - acc["1_0"]).abs(), (acc["0_1"] - acc["0_0"]).abs())


def tracking(arms: list[Arm], seeds: list[int], root: Path) -> pd.DataFrame:
    """One row per epoch of each (strategy, seed): WST and EO on the synthetic and on the real validation set.

    The rules only choose among the same epochs, so one trained run per strategy and seed is read (its first
    rule's; the epochs are the same under every rule)."""
    rows = []
    for series in dict.fromkeys(arm.series for arm in arms):
        trained = next((arm for arm in arms if arm.series == series and not arm.reference), None)
        if trained is None:
            continue
        for seed in seeds:
            history = pd.read_csv(root / run_dir(trained.strategy, seed) / "history.csv")
            frame = pd.DataFrame({"strategy": series, "seed": seed, "epoch": history["epoch"]})
            for prefix in MONITORED:
                frame[f"{prefix}_WST"] = history[f"{prefix}_wst"]
                frame[f"{prefix}_EO"] = _eo(history, prefix)
            rows.append(frame)
    if not rows:
        raise AimfairError("the model_selection ablation trained no run: list a rule other than finetune.selection "
                           "in ablations.model_selection.rules")
    return pd.concat(rows, ignore_index=True)


def tracking_summary(points: pd.DataFrame) -> pd.DataFrame:
    """Per strategy (and all together): how closely the synthetic validation set's WST and EO follow the real
    validation set's. Pearson's r over every epoch of every run, and Spearman's rank correlation within each run
    over its epochs, averaged over runs (whether the synthetic set orders a run's epochs as the real one does)."""
    def summary(group: pd.DataFrame) -> dict:
        out = {"epochs": len(group), "runs": group.groupby(["strategy", "seed"]).ngroups}
        for metric in ("WST", "EO"):
            synthetic, real = group[f"synthetic_val_{metric}"], group[f"real_val_{metric}"]
            out[f"{metric} r (all epochs)"] = synthetic.corr(real)
            within = [g[f"synthetic_val_{metric}"].corr(g[f"real_val_{metric}"], method="spearman")
                      for _, g in group.groupby(["strategy", "seed"])]
            out[f"{metric} Spearman (within runs)"] = float(np.nanmean(within)) if within else np.nan
        return out
    rows = {name: summary(group) for name, group in points.groupby("strategy", sort=False)}
    rows["all"] = summary(points)
    return pd.DataFrame.from_dict(rows, orient="index").round(3)


def toward_oracle(evaluation: Evaluation, arms: list[Arm], params: Params) -> pd.DataFrame:
    """Per strategy and metric (WST, EO), the test values under the pipeline's rule, the label-free rule and the
    oracle, aggregated as the table aggregates them; each rule's difference from the pipeline's with its 95 %
    interval (paired, as in the table); and the share of the oracle's gain that the label-free rule keeps,
    (label-free - pipeline) / (oracle - pipeline), given only when the oracle's gain is shown (its interval
    excludes zero): otherwise there is no gain to share."""
    replicates = add_intervals(evaluation, params)
    rows = []
    for series in dict.fromkeys(arm.series for arm in arms):
        label = {("pipeline" if arm.reference else arm.value): arm.label for arm in arms if arm.series == series}
        if not {"pipeline", LABEL_FREE, ORACLE} <= set(label):
            continue
        for metric, better in (("WST", 1), ("EO_paper", -1)):
            value = {k: evaluation.aggregate[label[k]]["paper"][metric] for k in ("pipeline", LABEL_FREE, ORACLE)}
            free, oracle = (compare(replicates, label[k], label["pipeline"], (metric,))[metric]
                            for k in (LABEL_FREE, ORACLE))
            shown = oracle["lo"] > 0 if better > 0 else oracle["hi"] < 0
            rows.append({"strategy": series, "metric": "EO" if metric == "EO_paper" else metric,
                         "pipeline": round(value["pipeline"], 2), "label-free": round(value[LABEL_FREE], 2),
                         "oracle": round(value[ORACLE], 2), "label-free − pipeline": difference_cell(free),
                         "oracle − pipeline": difference_cell(oracle),
                         "share kept": f"{free['difference'] / oracle['difference']:.2f}" if shown
                         else "– (no gain shown)"})
    return pd.DataFrame(rows).set_index(["strategy", "metric"]) if rows else pd.DataFrame()


def plot_tracking(points: pd.DataFrame) -> plt.Figure:
    """Synthetic against real validation WST and EO, one point per epoch of each run, a colour per strategy."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    colours = plt.get_cmap("tab10")
    for ax, metric in zip(axes, ("WST", "EO")):
        for i, (name, group) in enumerate(points.groupby("strategy", sort=False)):
            ax.scatter(group[f"real_val_{metric}"], group[f"synthetic_val_{metric}"], s=14, alpha=0.7,
                       color=colours(i), label=name)
        low = min(points[f"real_val_{metric}"].min(), points[f"synthetic_val_{metric}"].min())
        high = max(points[f"real_val_{metric}"].max(), points[f"synthetic_val_{metric}"].max())
        ax.plot([low, high], [low, high], color="grey", lw=0.8, ls="--")
        ax.set(xlabel=f"{metric} on real validation images", ylabel=f"{metric} on the synthetic validation set")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Does the synthetic validation set track the real one? (one point per epoch of each run)", fontsize=9)
    fig.tight_layout()
    return fig


def write_tracking(arms: list[Arm], evaluation: Evaluation, params: Params, root: Path) -> dict[str, Path]:
    """reports/ablations/model_selection/tracking.csv (every epoch's validation WST and EO), tracking.md (the
    correlations and how far the label-free rule gets towards the oracle) and the tracking figure."""
    folder = root / paths.ABLATION_REPORTS / ModelSelection.name
    points = tracking(arms, params.ablations.seeds or params.seeds, root)
    files = {"tracking_csv": folder / "tracking.csv", "tracking_md": folder / "tracking.md"}
    io.write_csv(files["tracking_csv"], points.round(4))
    oracle = toward_oracle(evaluation, arms, params)
    io.write_text(files["tracking_md"], "\n".join([
        "## Does the synthetic validation set track the real one?", "",
        "WST and EO (the paper's definition) of every epoch of every run, on the synthetic validation set and on "
        "the real validation images: Pearson's r over all epochs, and Spearman's rank correlation within each "
        "run over its epochs, averaged over runs.", "",
        tracking_summary(points).to_markdown(), "",
        "## How far the label-free rule gets towards the oracle", "",
        "The test split, aggregated as the table above, with the paired differences of the table. *share kept*: "
        "(label-free - pipeline) / (oracle - pipeline), given only when the oracle's gain over the pipeline's rule "
        "is shown (higher WST, lower EO, with an interval that excludes zero).", "",
        oracle.reset_index().to_markdown(index=False) if len(oracle) else "(the rules synthetic_val_worst and real_val_worst are not both run)",
        ""]))
    figure = plot_tracking(points)
    files["tracking_figure"] = save_figure(figure, root / paths.FIGURES / "ablations" / "model_selection_tracking.png")
    plt.close(figure)
    return files


def run_model_selection(params: Params, root: Path, progress: bool = True) -> AblationResult:
    """The ablation (trains what is missing, evaluates every rule) and its tracking report, into
    reports/ablations/model_selection/."""
    result = run_ablation(ModelSelection.name, params, root, progress)
    result.files.update(write_tracking(result.arms, result.evaluation, params, root))
    return result

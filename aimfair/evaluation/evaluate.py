"""Every strategy's fairness metrics per seed, aggregated over seeds, and the files that report them: tables,
metrics JSON and predictions (stage evaluate's, and the same for Table 4 and each ablation)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from aimfair.classifier.models import build_classifier, load_checkpoint, read_sidecar
from aimfair.classifier.train import predict_proba
from aimfair.config import Params
from aimfair.core import io, paths
from aimfair.core.device import setup_torch
from aimfair.core.errors import AimfairError, notice
from aimfair.csdg.fidelity import THRESHOLD, fidelity_warning, read_fidelity_report
from aimfair.data.images import load_images
from aimfair.data.loading import ImageSet
from aimfair.evaluation.metrics import aggregate_seeds, fairness_metrics
from aimfair.evaluation.report import (
    difference_cell,
    markdown_table,
    mean_std_table,
    paper_table,
    with_interval_columns,
    with_intervals,
)
from aimfair.evaluation.uncertainty import Replicates, aggregate_intervals, bootstrap, compare, per_run_intervals
from aimfair.strategies.registry import FAMILIES, STRATEGIES, checkpoint_path, chosen_variant, expand

ACC_TOLERANCE = 2.0  # points of ACC a fairer model may lose against the baseline and still count as a win
REFERENCES = ("baseline", "full_ft")  # every strategy is compared with each of these that was evaluated
COMPARED = {"ACC": "ΔACC", "WST": "ΔWST", "EO_paper": "ΔEO"}  # metric -> its column in the comparison table


CHOSEN_BY = {"val_acc": "overall accuracy", "real_val_wst": "worst-group accuracy"}  # Family.chosen_by, in words


def interval_kind(n_seeds: int) -> str:
    """What the brackets of a table hold, in words (aimfair.evaluation.uncertainty; docs/statistics.md)."""
    if n_seeds < 2:
        return ("95 % percentile intervals over test images resampled within each (y, s) group (one seed: "
                "training noise is not measured)")
    return ("95 % t intervals over the seeds whose variance adds the spread between seeds and the test-image "
            "noise they share (a bootstrap within each (y, s) group; docs/statistics.md)")


@dataclass
class Evaluation:
    """Per-seed metrics and predictions of every strategy, and their aggregation over seeds."""

    per_seed: pd.DataFrame  # one row per (strategy, seed): strategy, seed + every fairness_metrics() key
    predictions: pd.DataFrame  # strategy, seed, image_id, y, s, prob, pred
    aggregate: dict[str, dict]  # strategy -> aimfair.evaluation.metrics.aggregate_seeds output
    # strategy -> metric -> value, lo, hi (uncertainty.aggregate_intervals); filled by write_evaluation
    intervals: dict[str, dict] = field(default_factory=dict)


def predict_checkpoint(params: Params, checkpoint: Path, images: ImageSet) -> pd.DataFrame:
    """Predictions of one checkpoint on `images`: image_id, y, s, prob, pred (threshold 0.5)."""
    device = setup_torch(params.pretrain.threads, params.pretrain.device)
    model = build_classifier(read_sidecar(checkpoint).get("arch", "resnet18"), "none")  # weights come next
    load_checkpoint(model, checkpoint)
    prob = predict_proba(model, images, device, params.evaluate.batch_size)
    return pd.DataFrame(dict(image_id=images.image_ids, y=images.y, s=images.s, prob=prob,
                             pred=(prob >= 0.5).astype(int)))


def evaluate_strategies(params: Params, root: Path, names: list[str], progress: bool = True) -> Evaluation:
    """Evaluate the strategies `names` for every seed on evaluate.split.

    A family is evaluated as all its variants, then gets rows of its own: per seed, its chosen variant's
    (best validation accuracy), and with report_mean, `<family>_mean`, the variants' metrics averaged.
    """
    checkpoints = {}
    for name in expand(names):
        for seed in params.seeds:
            checkpoints[name, seed] = checkpoint = checkpoint_path(root, name, seed)
            if not checkpoint.exists():
                stage = "pretrain" if not STRATEGIES[name].trains else "finetune"
                raise AimfairError(f"no model of strategy {name} for seed {seed} at {checkpoint}: run the {stage} "
                                   "stage (dvc repro) or remove the seed or strategy from params.yaml")
    result = evaluate_checkpoints(params, root, checkpoints, progress)
    metric_columns = [c for c in result.per_seed.columns if c not in ("strategy", "seed")]
    per_seed = pd.concat([result.per_seed] + [_family_rows(result.per_seed, FAMILIES[n], root, metric_columns)
                                              for n in names if n in FAMILIES], ignore_index=True)
    return Evaluation(per_seed=per_seed, predictions=_with_family_predictions(result.predictions, per_seed),
                      aggregate=_aggregate(per_seed))


def evaluate_checkpoints(params: Params, root: Path, checkpoints: dict[tuple[str, int], Path],
                         progress: bool = True) -> Evaluation:
    """Metrics of each checkpoint ({(row name, seed): file}) on evaluate.split, and their aggregation over seeds
    per row name."""
    split = params.evaluate.split
    by_size: dict[int, ImageSet] = {}  # each checkpoint is evaluated at the input size it was trained at
    rows, preds = [], []
    for (name, seed), checkpoint in checkpoints.items():
        size = int(read_sidecar(checkpoint)["input_size"])
        if size not in by_size:
            by_size[size] = load_images(params, root, split, size, progress)
        pred = predict_checkpoint(params, checkpoint, by_size[size])
        rows.append(dict(strategy=name, seed=seed, **fairness_metrics(pred["y"], pred["s"], pred["pred"])))
        preds.append(pred.assign(strategy=name, seed=seed))
    per_seed = pd.DataFrame(rows)
    return Evaluation(per_seed=per_seed, predictions=pd.concat(preds, ignore_index=True),
                      aggregate=_aggregate(per_seed))


def _aggregate(per_seed: pd.DataFrame) -> dict[str, dict]:
    metric_columns = [c for c in per_seed.columns if c not in ("strategy", "seed", "variant")]
    return {name: aggregate_seeds(group[metric_columns].to_dict("records"))
            for name, group in per_seed.groupby("strategy", sort=False)}


def _family_rows(per_seed: pd.DataFrame, family, root: Path, metric_columns: list[str]) -> pd.DataFrame:
    """A family's rows per seed: its chosen variant's metrics, and the mean over its variants."""
    rows = []
    for seed, group in per_seed[per_seed["strategy"].isin(family.variants)].groupby("seed", sort=False):
        chosen = group[group["strategy"] == chosen_variant(root, family.name, int(seed))].iloc[0]
        rows.append(dict(chosen[metric_columns], strategy=family.name, seed=seed, variant=chosen["strategy"]))
        if family.report_mean:
            rows.append(dict(group[metric_columns].mean(), strategy=family.mean_name, seed=seed))
    return pd.DataFrame(rows)


def _with_family_predictions(predictions: pd.DataFrame, per_seed: pd.DataFrame) -> pd.DataFrame:
    """A family's predictions are, per seed, those of its chosen variant (a family mean has none)."""
    if "variant" not in per_seed:
        return predictions
    chosen = per_seed.dropna(subset=["variant"])
    copies = [predictions[(predictions["strategy"] == row.variant) & (predictions["seed"] == row.seed)]
              .assign(strategy=row.strategy) for row in chosen.itertuples()]
    return pd.concat([predictions, *copies], ignore_index=True)


def seeds_improved(per_seed: pd.DataFrame, reference: str = "baseline") -> dict[str, str]:
    """Per strategy, on how many seeds it improved both WST and EO against `reference` while keeping ACC
    within ACC_TOLERANCE points, as "2/3"."""
    base = per_seed[per_seed["strategy"] == reference].set_index("seed")
    out = {}
    for name, group in per_seed.groupby("strategy", sort=False):
        g = group.set_index("seed")
        wins = ((g["WST"] > base["WST"]) & (g["EO_paper"] < base["EO_paper"])
                & (g["ACC"] - base["ACC"] >= -ACC_TOLERANCE))
        out[name] = f"{int(wins.sum())}/{len(g)}"
    return out


def shown_names(names: list[str]) -> list[str]:
    """The rows of a table for the strategies `names`: a family's mean row comes right after it."""
    out = []
    for name in names:
        out.append(name)
        if name in FAMILIES and FAMILIES[name].report_mean:
            out.append(FAMILIES[name].mean_name)
    return out


def add_intervals(result: Evaluation, params: Params) -> Replicates:
    """Bootstrap the predictions (evaluate.bootstrap replicates) and fill result.intervals for every strategy
    that has predictions; returns the replicates for paired comparisons."""
    e = params.evaluate
    rep = bootstrap(result.predictions, e.bootstrap, e.bootstrap_seed)
    named = [name for name in result.aggregate if name in set(result.predictions["strategy"])]
    result.intervals = aggregate_intervals(rep, named)
    return rep


def reference_pairs(names: list[str], references: tuple[str, ...] = REFERENCES) -> list[tuple[str, str]]:
    """(strategy, reference) for every strategy of `names` against each reference among them, once per pair."""
    present = [r for r in references if r in names]
    return [(name, reference) for k, reference in enumerate(present) for name in names
            if name not in present[:k + 1]]


def comparisons(rep: Replicates, pairs: list[tuple[str, str]], per_seed: pd.DataFrame) -> list[dict]:
    """Per (strategy, reference): the ACC, WST and EO differences aggregated over seeds, each with interval
    and p-value (uncertainty.compare), and against the baseline the seeds it improved."""
    wins = seeds_improved(per_seed) if any(reference == "baseline" for _, reference in pairs) else {}
    return [dict(strategy=name, reference=reference, differences=compare(rep, name, reference, tuple(COMPARED)),
                 seeds_improved=wins.get(name, "") if reference == "baseline" else "")
            for name, reference in pairs]


def comparison_table(compared: list[dict]) -> pd.DataFrame:
    """The comparisons as the report prints them: "1.78 [0.9, 2.7] p=0.004" per metric."""
    rows = [{"comparison": f"{c['strategy']} − {c['reference']}",
             **{column: difference_cell(c["differences"][key]) for key, column in COMPARED.items()},
             "seeds improved": c["seeds_improved"]} for c in compared]
    table = pd.DataFrame(rows).set_index("comparison")
    return table if (table["seeds improved"] != "").any() else table.drop(columns=["seeds improved"])


def write_evaluation(result: Evaluation, params: Params, root: Path, folder: Path = paths.REPORTS,
                     shown: list[str] | None = None, pairs: list[tuple[str, str]] | None = None,
                     references: tuple[str, ...] = REFERENCES) -> dict[str, Path]:
    """metrics.json (DVC metrics), per_seed.csv (DVC plots) and the paper's table layout (markdown + CSV) in
    `folder`, with 95 % intervals and paired comparisons: `pairs` of (strategy, reference), by default every
    shown strategy against each of `references`. The table shows `shown` (default: every evaluated
    strategy); the others, the variants of families, follow in a table of their own."""
    reports = root / folder
    shown = shown or list(result.aggregate)
    rest = [name for name in result.aggregate if name not in shown]
    rep = add_intervals(result, params)
    if pairs is None:
        pairs = reference_pairs([name for name in shown if name in result.intervals], references)
    compared = comparisons(rep, pairs, result.per_seed)
    d = params.data
    setting = f"{d.dataset} {d.target}/{d.sensitive} bias {d.bias_degree}"
    metrics = {name: dict(setting=setting, split=params.evaluate.split, n_seeds=agg["n_seeds"], paper=agg["paper"],
                          mean=agg["mean"], std=agg["std"]) for name, agg in result.aggregate.items()}
    for name, intervals in result.intervals.items():
        metrics[name]["interval"] = {k: [round(v["lo"], 4), round(v["hi"], 4)] for k, v in intervals.items()}
    for c in compared:
        metrics[c["strategy"]].setdefault("against", {})[c["reference"]] = {
            key: {field: round(v, 4) for field, v in diff.items()} for key, diff in c["differences"].items()}
    fidelity = read_fidelity_report(root)
    warning = fidelity_warning(fidelity) if fidelity else None
    if fidelity:  # beside the strategies, so that `dvc metrics show` shows it too
        metrics["prompt_fidelity"] = dict(lowest_both=fidelity["lowest_both"],
                                          threshold=fidelity.get("threshold", THRESHOLD),
                                          below_threshold=[g for g, r in fidelity["per_group"].items()
                                                           if r["both"] < fidelity.get("threshold", THRESHOLD)],
                                          warning=warning)
    out = dict(metrics=reports / "metrics.json", per_seed=reports / "per_seed.csv",
               table_csv=reports / "table.csv", table_md=reports / "table.md")
    io.write_json(out["metrics"], metrics)
    per_seed = result.per_seed.merge(per_run_intervals(rep), on=["strategy", "seed"], how="left")
    io.write_csv(out["per_seed"], per_seed.round(4))
    paper = paper_table({name: result.aggregate[name]["paper"] for name in shown}, d.target, d.sensitive)
    spread = mean_std_table({name: result.aggregate[name] for name in shown}, d.target, d.sensitive)
    io.write_csv(out["table_csv"], with_interval_columns(paper, result.intervals).reset_index())
    banner = f"> **WARNING: {warning}.**\n\n" if warning else ""
    text = banner + (f"# {d.dataset}: target {d.target}, protected {d.sensitive}, bias degree {d.bias_degree}, "
            f"{params.evaluate.split} split, {len(params.seeds)} seed(s)\n\n"
            "Aggregated as in the paper: group accuracies averaged over seeds, WST and STD of those averages, "
            "ACC and EO averaged over seeds. EO is the paper's printed definition (max of the TPR and FPR gaps); "
            "EO (code) is the authors' code (their mean). In brackets: " + interval_kind(len(params.seeds)) +
            f"; {params.evaluate.bootstrap} bootstrap replicates.\n\n" +
            markdown_table(with_intervals(paper, result.intervals)) +
            "\nMean ± std over seeds:\n\n" + markdown_table(spread))
    if compared:
        text += ("\nDifferences, strategy minus reference, aggregated over seeds as above, with their 95 % interval "
                 "and p-value (not corrected for the number of comparisons; EO as printed: below zero is fairer). "
                 f"A seed counts as improved when WST rises, EO falls and ACC drops by at most {ACC_TOLERANCE:g} "
                 "points against the baseline.\n\n" + markdown_table(comparison_table(compared)))
    if rest:
        variants = paper_table({name: result.aggregate[name]["paper"] for name in rest}, d.target, d.sensitive)
        chosen_by = "; ".join(f"{name}: {CHOSEN_BY[FAMILIES[name].chosen_by]}" for name in shown if name in FAMILIES)
        text += ("\nEvery variant of the families (a family's row above is, per seed, its variant with the best "
                 f"score on the real validation images, {chosen_by}):\n\n" +
                 markdown_table(with_intervals(variants, result.intervals)))
    io.write_text(out["table_md"], text)
    if warning:
        notice(warning)
    return out

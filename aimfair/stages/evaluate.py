"""Stage 07_evaluate: the paper's fairness metrics per seed, aggregated over seeds, tables and metrics JSON."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from aimfair import io, paths
from aimfair.config import Params
from aimfair.data.loading import ImageSet
from aimfair.errors import AimfairError
from aimfair.metrics import aggregate_seeds, fairness_metrics
from aimfair.models import build_classifier, load_checkpoint, read_sidecar
from aimfair.report import formatted, markdown_table, mean_std_table, paper_table
from aimfair.stages.common import load_images, setup_torch
from aimfair.train import predict_proba


@dataclass
class Evaluation:
    """Per-seed metrics and predictions, and their aggregation over seeds."""

    per_seed: pd.DataFrame  # one row per seed: seed + every fairness_metrics() key
    predictions: pd.DataFrame  # seed, image_id, y, s, prob, pred
    aggregate: dict  # aimfair.metrics.aggregate_seeds output


def predict_checkpoint(params: Params, checkpoint: Path, images: ImageSet) -> pd.DataFrame:
    """Predictions of one checkpoint on `images`: image_id, y, s, prob, pred (threshold 0.5)."""
    device = setup_torch(params.pretrain.threads, params.pretrain.device)
    model = build_classifier(read_sidecar(checkpoint).get("arch", "resnet18"), "none")  # weights come next
    load_checkpoint(model, checkpoint)
    prob = predict_proba(model, images, device, params.evaluate.batch_size)
    return pd.DataFrame(dict(image_id=images.image_ids, y=images.y, s=images.s, prob=prob,
                             pred=(prob >= 0.5).astype(int)))


def run_evaluate(params: Params, root: Path, progress: bool = True) -> Evaluation:
    """Evaluate the biased model of every seed on the split in params.evaluate."""
    split = params.evaluate.split
    by_size: dict[int, ImageSet] = {}  # each checkpoint is evaluated at the input size it was trained at
    rows, preds = [], []
    for seed in params.seeds:
        checkpoint = root / paths.pretrain_dir(seed) / "best.safetensors"
        if not checkpoint.exists():
            raise AimfairError(f"no biased model for seed {seed} at {checkpoint}: run the pretrain stage "
                               "(dvc repro) or remove the seed from params.yaml")
        size = int(read_sidecar(checkpoint)["input_size"])
        if size not in by_size:
            by_size[size] = load_images(params, root, split, size, progress)
        pred = predict_checkpoint(params, checkpoint, by_size[size])
        rows.append(dict(seed=seed, **fairness_metrics(pred["y"], pred["s"], pred["pred"])))
        preds.append(pred.assign(seed=seed))
    aggregate = aggregate_seeds([{k: v for k, v in r.items() if k != "seed"} for r in rows])
    return Evaluation(per_seed=pd.DataFrame(rows), predictions=pd.concat(preds, ignore_index=True),
                      aggregate=aggregate)


def write_evaluation(result: Evaluation, params: Params, root: Path, method: str = "baseline") -> dict[str, Path]:
    """reports/metrics.json (DVC metrics), the per-seed CSV and the paper-layout tables (markdown + CSV)."""
    reports = root / paths.REPORTS
    d = params.data
    metrics = {method: dict(setting=f"{d.dataset} {d.target}/{d.sensitive} bias {d.bias_degree}",
                            split=params.evaluate.split, n_seeds=result.aggregate["n_seeds"],
                            paper=result.aggregate["paper"], mean=result.aggregate["mean"],
                            std=result.aggregate["std"])}
    out = dict(metrics=reports / "metrics.json", per_seed=reports / f"{method}_per_seed.csv",
               table_csv=reports / "table.csv", table_md=reports / "table.md")
    io.write_json(out["metrics"], metrics)
    io.write_csv(out["per_seed"], result.per_seed.round(4))
    paper = paper_table({method: result.aggregate["paper"]}, d.target, d.sensitive)
    spread = mean_std_table({method: result.aggregate}, d.target, d.sensitive)
    io.write_csv(out["table_csv"], paper.reset_index())
    io.write_text(out["table_md"], (
        f"# {d.dataset}: target {d.target}, protected {d.sensitive}, bias degree {d.bias_degree}, "
        f"{params.evaluate.split} split, {len(params.seeds)} seed(s)\n\n"
        "Aggregated as in the paper: group accuracies averaged over seeds, WST and STD of those averages, "
        "ACC and EO averaged over seeds. EO is the paper's printed definition (max of the TPR and FPR gaps); "
        "EO (code) is the authors' code (their mean).\n\n" + markdown_table(formatted(paper)) +
        "\nMean ± std over seeds:\n\n" + markdown_table(spread)))
    return out

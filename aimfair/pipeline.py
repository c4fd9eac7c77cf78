"""One function per pipeline stage. Notebooks and the CLI call these; stages pass files, never memory.

  run_data(params, root)            00_data: render tinyfaces (if chosen), build the biased split
  run_pretrain(params, root, seed)  04_pretrain: ERM of the biased ResNet-18 for one seed
  run_evaluate(params, root)        07_evaluate: test metrics per seed, aggregated the paper's way
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from aimfair import io, paths
from aimfair.config import Params, to_dict
from aimfair.data.celeba import celeba_image_dir
from aimfair.data.loading import ImageSet, load_split, resolve_device
from aimfair.data.splits import group_counts, make_split, write_split
from aimfair.data.tinyfaces import write_world
from aimfair.data.utkface import utkface_image_dir
from aimfair.errors import AimfairError
from aimfair.metrics import aggregate_seeds, fairness_metrics
from aimfair.models import build_classifier, load_checkpoint
from aimfair.report import formatted, markdown_table, mean_std_table, paper_table
from aimfair.train import fit, predict_proba, seed_everything


def image_dir(params: Params, root: Path) -> Path:
    """The folder holding the dataset's image files."""
    data_root = root / params.data.root
    if params.data.dataset == "utkface":
        return utkface_image_dir(data_root)
    return celeba_image_dir(data_root)


def run_data(params: Params, root: Path, progress: bool = True) -> dict[str, pd.DataFrame]:
    """Render the built-in world when it is the dataset, then write the train/val/test manifests."""
    d = params.data
    if d.dataset == "tinyfaces":
        write_world(root / d.root, d.tinyfaces, progress=progress)
    splits = make_split(d.dataset, root / d.root, d.target, d.sensitive, d.bias_degree, d.n_train, seed=d.split_seed,
                        utkface_test_per_group=d.utkface_test_per_group or None,
                        utkface_val_fraction=d.utkface_val_fraction)
    write_split(splits, root / paths.SPLITS, {k: v for k, v in to_dict(d).items() if k != "tinyfaces"})
    return splits


def load_images(params: Params, root: Path, split: str, size: int, progress: bool = True) -> ImageSet:
    """One split's images at `size` px from the decode-once cache."""
    return load_split(root / paths.SPLITS / f"{split}.csv", image_dir(params, root), size, root / paths.CACHE,
                      params.data.bad_images, progress=progress)


def _setup_torch(threads: int, device: str) -> torch.device:
    if threads > 0:
        torch.set_num_threads(threads)
    return resolve_device(device)


def run_pretrain(params: Params, root: Path, seed: int, progress: bool = True) -> pd.DataFrame:
    """Train the biased classifier for one seed; writes work/pretrain/seed_<seed>/."""
    p = params.pretrain
    device = _setup_torch(p.threads, p.device)
    train = load_images(params, root, "train", p.input_size, progress)
    val = load_images(params, root, "val", p.input_size, progress)
    seed_everything(seed)  # the initial weights depend on the seed
    model = build_classifier(p.arch, p.pretrained)
    meta = dict(stage="pretrain", arch=p.arch, pretrained=p.pretrained, input_size=p.input_size, seed=seed,
                target=params.data.target, sensitive=params.data.sensitive, dataset=params.data.dataset)
    return fit(model, train, val, p.train_config(seed), root / paths.pretrain_dir(seed), device, meta,
               progress=progress)


@dataclass
class Evaluation:
    """Per-seed metrics and predictions, and their aggregation over seeds."""

    per_seed: pd.DataFrame  # one row per seed: seed + every fairness_metrics() key
    predictions: pd.DataFrame  # seed, image_id, y, s, prob, pred
    aggregate: dict  # aimfair.metrics.aggregate_seeds output


def evaluate_checkpoint(params: Params, root: Path, checkpoint: Path, images: ImageSet) -> pd.DataFrame:
    """Predictions of one checkpoint on `images`: image_id, y, s, prob, pred."""
    p = params.pretrain
    device = _setup_torch(p.threads, p.device)
    model = build_classifier(p.arch, "none")  # the checkpoint holds every weight
    load_checkpoint(model, checkpoint)
    prob = predict_proba(model, images, device, params.evaluate.batch_size)
    return pd.DataFrame(dict(image_id=images.image_ids, y=images.y, s=images.s, prob=prob,
                             pred=(prob >= 0.5).astype(int)))


def run_evaluate(params: Params, root: Path, progress: bool = True) -> Evaluation:
    """Evaluate the biased model of every seed; write reports/metrics.json and the tables."""
    split = params.evaluate.split
    if split not in ("val", "test"):
        raise AimfairError(f"evaluate.split must be 'val' or 'test', got {split!r}")
    images = load_images(params, root, split, params.pretrain.input_size, progress)
    rows, preds = [], []
    for seed in params.seeds:
        pred = evaluate_checkpoint(params, root, root / paths.pretrain_dir(seed) / "best.safetensors", images)
        rows.append(dict(seed=seed, **fairness_metrics(pred["y"], pred["s"], pred["pred"])))
        preds.append(pred.assign(seed=seed))
    per_seed = pd.DataFrame(rows)
    aggregate = aggregate_seeds([{k: v for k, v in r.items() if k != "seed"} for r in rows])
    return Evaluation(per_seed=per_seed, predictions=pd.concat(preds, ignore_index=True), aggregate=aggregate)


def write_evaluation(result: Evaluation, params: Params, root: Path, method: str = "baseline") -> dict[str, Path]:
    """metrics.json (DVC metrics), per-seed CSV, and the paper-layout tables (markdown + CSV)."""
    reports = root / paths.REPORTS
    d = params.data
    metrics = {method: dict(setting=f"{d.dataset} {d.target}/{d.sensitive} bias {d.bias_degree}",
                            n_seeds=result.aggregate["n_seeds"], paper=result.aggregate["paper"],
                            mean=result.aggregate["mean"], std=result.aggregate["std"])}
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


def read_history(root: Path, seed: int) -> pd.DataFrame:
    """The training curve of one seed's biased model."""
    path = root / paths.pretrain_dir(seed) / "history.csv"
    if not path.exists():
        raise AimfairError(f"{path} does not exist: run the pretrain stage for seed {seed} (dvc repro)")
    return pd.read_csv(path)


def split_counts(root: Path) -> dict[str, dict[str, int]]:
    """Images per group in each split, as written by the data stage."""
    info = json.loads((root / paths.SPLITS / "split.json").read_text())
    return info["group_counts"]


__all__ = ["run_data", "run_pretrain", "run_evaluate", "write_evaluation", "evaluate_checkpoint", "image_dir",
           "load_images", "read_history", "split_counts", "group_counts", "Evaluation"]

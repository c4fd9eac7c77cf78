"""Prompt fidelity: how often a generated image shows its group's target and protected values.

An attribute "oracle" (ResNet-18 with two logits: one reads the target attribute, one the protected
attribute) is trained on real images, group-balanced so that neither reading leans on the other attribute,
drawn from the training partition only (never validation or test images). It then reads every pool image;
an image is faithful when both readings agree with its group. The score per group says whether the text-to-image model
can be trusted for that group; optionally, unfaithful images are left out of the synthetic sets.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from aimfair.classifier.models import build_classifier, load_checkpoint
from aimfair.classifier.train import fit, predict_proba
from aimfair.config import Params
from aimfair.core import io, paths
from aimfair.core.device import setup_torch
from aimfair.core.errors import AimfairError, notice
from aimfair.core.groups import GROUPS, group_key
from aimfair.data.images import image_dir, load_images
from aimfair.data.loading import ImageSet, load_split, resize_uint8
from aimfair.data.splits import labelled_frame

FIDELITY = paths.WORK / "fidelity"  # the oracle's checkpoint, its training list, per-image scores
REPORT = paths.REPORTS / "fidelity.json"  # per-group fidelity: a DVC metric
THRESHOLD = 80.0  # below this share of faithful images in any group, the generator needs work
ROLES = ("target", "sensitive")


def oracle_training_frame(params: Params, root: Path, per_group: int) -> pd.DataFrame:
    """Real training images balanced over the four groups: `per_group` each, drawn in a seeded shuffled order
    (fidelity.seed), then listed in id order. A group with fewer images comes round again (its images repeat),
    so the large groups still give the oracle all their variety.

    Not the first ones in file order: UTKFace's names start with the age, so those would all be children.
    Any image in the validation or test split is excluded, so the oracle never sees evaluation data.
    """
    d = params.data
    frame = labelled_frame(d.dataset, root / d.root, d.target, d.sensitive,
                           official=d.partition == "official").drop(columns="partition", errors="ignore")
    held_out = set()
    for split in ("val", "test"):
        path = root / paths.SPLITS / f"{split}.csv"
        if not path.exists():
            raise AimfairError(f"{path} does not exist: run the data stage first (dvc repro data)")
        held_out |= set(pd.read_csv(path)["image_id"])
    frame = frame[~frame["image_id"].isin(held_out)].sort_values("image_id", kind="stable")
    frame = frame.iloc[np.random.default_rng(params.fidelity.seed).permutation(len(frame))]
    keys = np.array([group_key(y, s) for y, s in zip(frame["y"], frame["s"])])
    smallest = int(min((keys == g).sum() for g in GROUPS))
    if smallest < 20:
        raise AimfairError(f"only {smallest} real training images in the smallest group: too few to train "
                           "the fidelity oracle; choose other attributes, or a dataset with more images per group")
    parts = [frame[keys == group] for group in GROUPS]
    parts = [images.iloc[np.resize(np.arange(len(images)), per_group)] for images in parts]  # cycles small groups
    return pd.concat(parts).sort_values("image_id", kind="stable").reset_index(drop=True)


def _both_labels(images: ImageSet) -> ImageSet:
    """The same images labelled (target, protected) per image: the oracle learns both at once."""
    return ImageSet(pixels=images.pixels, y=np.stack([images.y, images.s], axis=1), s=images.s,
                    image_ids=images.image_ids)


def train_oracle(params: Params, root: Path, progress: bool = True) -> Path:
    """Train (or resume, or reuse) the oracle; returns its checkpoint path."""
    f, p = params.fidelity, params.pretrain
    device = setup_torch(p.threads, p.device)
    out = root / FIDELITY
    io.write_csv(out / "oracle_train.csv", oracle_training_frame(params, root, f.per_group))
    train = load_split(out / "oracle_train.csv", image_dir(params, root), p.input_size, root / paths.CACHE,
                       params.data.bad_images, progress=progress)
    val = load_images(params, root, "val", p.input_size, progress)
    # the classifier settings of section pretrain, with the oracle's own length and learning-rate step
    cfg = dataclasses.replace(p.train_config(f.seed), epochs=f.epochs, milestones=[max(1, f.epochs * 2 // 3)])
    torch.manual_seed(f.seed)
    model = build_classifier(p.arch, p.pretrained, outputs=2)
    meta = dict(stage="fidelity oracle", arch=p.arch, input_size=p.input_size, outputs=2,
                attributes=[params.data.target, params.data.sensitive])
    fit(model, _both_labels(train), _both_labels(val), cfg, out / "oracle", device, meta, progress=progress)
    return out / "oracle" / "best.safetensors"


def _oracle_readings(params: Params, checkpoint: Path, images: ImageSet) -> np.ndarray:
    """P(target = 1) and P(protected = 1) for every image, shape (N, 2)."""
    p = params.pretrain
    model = build_classifier(p.arch, "none", outputs=2)
    load_checkpoint(model, checkpoint)
    return predict_proba(model, images, setup_torch(p.threads, p.device), params.evaluate.batch_size)


@dataclass
class FidelityResult:
    scores: pd.DataFrame  # one row per pool image: path, group, p_target, p_sensitive, target_ok, ...
    per_group: pd.DataFrame  # group, images, target %, sensitive %, both %
    oracle_val: pd.DataFrame  # role, attribute, the oracle's val accuracy per group (its reliability)


def score_images(params: Params, checkpoint: Path, manifest: pd.DataFrame, pixels: np.ndarray) -> pd.DataFrame:
    """The oracle's probabilities and verdicts for every image (uint8 (N, H, W, 3), manifest order)."""
    images = ImageSet(pixels=resize_uint8(pixels, params.pretrain.input_size), y=manifest["y"].to_numpy(),
                      s=manifest["s"].to_numpy(), image_ids=list(manifest["path"]))
    prob = _oracle_readings(params, checkpoint, images)
    scores = manifest[["path", "group", "y", "s"]].copy()
    for column, role in enumerate(ROLES):
        expected = scores["y"] if role == "target" else scores["s"]
        scores[f"p_{role}"] = prob[:, column].round(4)
        scores[f"{role}_ok"] = (prob[:, column] >= 0.5).astype(int) == expected
    scores["ok"] = scores["target_ok"] & scores["sensitive_ok"]
    return scores


def summarise(scores: pd.DataFrame) -> pd.DataFrame:
    """Per group: number of images and the % whose target, protected value and both match the group."""
    rows = []
    for group in GROUPS:
        g = scores[scores["group"] == group]
        rows.append(dict(group=group, images=len(g), target=100 * g["target_ok"].mean(),
                         sensitive=100 * g["sensitive_ok"].mean(), both=100 * g["ok"].mean()))
    return pd.DataFrame(rows).round(2)


def oracle_reliability(params: Params, root: Path, checkpoint: Path) -> pd.DataFrame:
    """The oracle's accuracy per group on the real validation split: how far its verdicts can be trusted.

    Rows: the target reading, the protected reading, and both right at once, which is what the pool's
    fidelity counts: a pool read right as often as real photos are is as faithful as this oracle can tell.
    """
    val = load_images(params, root, "val", params.pretrain.input_size, progress=False)
    pred = _oracle_readings(params, checkpoint, val) >= 0.5
    groups = np.array([group_key(y, s) for y, s in zip(val.y, val.s)])
    right = {"target": pred[:, 0] == val.y, "sensitive": pred[:, 1] == val.s}
    right["both"] = right["target"] & right["sensitive"]
    attributes = {"target": params.data.target, "sensitive": params.data.sensitive,
                  "both": f"{params.data.target} and {params.data.sensitive}"}
    rows = []
    for role, ok in right.items():
        row = dict(role=role, attribute=attributes[role])
        for group in GROUPS:
            row[group] = round(100 * float(ok[groups == group].mean()), 2)
        rows.append(row)
    return pd.DataFrame(rows)


def run_fidelity(params: Params, root: Path, manifest: pd.DataFrame, pixels: np.ndarray,
                 progress: bool = True) -> FidelityResult:
    """Train the oracle, score the pool, write work/fidelity/scores.csv and reports/fidelity.json."""
    checkpoint = train_oracle(params, root, progress)
    scores = score_images(params, checkpoint, manifest, pixels)
    io.write_csv(root / FIDELITY / "scores.csv", scores)
    result = FidelityResult(scores, summarise(scores), oracle_reliability(params, root, checkpoint))
    below = [r["group"] for r in result.per_group.to_dict("records") if r["both"] < THRESHOLD]
    report = dict(
        per_group={r["group"]: {k: r[k] for k in ("target", "sensitive", "both")}
                   for r in result.per_group.to_dict("records")},
        lowest_both=float(result.per_group["both"].min()),
        threshold=THRESHOLD,
        below_threshold=below,
        oracle_val_accuracy={r["role"]: {g: r[g] for g in GROUPS} for r in result.oracle_val.to_dict("records")},
    )
    io.write_json(root / REPORT, report)
    warning = fidelity_warning(report)
    if warning:
        notice(warning)
    return result


def fidelity_warning(report: dict) -> str | None:
    """The warning a report of reports/fidelity.json calls for, or None when every group passes."""
    below = [g for g, r in report["per_group"].items() if r["both"] < report.get("threshold", THRESHOLD)]
    if not below:
        return None
    groups = ", ".join(f"{g} {report['per_group'][g]['both']:.1f} %" for g in below)
    real = report.get("oracle_val_accuracy", {}).get("both")
    reference = (" (real validation photos of the same group(s) read right: "
                 + ", ".join(f"{real[g]:.1f} %" for g in below) + ")") if real else ""
    return (f"PROMPT FIDELITY BELOW {report.get('threshold', THRESHOLD):.0f} % in group(s) {groups}{reference}: the "
            "oracle reads the other synthetic images of these groups as another group, so a result fine-tuned on "
            "them rests partly on wrong images. Improve the generator (docs/generation.md) before trusting Table 3")


def read_fidelity_report(root: Path) -> dict | None:
    """reports/fidelity.json as written by the generate stage, or None when there is none."""
    path = root / REPORT
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        raise AimfairError(f"{path} is damaged: rerun the generate stage (dvc repro -f generate)") from None

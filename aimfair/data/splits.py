"""Train/val/test manifests for one setting (dataset, target y, protected attribute s, bias degree).

Bias degree b. The four groups (y, s) = (0,0), (0,1), (1,0), (1,1) get the training fractions
b/(b+1)/2, 1/(b+1)/2, 1/(b+1)/2, b/(b+1)/2: b = 1/9 gives 5% / 45% / 45% / 5% (the paper's skew,
minorities (0,0) and (1,1)); b = 1 is balanced. Quotas are round(fraction * n_train) per group.

CelebA and tinyfaces (the paper's protocol, `partition="official"`):
  train = the biased split of the official train partition (0), scanned in image_id order, each group
          filled up to its quota first come first served;
  val   = the whole official val partition (1), test = the whole official test partition (2);
          both keep the natural distribution. The seed is not used: the split is deterministic.
  With `partition="seeded"` (a subset of CelebA with no partition file, or whose ids all lie in one
  partition) the images are shuffled with numpy.random.default_rng(seed) and cut into train/val/test
  by `seeded_fractions`; the train part is then scanned in image_id order as above.

UTKFace (no official split; the paper's test set is group-balanced):
  1. the images, sorted by file name, are shuffled with numpy.random.default_rng(seed);
  2. test  = the first `utkface_test_per_group` images of each group in that order, the same number for
             all four groups (default: 20% of the smallest group, rounded down);
  3. val   = the first `utkface_val_fraction` (default 10%) of the remaining images, natural distribution;
  4. train = the biased split of the rest, scanned in the shuffled order. The shuffled order matters:
             names start with the age, so name order would fill each group with the youngest faces.

Every manifest has the columns image_id, y, s (0/1). CelebA's -1/+1 labels become y = (a + 1) // 2.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aimfair.config import DATASETS, PARTITIONS, parse_bias_degree
from aimfair.core.errors import AimfairError
from aimfair.core.groups import GROUPS, group_key
from aimfair.core.io import write_csv, write_json
from aimfair.data.celeba import TEST, TRAIN, VAL, read_celeba
from aimfair.data.utkface import read_utkface

SPLITS: tuple[str, ...] = ("train", "val", "test")
UTKFACE_ATTRIBUTES: tuple[str, ...] = ("Female", "Male", "White", "Young")
UTKFACE_TEST_SHARE = Fraction(1, 5)  # default UTKFace test size per group, as a share of the smallest group


def group_fractions(bias_degree: str | int | float | Fraction) -> dict[str, Fraction]:
    """Share of each group in the biased training split: b = 1/9 -> 0_0 .05, 0_1 .45, 1_0 .45, 1_1 .05."""
    b = parse_bias_degree(bias_degree)
    minority = b / (b + 1) / 2
    majority = 1 / (b + 1) / 2
    return dict(zip(GROUPS, (minority, majority, majority, minority)))


def group_quotas(bias_degree: str | int | float | Fraction, n_train: int) -> dict[str, int]:
    """Images per group in the biased training split: round(fraction * n_train), exact arithmetic.

    Python rounds halves to even, so the total can differ from n_train by 2 when n_train is tiny.
    """
    if isinstance(n_train, bool) or not isinstance(n_train, (int, np.integer)) or n_train <= 0:
        raise AimfairError(f"n_train {n_train!r} must be a positive whole number of images, e.g. 20000")
    n_train = int(n_train)
    quotas = {g: round(f * n_train) for g, f in group_fractions(bias_degree).items()}
    empty = [g for g, q in quotas.items() if q == 0]
    if empty:
        raise AimfairError(
            f"n_train {n_train} with bias degree {bias_degree} leaves group {empty[0]} without images: "
            "raise --n-train (data.n_train) or use a milder --bias-degree (data.bias_degree)"
        )
    return quotas


def group_counts(frame: pd.DataFrame) -> dict[str, int]:
    """Number of rows per group key, all four groups present (0 when empty)."""
    counts = _group_keys(frame).value_counts()
    return {g: int(counts.get(g, 0)) for g in GROUPS}


def biased_train_split(
    frame: pd.DataFrame, quotas: Mapping[str, int], order: str | Sequence[str] | None = None
) -> pd.DataFrame:
    """The biased training split: first come first served up to each group's quota.

    Rows are scanned sorted by the `order` column(s), or as they are when order is None; a row is kept
    while its group is below quota. Every group must be able to reach its quota.
    """
    ordered = frame.sort_values(order, kind="stable") if order is not None else frame
    keys = _group_keys(ordered)
    available = group_counts(ordered)
    if any(available[g] < quotas[g] for g in quotas):
        per_group = ", ".join(
            f"{g} {available[g]}/{quotas[g]}" + (" short" if available[g] < quotas[g] else "") for g in quotas
        )
        raise AimfairError(
            f"not enough images for the biased train split (available/needed per group: {per_group}): "
            "lower --n-train (data.n_train) or use a milder --bias-degree (data.bias_degree, closer to 1)"
        )
    # Rank of each row within its group in scan order; taking ranks below the quota is exactly FCFS.
    rank = ordered.groupby(keys, sort=False).cumcount()
    taken = rank < keys.map(dict(quotas)).fillna(0)
    return ordered[taken.to_numpy()].reset_index(drop=True)


def make_split(
    dataset: str,
    root: str | Path,
    target: str,
    sensitive: str,
    bias_degree: str | int | float | Fraction,
    n_train: int,
    seed: int = 0,
    utkface_test_per_group: int | None = None,
    utkface_val_fraction: float = 0.1,
    partition: str = "official",
    seeded_fractions: Sequence[float] = (0.7, 0.1, 0.2),
) -> dict[str, pd.DataFrame]:
    """{"train", "val", "test"} manifests (image_id, y, s) for one setting; see the module docstring."""
    if dataset not in DATASETS:
        raise AimfairError(f"unknown dataset {dataset!r}: choose one of {', '.join(DATASETS)}")
    if partition not in PARTITIONS:
        raise AimfairError(f"unknown partition {partition!r}: choose one of {', '.join(PARTITIONS)}")
    if target == sensitive:
        raise AimfairError(f"target and sensitive attribute are both {target!r}: choose two different ones")
    quotas = group_quotas(bias_degree, n_train)  # checks bias degree and n_train before the slow read
    labelled = labelled_frame(dataset, root, target, sensitive, official=partition == "official")
    if dataset == "utkface":
        return _split_utkface(labelled, quotas, seed, utkface_test_per_group, utkface_val_fraction)
    parts = labelled.pop("partition")
    if partition == "seeded":
        parts = seeded_partition(len(labelled), seeded_fractions, seed)
    empty = [name for name, code in (("val", VAL), ("test", TEST)) if not (parts == code).any()]
    if empty and partition == "seeded":
        raise AimfairError(f"the seeded partition of {len(parts)} images by {list(seeded_fractions)} leaves "
                           f"{' and '.join(empty)} empty: raise its share in data.seeded_fractions")
    if empty:
        raise AimfairError(
            f"the official partition of {root} leaves {' and '.join(empty)} empty (a subset of CelebA?): set "
            "data.partition: seeded for a seeded train/val/test split of the images you have"
        )
    return {
        "train": biased_train_split(labelled[parts == TRAIN], quotas, order="image_id"),
        "val": labelled[parts == VAL].reset_index(drop=True),
        "test": labelled[parts == TEST].reset_index(drop=True),
    }


def seeded_partition(n: int, fractions: Sequence[float], seed: int) -> np.ndarray:
    """Partition codes (TRAIN, VAL, TEST) for n images in id order: a seeded shuffle cut by `fractions`."""
    if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-6:
        raise AimfairError(f"seeded fractions {list(fractions)} must be three positive shares of train, val "
                           "and test that add up to 1, e.g. [0.7, 0.1, 0.2]")
    order = np.random.default_rng(seed).permutation(n)
    cuts = np.round(np.cumsum(fractions)[:2] * n).astype(int)
    codes = np.empty(n, dtype=np.int64)
    codes[order[:cuts[0]]], codes[order[cuts[0]:cuts[1]]], codes[order[cuts[1]:]] = TRAIN, VAL, TEST
    return codes


def labelled_frame(dataset: str, root: str | Path, target: str, sensitive: str,
                   official: bool = True) -> pd.DataFrame:
    """Every image of the dataset with its labels: image_id, y, s (0/1), and CelebA's partition column
    (-1 throughout when `official` is False: the partition file is not read)."""
    frame = attribute_frame(dataset, root, official)
    attributes = list(UTKFACE_ATTRIBUTES) if dataset == "utkface" else \
        [c for c in frame.columns if c not in ("image_id", "partition")]
    _check_attribute("target", target, attributes, dataset)
    _check_attribute("sensitive", sensitive, attributes, dataset)

    labelled = pd.DataFrame({"image_id": frame["image_id"], "y": frame[target], "s": frame[sensitive]})
    if "partition" in frame:
        labelled["partition"] = frame["partition"]
    return labelled.astype({"y": "int64", "s": "int64"})


def attribute_frame(dataset: str, root: str | Path, official: bool = True) -> pd.DataFrame:
    """Every image with all its labels as 0/1 columns (CelebA's -1/+1 become 0/1; UTKFace also keeps age,
    gender and race), plus CelebA's partition column."""
    if dataset not in DATASETS:
        raise AimfairError(f"unknown dataset {dataset!r}: choose one of {', '.join(DATASETS)}")
    if dataset == "utkface":
        return read_utkface(root)
    frame = read_celeba(root, official=official)
    names = [c for c in frame.columns if c not in ("image_id", "partition")]
    frame[names] = (frame[names] + 1) // 2
    return frame


def write_split(
    splits: Mapping[str, pd.DataFrame], out: str | Path, params: Mapping[str, Any] | None = None
) -> None:
    """Write train.csv, val.csv, test.csv and split.json (the params and per-split group counts) to `out`."""
    out = Path(out)
    for name in SPLITS:
        write_csv(out / f"{name}.csv", splits[name])
    # Paths and Fractions are not JSON: store them as text ("1/9").
    plain = (str, int, float, bool, type(None))
    summary = {
        "params": {k: v if isinstance(v, plain) else str(v) for k, v in (params or {}).items()},
        "sizes": {name: len(splits[name]) for name in SPLITS},
        "group_counts": {name: group_counts(splits[name]) for name in SPLITS},
    }
    write_json(out / "split.json", summary)


def _group_keys(frame: pd.DataFrame) -> pd.Series:
    keys = [group_key(y, s) for y, s in zip(frame["y"], frame["s"])]
    return pd.Series(keys, index=frame.index, dtype="str")


def _check_attribute(role: str, name: str, available: list[str], dataset: str) -> None:
    if name in available:
        return
    close = difflib.get_close_matches(name, available, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise AimfairError(
        f"unknown {role} attribute {name!r} for {dataset}: {hint}available: {', '.join(available)}"
    )


def _split_utkface(
    labelled: pd.DataFrame,
    quotas: Mapping[str, int],
    seed: int,
    test_per_group: int | None,
    val_fraction: float,
) -> dict[str, pd.DataFrame]:
    if not 0 <= val_fraction < 1:
        raise AimfairError(f"utkface_val_fraction {val_fraction} must be at least 0 and below 1, e.g. 0.1")
    shuffled = labelled.iloc[np.random.default_rng(seed).permutation(len(labelled))].reset_index(drop=True)
    keys = _group_keys(shuffled)

    sizes = group_counts(shuffled)
    smallest = min(GROUPS, key=lambda g: sizes[g])
    if test_per_group is None:
        test_per_group = math.floor(sizes[smallest] * UTKFACE_TEST_SHARE)
    if not 1 <= test_per_group <= sizes[smallest]:
        raise AimfairError(
            f"UTKFace group {smallest} has {sizes[smallest]} images, too few for a balanced test split of "
            f"{test_per_group} per group: lower utkface_test_per_group or choose other attributes"
        )
    in_test = (shuffled.groupby(keys, sort=False).cumcount() < test_per_group).to_numpy()
    rest = shuffled[~in_test]
    n_val = round(val_fraction * len(rest))
    return {
        "train": biased_train_split(rest.iloc[n_val:], quotas),
        "val": rest.iloc[:n_val].reset_index(drop=True),
        "test": shuffled[in_test].reset_index(drop=True),
    }

"""Bias degree, quotas, the first-come-first-served biased split, and make_split on tiny fixtures."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aimfair.config import parse_bias_degree
from aimfair.core.errors import AimfairError
from aimfair.data.splits import biased_train_split, group_counts, group_fractions, group_quotas, make_split, write_split
from aimfair.data.utkface import read_utkface

NAMES = ["Male", "Smiling", "Young"]


def write_celeba(root: Path, n_train: int = 400, n_val: int = 60, n_test: int = 80) -> pd.DataFrame:
    """A CelebA-format fixture with random -1/+1 attributes; returns the labels it wrote."""
    n = n_train + n_val + n_test
    values = np.random.default_rng(0).choice([-1, 1], size=(n, len(NAMES)))
    labels = pd.DataFrame(values, columns=NAMES)
    labels.insert(0, "image_id", [f"{i + 1:06d}.jpg" for i in range(n)])
    labels.insert(1, "partition", [0] * n_train + [1] * n_val + [2] * n_test)
    root.mkdir(parents=True, exist_ok=True)
    lines = [str(n), " ".join(NAMES)]
    lines += [f"{r.image_id} " + " ".join(f"{v:2d}" for v in r[NAMES]) for _, r in labels.iterrows()]
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    (root / "list_eval_partition.txt").write_text(
        "".join(f"{i} {p}\n" for i, p in zip(labels["image_id"], labels["partition"]))
    )
    return labels


def write_utkface(root: Path, n: int = 800, seed: int = 0) -> None:
    """Empty files named age_gender_race_datetime.jpg.chip.jpg with random labels."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        age, gender, race = rng.integers(1, 90), rng.integers(0, 2), rng.integers(0, 5)
        (root / f"{age}_{gender}_{race}_20170116{i:09d}.jpg.chip.jpg").touch()


# --- bias degree and quotas ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [("1/9", Fraction(1, 9)), (" 1/9 ", Fraction(1, 9)), ("0.25", Fraction(1, 4)), ("1", 1), (1, 1),
     (0.1, Fraction(1, 10)), (Fraction(2, 3), Fraction(2, 3))],
)
def test_parse_bias_degree(text, expected) -> None:
    assert parse_bias_degree(text) == expected


@pytest.mark.parametrize("text", ["0", "-1/9", "abc", "1/0", "nan", "inf", "", True, float("nan"), -0.5])
def test_parse_bias_degree_rejects(text) -> None:
    with pytest.raises(AimfairError, match="is not a positive fraction such as 1/9"):
        parse_bias_degree(text)


@pytest.mark.parametrize("text, hint", [("9", "1/9"), ("6/4", "2/3"), (1.5, "2/3")])
def test_a_bias_degree_above_one_is_refused_with_the_inverse(text, hint) -> None:
    with pytest.raises(AimfairError, match=rf"bias degree '{text}' is above 1: write it as minority/majority, {hint}"):
        parse_bias_degree(text)


def test_group_fractions_for_the_paper_skew() -> None:
    fractions = group_fractions("1/9")
    minority, majority = Fraction(1, 20), Fraction(9, 20)
    assert fractions == {"0_0": minority, "0_1": majority, "1_0": majority, "1_1": minority}
    assert sum(fractions.values()) == 1


def test_quotas() -> None:
    assert group_quotas("1/9", 20000) == {"0_0": 1000, "0_1": 9000, "1_0": 9000, "1_1": 1000}
    assert group_quotas("1", 20000) == {g: 5000 for g in ("0_0", "0_1", "1_0", "1_1")}


@pytest.mark.parametrize("n_train", [0, -5, 2.5])
def test_quotas_need_a_positive_n_train(n_train) -> None:
    with pytest.raises(AimfairError, match="must be a positive whole number"):
        group_quotas("1/9", n_train)


def test_quotas_refuse_an_empty_group() -> None:
    with pytest.raises(AimfairError, match="leaves group 0_0 without images"):
        group_quotas("1/9", 8)


# --- first come first served ------------------------------------------------------------------


def test_fcfs_takes_the_first_rows_of_each_group_in_order() -> None:
    # (y, s) per row, in scan order; quotas 1/2/2/1.
    groups = [(0, 1), (0, 0), (0, 1), (1, 1), (0, 1), (1, 0), (0, 0), (1, 1), (1, 0), (1, 0)]
    frame = pd.DataFrame({"image_id": [f"r{i}" for i in range(10)], "y": [g[0] for g in groups],
                          "s": [g[1] for g in groups]})
    quotas = {"0_0": 1, "0_1": 2, "1_0": 2, "1_1": 1}
    taken = biased_train_split(frame, quotas)
    # r4 (third 0_1), r6 (second 0_0), r7 (second 1_1), r9 (third 1_0) come after their quota filled.
    assert list(taken["image_id"]) == ["r0", "r1", "r2", "r3", "r5", "r8"]
    assert group_counts(taken) == quotas

    # Scanning in a given column order: the same rows shuffled, sorted back by image_id.
    shuffled = frame.sample(frac=1, random_state=0)
    assert list(biased_train_split(shuffled, quotas, order="image_id")["image_id"]) == list(taken["image_id"])


def test_fcfs_reports_available_and_needed() -> None:
    frame = pd.DataFrame({"image_id": list("abcdef"), "y": [0, 0, 1, 1, 1, 0], "s": [0, 1, 0, 1, 0, 1]})
    message = r"0_0 1/2 short, 0_1 2/2, 1_0 2/1, 1_1 1/3 short.*lower --n-train"
    with pytest.raises(AimfairError, match=message):
        biased_train_split(frame, {"0_0": 2, "0_1": 2, "1_0": 1, "1_1": 3})


# --- make_split: CelebA layout ----------------------------------------------------------------


@pytest.mark.parametrize("dataset", ["celeba", "tinyfaces"])
def test_celeba_split_follows_the_protocol(tmp_path: Path, dataset: str) -> None:
    labels = write_celeba(tmp_path)
    splits = make_split(dataset, tmp_path, "Smiling", "Male", "1/9", 40)
    train, val, test = splits["train"], splits["val"], splits["test"]
    for frame in splits.values():
        assert list(frame.columns) == ["image_id", "y", "s"]
        assert set(frame["y"]) <= {0, 1} and set(frame["s"]) <= {0, 1}

    assert group_counts(train) == {"0_0": 2, "0_1": 18, "1_0": 18, "1_1": 2}
    # Exactly the first images of each group in id order, within the official train partition.
    pool = labels[labels["partition"] == 0]
    pool = pool.assign(y=(pool["Smiling"] + 1) // 2, s=(pool["Male"] + 1) // 2)
    expected = set()
    for (y, s), group in pool.groupby(["y", "s"]):
        expected |= set(group["image_id"].head(2 if y == s else 18))
    assert set(train["image_id"]) == expected
    assert list(train["image_id"]) == sorted(train["image_id"])

    # Val and test are the whole official partitions, labels mapped -1/+1 -> 0/1.
    assert list(val["image_id"]) == list(labels.loc[labels["partition"] == 1, "image_id"])
    assert list(test["image_id"]) == list(labels.loc[labels["partition"] == 2, "image_id"])
    first_test = labels[labels["partition"] == 2].iloc[0]
    assert test.iloc[0]["y"] == (first_test["Smiling"] + 1) // 2


def test_unknown_attribute_suggests_a_close_match(tmp_path: Path) -> None:
    write_celeba(tmp_path)
    message = r"unknown target attribute 'Smilng'.*did you mean 'Smiling'\?.*available: Male, Smiling, Young"
    with pytest.raises(AimfairError, match=message):
        make_split("celeba", tmp_path, "Smilng", "Male", "1/9", 40)
    with pytest.raises(AimfairError, match="unknown sensitive attribute 'Gender'"):
        make_split("celeba", tmp_path, "Smiling", "Gender", "1/9", 40)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"dataset": "imagenet"}, "unknown dataset 'imagenet': choose one of celeba, tinyfaces, utkface"),
        ({"sensitive": "Smiling"}, "both 'Smiling'"),
        ({"n_train": 0}, "must be a positive whole number"),
        ({"bias_degree": "1:9"}, "bias degree '1:9' is not a positive fraction"),
        ({"n_train": 4000}, r"0_1 \d+/1800 short"),
    ],
)
def test_make_split_errors(tmp_path: Path, kwargs: dict, message: str) -> None:
    write_celeba(tmp_path)
    args = {"dataset": "celeba", "root": tmp_path, "target": "Smiling", "sensitive": "Male",
            "bias_degree": "1/9", "n_train": 40, **kwargs}
    with pytest.raises(AimfairError, match=message):
        make_split(**args)


# --- make_split: UTKFace ------------------------------------------------------------------------


def test_utkface_split(tmp_path: Path) -> None:
    write_utkface(tmp_path)
    splits = make_split("utkface", tmp_path, "Female", "White", "1/9", 100, seed=1)
    train, val, test = splits["train"], splits["val"], splits["test"]

    # Test: exactly balanced, 20% of the smallest group by default.
    labels = read_utkface(tmp_path)
    sizes = group_counts(labels.assign(y=labels["Female"], s=labels["White"]))
    per_group = int(min(sizes.values()) * 0.2)
    assert per_group > 10
    assert group_counts(test) == {g: per_group for g in sizes}
    # No image in two splits; val is 10% of what the test split left over.
    ids = [set(f["image_id"]) for f in (train, val, test)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert len(val) == round(0.1 * (800 - len(test)))
    assert group_counts(train) == {"0_0": 5, "0_1": 45, "1_0": 45, "1_1": 5}
    assert list(train["image_id"]) != sorted(train["image_id"])  # scanned in shuffled, not name, order
    # Female/White labels come from the names: gender 1 -> y=1, race 0 -> s=1.
    row = train.iloc[0]
    _, gender, race = (int(v) for v in row["image_id"].split("_")[:3])
    assert (row["y"], row["s"]) == (int(gender == 1), int(race == 0))


def test_utkface_split_is_seeded(tmp_path: Path) -> None:
    write_utkface(tmp_path)
    first = make_split("utkface", tmp_path, "Female", "White", "1/9", 100, seed=1)
    again = make_split("utkface", tmp_path, "Female", "White", "1/9", 100, seed=1)
    other = make_split("utkface", tmp_path, "Female", "White", "1/9", 100, seed=2)
    for name in ("train", "val", "test"):
        pd.testing.assert_frame_equal(first[name], again[name])
    assert set(first["test"]["image_id"]) != set(other["test"]["image_id"])
    assert set(first["train"]["image_id"]) != set(other["train"]["image_id"])


def test_utkface_test_size_options(tmp_path: Path) -> None:
    write_utkface(tmp_path)
    splits = make_split("utkface", tmp_path, "Female", "White", "1", 40, utkface_test_per_group=10,
                        utkface_val_fraction=0.0)
    assert group_counts(splits["test"]) == {g: 10 for g in ("0_0", "0_1", "1_0", "1_1")}
    assert len(splits["val"]) == 0
    with pytest.raises(AimfairError, match=r"group \d_\d has \d+ images, too few for a balanced test split of 5000 per group"):
        make_split("utkface", tmp_path, "Female", "White", "1/9", 100, utkface_test_per_group=5000)
    with pytest.raises(AimfairError, match="utkface_val_fraction 1.5"):
        make_split("utkface", tmp_path, "Female", "White", "1/9", 100, utkface_val_fraction=1.5)


def test_utkface_unknown_attribute(tmp_path: Path) -> None:
    write_utkface(tmp_path, n=20)
    with pytest.raises(AimfairError, match="did you mean 'White'.*available: Female, Male, White, Young"):
        make_split("utkface", tmp_path, "Female", "white", "1/9", 100)


# --- write_split --------------------------------------------------------------------------------


def test_write_split(tmp_path: Path) -> None:
    write_celeba(tmp_path / "data")
    splits = make_split("celeba", tmp_path / "data", "Smiling", "Male", "1/9", 40)
    params = {"bias_degree": Fraction(1, 9), "root": tmp_path / "data", "n_train": 40}
    write_split(splits, tmp_path / "out", params)
    for name in ("train", "val", "test"):
        written = pd.read_csv(tmp_path / "out" / f"{name}.csv", dtype={"image_id": str})
        assert list(written.columns) == ["image_id", "y", "s"]
        assert len(written) == len(splits[name])
    summary = json.loads((tmp_path / "out" / "split.json").read_text())
    assert summary["params"] == {"bias_degree": "1/9", "root": str(tmp_path / "data"), "n_train": 40}
    assert summary["sizes"] == {"train": 40, "val": 60, "test": 80}
    assert summary["group_counts"]["train"] == {"0_0": 2, "0_1": 18, "1_0": 18, "1_1": 2}

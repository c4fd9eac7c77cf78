"""`aimfair split` end to end on a tiny CelebA-format fixture, and its one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aimfair.cli import main

REPO = Path(__file__).resolve().parents[1]
NAMES = ["Male", "Smiling", "Young"]


def write_celeba(root: Path, n_train: int = 400, n_val: int = 60, n_test: int = 80) -> None:
    """A CelebA-format fixture with random -1/+1 attributes."""
    n = n_train + n_val + n_test
    values = np.random.default_rng(0).choice([-1, 1], size=(n, len(NAMES)))
    ids = [f"{i + 1:06d}.jpg" for i in range(n)]
    partitions = [0] * n_train + [1] * n_val + [2] * n_test
    root.mkdir(parents=True, exist_ok=True)
    lines = [str(n), " ".join(NAMES)]
    lines += [f"{i} " + " ".join(f"{v:2d}" for v in row) for i, row in zip(ids, values)]
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    (root / "list_eval_partition.txt").write_text("".join(f"{i} {p}\n" for i, p in zip(ids, partitions)))


def split_args(root: Path, out: Path, **changes: str) -> list[str]:
    options = {"--dataset": "celeba", "--root": str(root), "--target": "Smiling", "--sensitive": "Male",
               "--bias-degree": "1/9", "--n-train": "40", "--out": str(out), **changes}
    return ["split", *[part for item in options.items() for part in item]]


@pytest.mark.parametrize("dataset", ["celeba", "tinyfaces"])
def test_split_writes_the_manifests(tmp_path: Path, capsys: pytest.CaptureFixture, dataset: str) -> None:
    write_celeba(tmp_path / "data")
    out = tmp_path / "out"
    assert main(split_args(tmp_path / "data", out, **{"--dataset": dataset})) == 0

    sizes = {"train": 40, "val": 60, "test": 80}
    for name, size in sizes.items():
        frame = pd.read_csv(out / f"{name}.csv", dtype={"image_id": str})
        assert list(frame.columns) == ["image_id", "y", "s"]
        assert len(frame) == size
    train = pd.read_csv(out / "train.csv")
    assert train.groupby(["y", "s"]).size().to_dict() == {(0, 0): 2, (0, 1): 18, (1, 0): 18, (1, 1): 2}

    summary = json.loads((out / "split.json").read_text())
    assert summary["params"]["bias_degree"] == "1/9" and summary["params"]["dataset"] == dataset
    assert summary["sizes"] == sizes
    printed = capsys.readouterr().out
    assert "train       40       2      18      18       2" in printed


def test_utkface_split_with_seed(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    folder = tmp_path / "data" / "UTKFace"
    folder.mkdir(parents=True)
    for i in range(400):
        (folder / f"{rng.integers(1, 90)}_{rng.integers(0, 2)}_{rng.integers(0, 5)}_2017{i:09d}.jpg").touch()
    args = split_args(tmp_path / "data", tmp_path / "out", **{"--dataset": "utkface", "--target": "Female",
                                                              "--sensitive": "White", "--seed": "3"})
    assert main(args) == 0
    test = pd.read_csv(tmp_path / "out" / "test.csv")
    assert test.groupby(["y", "s"]).size().nunique() == 1  # balanced
    assert json.loads((tmp_path / "out" / "split.json").read_text())["params"]["seed"] == 3


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"--target": "Smilling"}, "did you mean 'Smiling'?"),
        ({"--bias-degree": "ten"}, "bias degree 'ten' is not a positive fraction"),
        ({"--n-train": "4000"}, "lower --n-train (data.n_train) or use a milder --bias-degree"),
    ],
)
def test_user_errors_print_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, changes: dict, message: str
) -> None:
    write_celeba(tmp_path / "data")
    assert main(split_args(tmp_path / "data", tmp_path / "out", **changes)) == 2
    err = capsys.readouterr().err
    assert err.startswith("aimfair: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_python_dash_m_exits_2_with_one_line(tmp_path: Path) -> None:
    # The repo root on the path, whether or not the package is installed in the venv.
    python_path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": python_path}
    result = subprocess.run(
        [sys.executable, "-m", "aimfair", *split_args(tmp_path / "missing", tmp_path / "out")],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("aimfair: error: dataset folder") and "does not exist" in result.stderr

"""Stage 00_data: the biased training split (the authors' protocol), val and test manifests."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from aimfair import paths
from aimfair.config import Params, to_dict
from aimfair.data.splits import make_split, write_split


def run_data(params: Params, root: Path) -> dict[str, pd.DataFrame]:
    """Write work/splits/{train,val,test}.csv and split.json for the dataset in params.data."""
    d = params.data
    splits = make_split(d.dataset, root / d.root, d.target, d.sensitive, d.bias_degree, d.n_train, seed=d.split_seed,
                        utkface_test_per_group=d.utkface_test_per_group or None,
                        utkface_val_fraction=d.utkface_val_fraction)
    write_split(splits, root / paths.SPLITS, {k: v for k, v in to_dict(d).items() if k != "tinyfaces"})
    return splits


def split_counts(root: Path) -> dict[str, dict[str, int]]:
    """Images per group in each split, as written by the data stage."""
    return json.loads((root / paths.SPLITS / "split.json").read_text())["group_counts"]

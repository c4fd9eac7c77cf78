"""Stage 00_data: the biased training split (the authors' protocol), val and test manifests; with
generator.corpus: dataset also the generator pool (real images outside all three, for the built-in T2I model)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from aimfair.config import Params, to_dict
from aimfair.core import paths
from aimfair.core.io import write_csv
from aimfair.data.generator_pool import POOL_FILE, check_pool, generator_pool
from aimfair.data.splits import make_split, write_split


def run_data(params: Params, root: Path) -> dict[str, pd.DataFrame]:
    """Write work/splits/{train,val,test}.csv and split.json for the dataset in params.data (and
    generator_pool.csv when generator.corpus is dataset)."""
    d = params.data
    official = d.partition == "official"
    splits = make_split(d.dataset, root / d.root, d.target, d.sensitive, d.bias_degree, d.n_train, seed=d.split_seed,
                        utkface_test_per_group=d.utkface_test_per_group or None,
                        utkface_val_fraction=d.utkface_val_fraction, partition=d.partition,
                        seeded_fractions=d.seeded_fractions)
    summary = {k: v for k, v in to_dict(d).items() if k != "tinyfaces"}
    if d.partition == "official":  # the default pipeline's split.json stays as it was
        summary = {k: v for k, v in summary.items() if k not in ("partition", "seeded_fractions")}
    write_split(splits, root / paths.SPLITS, summary)
    if params.generator.corpus == "dataset":
        pool = generator_pool(d.dataset, root / d.root, d.target, d.sensitive, splits, official=official)
        check_pool(pool)
        write_csv(root / paths.SPLITS / POOL_FILE, pool)
        splits = dict(splits, generator_pool=pool)
    return splits


def split_counts(root: Path) -> dict[str, dict[str, int]]:
    """Images per group in each split, as written by the data stage."""
    return json.loads((root / paths.SPLITS / "split.json").read_text())["group_counts"]

"""The generator pool: real images of the dataset that the classifier never sees, for the built-in T2I model.

With `generator.corpus: dataset` the built-in text-to-image model learns the dataset's own faces instead of
the built-in world's studio renders. It learns them from a pool disjoint from the classifier's train, val
and test manifests: for CelebA (and tinyfaces) the train-partition images the biased split did not take,
for UTKFace the images its split leaves unused. The pool keeps every label the captions are written from
(CelebA's 40 attributes as 0/1; UTKFace's age, gender and race), plus y and s for balancing.

The data stage writes it as `work/splits/generator_pool.csv`; the generator stage balances it over the four
groups (`balanced_pool`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from aimfair.core.errors import AimfairError
from aimfair.core.groups import GROUPS
from aimfair.data.splits import SPLITS, attribute_frame, group_counts

POOL_FILE = "generator_pool.csv"
MIN_PER_GROUP = 50  # below this a group's faces cannot be learned; the prompts of that group would be noise


def generator_pool(dataset: str, root: str | Path, target: str, sensitive: str,
                   splits: Mapping[str, pd.DataFrame], official: bool = True) -> pd.DataFrame:
    """Every labelled image outside the train, val and test manifests, with y, s and all its labels."""
    frame = attribute_frame(dataset, root, official).drop(columns="partition", errors="ignore")
    used = set().union(*(set(splits[name]["image_id"]) for name in SPLITS))
    pool = frame[~frame["image_id"].isin(used)].copy()
    pool.insert(1, "y", pool[target].astype("int64"))
    pool.insert(2, "s", pool[sensitive].astype("int64"))
    return pool.reset_index(drop=True)


def check_pool(pool: pd.DataFrame, minimum: int = MIN_PER_GROUP) -> dict[str, int]:
    """Images per group; an error when a group has fewer than `minimum` to learn from."""
    counts = group_counts(pool)
    short = [g for g in GROUPS if counts[g] < minimum]
    if short:
        found = ", ".join(f"{g} {counts[g]}" for g in GROUPS)
        raise AimfairError(
            f"the generator pool (real images outside the classifier's splits) is too small to train on: "
            f"group(s) {', '.join(short)} have fewer than {minimum} images ({found}). Lower data.n_train "
            "so the split leaves images over, use more of the dataset, or set generate.model to a Stable "
            "Diffusion folder"
        )
    return counts


def balanced_pool(pool: pd.DataFrame, per_group: int, seed: int) -> pd.DataFrame:
    """`per_group` rows for each group: a seeded shuffle of the group, cycled when it has fewer images.

    A column `repeat` counts how many times a row came round before (0 the first time), so a caller can flip
    or re-caption repeats: minority groups are not left with weak prompts.
    """
    check_pool(pool)
    rng = np.random.default_rng(seed)
    parts = []
    for group in GROUPS:
        rows = pool[(pool["y"].astype(str) + "_" + pool["s"].astype(str)) == group]
        order = rng.permutation(len(rows))
        take = np.resize(order, per_group)  # cycles through the shuffled rows
        part = rows.iloc[take].copy()
        part["repeat"] = np.arange(per_group) // len(rows)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)

"""The synthetic sets drawn from the pool (the paper's): D_S2 balanced over the groups, D_S1 skewed like D_R.

Both come from the same pool. Each takes the first images of every group in manifest order, which cycles
through the group's prompts, so every prompt is used about equally. With the fidelity filter on, images the
oracles read as another group are left out first.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from aimfair.config import Params
from aimfair.core import paths
from aimfair.core.errors import AimfairError
from aimfair.core.groups import GROUPS
from aimfair.csdg.fidelity import FIDELITY
from aimfair.csdg.pool import read_manifest
from aimfair.data.cache import decoded_images
from aimfair.data.loading import ImageSet
from aimfair.data.splits import group_quotas


def usable_pool(params: Params, root: Path) -> pd.DataFrame:
    """The pool's manifest, without the images the fidelity oracles misread when fidelity.filter is on."""
    manifest = read_manifest(root / paths.POOL)
    if not params.fidelity.filter:
        return manifest
    scores_file = root / FIDELITY / "scores.csv"
    if not scores_file.exists():
        raise AimfairError(f"fidelity.filter is on but {scores_file} does not exist: run the generate stage")
    scores = pd.read_csv(scores_file)
    faithful = set(scores.loc[scores["ok"], "path"])
    return manifest[manifest["path"].isin(faithful)].reset_index(drop=True)


def draw_sets(pool: pd.DataFrame, balanced_per_group: int, biased_size: int, biased_skew: str,
              val_per_group: int = 0) -> dict[str, pd.DataFrame]:
    """{"balanced": D_S2, "biased": D_S1}: rows of the pool's manifest; with val_per_group, also
    "validation": that many images per group after the ones D_S1 and D_S2 draw, so disjoint from both."""
    wanted = {"balanced": {g: balanced_per_group for g in GROUPS}, "biased": group_quotas(biased_skew, biased_size)}
    available = pool["group"].value_counts()
    sets = {}
    for name, quota in wanted.items():
        short = [f"{g} {int(available.get(g, 0))}/{quota[g]}" for g in GROUPS if available.get(g, 0) < quota[g]]
        if short:
            raise AimfairError(f"the synthetic pool is too small for the {name} set (available/needed: "
                               f"{', '.join(short)}): run the generate stage with the current synthetic sizes, "
                               "turn fidelity.filter off, or lower synthetic.balanced_per_group / biased_size")
        rank = pool.groupby("group", sort=False).cumcount()
        sets[name] = pool[rank < pool["group"].map(quota)].reset_index(drop=True)
    if val_per_group:
        sets["validation"] = _validation_rows(pool, wanted, val_per_group, available)
    return sets


def _validation_rows(pool: pd.DataFrame, wanted: dict[str, dict[str, int]], per_group: int,
                     available: pd.Series) -> pd.DataFrame:
    """Each group's images after the most D_S1 or D_S2 draw from it, `per_group` of them."""
    start = {g: max(quota[g] for quota in wanted.values()) for g in GROUPS}
    short = [f"{g} {max(0, int(available.get(g, 0)) - start[g])}/{per_group}" for g in GROUPS
             if available.get(g, 0) < start[g] + per_group]
    if short:
        raise AimfairError(f"the synthetic pool holds fewer images beyond D_S1 and D_S2 than "
                           f"synthetic.val_per_group asks (available/needed: {', '.join(short)}): run the generate "
                           "stage with the current synthetic sizes (dvc repro), or lower synthetic.val_per_group")
    rank = pool.groupby("group", sort=False).cumcount()
    first = pool["group"].map(start)
    return pool[(rank >= first) & (rank < first + per_group)].reset_index(drop=True)


def synthetic_sets(params: Params, root: Path) -> dict[str, pd.DataFrame]:
    """D_S2 and D_S1 for the settings in params (sections synthetic and fidelity)."""
    s = params.synthetic
    return draw_sets(usable_pool(params, root), s.balanced_per_group, s.biased_size,
                     s.biased_skew or params.data.bias_degree, s.val_per_group)


def as_image_set(folder: Path, rows: pd.DataFrame, size: int, cache_dir: Path, progress: bool = True) -> ImageSet:
    """Generated images listed in `rows` (path relative to `folder`, y, s) at `size` px, decoded once.

    A generated image that cannot be read is an error, not a skip: the pool is ours to regenerate.
    """
    decoded = decoded_images([folder / p for p in rows["path"]], size, cache_dir, bad_images="fail",
                             progress=progress)
    return ImageSet(pixels=decoded.pixels, y=rows["y"].to_numpy().astype(np.int64),
                    s=rows["s"].to_numpy().astype(np.int64), image_ids=list(rows["path"]))


def synthetic_image_sets(params: Params, root: Path, size: int, progress: bool = True) -> dict[str, ImageSet]:
    """{"balanced": D_S2, "biased": D_S1} as images at `size` px."""
    return {name: as_image_set(root / paths.POOL, rows, size, root / paths.CACHE, progress)
            for name, rows in synthetic_sets(params, root).items()}

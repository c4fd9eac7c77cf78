"""Data repairing (a baseline of the paper's Table 3): balance the real training set with edited real images.

The minority groups of the biased training set are filled up to the size of the largest group with real
images of the other protected value and the same target, whose protected attribute is edited by SDEdit:
the image is noised part of the way (repair.strength) and denoised by the same text-to-image model with a
contextual prompt of the group it should join. For Smiling/Male, non-smiling men become non-smiling
women and smiling women become smiling men; the smile, ideally, stays.

The edits run through the pool runner (aimfair.csdg.pool), so they are resumable, atomic and identical
whatever the batch size or number of processes; they go to work/repaired/{y}_{s}/ with a manifest that
names each image's source.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from aimfair.core import paths
from aimfair.core.errors import AimfairError
from aimfair.core.groups import GROUPS, group_key, parse_group_key
from aimfair.csdg.generators.base import Generator
from aimfair.csdg.pool import Job, read_manifest
from aimfair.data.cache import decode_image
from aimfair.data.loading import ImageSet


def edit_seed(base_seed: int, group: str, source: str, j: int) -> int:
    """A 63-bit seed for the j-th edit into `group`, hashed from its source image."""
    digest = hashlib.sha256(f"repair|{base_seed}|{group}|{source}|{j}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def plan_repairs(train: pd.DataFrame, prompts: Mapping[str, Sequence[str]], base_seed: int) -> list[Job]:
    """The edits that balance `train` (image_id, y, s): each group is filled up to the largest one.

    Group (y, s) receives edits of (y, 1 - s) images in id order (cycling when it needs more than there
    are); edit j uses prompt j mod P of (y, s).
    """
    keys = [group_key(y, s) for y, s in zip(train["y"], train["s"])]
    counts = pd.Series(keys).value_counts()
    largest = int(counts.max())
    ordered = train.assign(group=keys).sort_values("image_id", kind="stable")
    jobs = []
    for group in GROUPS:
        need = largest - int(counts.get(group, 0))
        if need <= 0:
            continue
        y, s = parse_group_key(group)
        donors = ordered.loc[ordered["group"] == group_key(y, 1 - s), "image_id"].tolist()
        if not donors:
            raise AimfairError(f"group {group} needs {need} repaired images but the training set has no image of "
                               f"group {group_key(y, 1 - s)} to edit: repairing cannot balance this split")
        texts = prompts.get(group)
        if not texts:
            raise AimfairError(f"no prompts for group {group}: rerun the prompts stage")
        for j in range(need):
            source = donors[j % len(donors)]
            p, k = j % len(texts), j // len(texts)
            jobs.append(Job(group, p, k, texts[p], edit_seed(base_seed, group, source, j), source=source))
    return jobs


class SourceEditor:
    """Drives a generator's edit() on real images named by id (what the pool runner calls for edit jobs)."""

    def __init__(self, generator: Generator, image_dir: Path, strength: float, source_size: int):
        self.generator, self.image_dir, self.strength, self.source_size = generator, image_dir, strength, source_size
        # the manifest records the edit: the sampler name carries the strength
        self.info = replace(generator.info, sampler=f"{generator.info.sampler}+sdedit{strength:g}")

    def edit_sources(self, sources: Sequence[str], prompts: Sequence[str], seeds: Sequence[int]) -> np.ndarray:
        try:
            images = np.stack([decode_image(self.image_dir / s, self.source_size).transpose(1, 2, 0) for s in sources])
        except OSError as e:
            raise AimfairError(f"cannot read a source image to repair ({e}): rerun the data stage") from None
        return self.generator.edit(images, prompts, seeds, self.strength)


def repaired_images(root: Path, size: int, progress: bool = True) -> ImageSet:
    """The edited images at `size` px, as an ImageSet (ids are their paths in work/repaired)."""
    from aimfair.csdg.synthetic import as_image_set

    manifest = read_manifest(root / paths.REPAIRED)
    return as_image_set(root / paths.REPAIRED, manifest, size, root / paths.CACHE, progress)

"""The configured dataset's images: where its files are, and one split's images from the decode-once cache."""

from __future__ import annotations

from pathlib import Path

from aimfair.config import Params
from aimfair.core import paths
from aimfair.data.celeba import celeba_image_dir
from aimfair.data.loading import ImageSet, load_split
from aimfair.data.utkface import utkface_image_dir


def image_dir(params: Params, root: Path) -> Path:
    """The folder holding the dataset's image files."""
    data_root = root / params.data.root
    if params.data.dataset == "utkface":
        return utkface_image_dir(data_root)
    return celeba_image_dir(data_root)


def load_images(params: Params, root: Path, split: str, size: int, progress: bool = True) -> ImageSet:
    """One split's images at `size` px, from the decode-once cache."""
    return load_split(root / paths.SPLITS / f"{split}.csv", image_dir(params, root), size, root / paths.CACHE,
                      params.data.bad_images, progress=progress)

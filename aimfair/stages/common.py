"""What several stages share: where a dataset's images are, loading a split's images, torch set-up."""

from __future__ import annotations

from pathlib import Path

import torch

from aimfair import paths
from aimfair.config import Params
from aimfair.data.celeba import celeba_image_dir
from aimfair.data.loading import ImageSet, load_split, resolve_device
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


def training_device(params: Params, state=None) -> torch.device:
    """The device of this process: its own GPU when several processes share the work (accelerate gives
    each one), else pretrain.device with pretrain.threads CPU threads."""
    device = setup_torch(params.pretrain.threads, params.pretrain.device)
    return state.device if state is not None and state.num_processes > 1 else device


def setup_torch(threads: int, device: str) -> torch.device:
    """Set torch's CPU threads (0 keeps torch's default) and resolve the device name."""
    if threads > 0:
        torch.set_num_threads(threads)
    return resolve_device(device)

"""Batches of images for training and evaluation, augmented on the device as whole batches.

The authors' pipeline decodes a JPEG with PIL and transforms it image by image in DataLoader workers.
Here images come from the decode-once cache (aimfair.data.cache) as uint8 batches, are moved to the device
(the GPU when there is one) and augmented there in a few tensor operations:

* RandomResizedCrop with torchvision's sampling rule (scale, log-uniform aspect ratio, ten tries, then a
  centre crop), a different crop per image. On a GPU all crops are cut and resized in one call of
  torchvision.ops.roi_align; on the CPU, where roi_align is single-threaded float work, each crop goes
  through transforms.v2.functional.resized_crop on uint8, which is several times faster at 224 px;
* a horizontal flip per image with probability 0.5;
* transforms.v2.Normalize.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import torch
from torchvision.ops import roi_align
from torchvision.transforms import v2

from aimfair.core.errors import AimfairError
from aimfair.data.cache import decoded_images

# The paper normalises with mean = std = 0.5 per channel.
NORMALIZE_MEAN = (0.5, 0.5, 0.5)
NORMALIZE_STD = (0.5, 0.5, 0.5)


@dataclass
class ImageSet:
    """The images of one split with their labels; pixels stay uint8 (and memory-mapped) until batched."""

    pixels: np.ndarray  # (N, 3, H, W) uint8
    y: np.ndarray  # (N,) target 0/1
    s: np.ndarray  # (N,) protected attribute 0/1
    image_ids: list[str]

    def __len__(self) -> int:
        return len(self.y)


def load_split(split_csv: str | os.PathLike, image_dir: str | os.PathLike, size: int,
               cache_dir: str | os.PathLike, bad_images: str = "skip", progress: bool = True) -> ImageSet:
    """Read a split CSV (image_id, y, s) and its images at `size` px; unreadable images are dropped."""
    split_csv, image_dir = Path(split_csv), Path(image_dir)
    if not split_csv.exists():
        raise AimfairError(f"split file {split_csv} does not exist: run the data stage first (dvc repro)")
    frame = pd.read_csv(split_csv)
    missing = {"image_id", "y", "s"} - set(frame.columns)
    if missing:
        raise AimfairError(f"{split_csv} lacks column(s) {sorted(missing)}: rebuild it with `aimfair split`")
    decoded = decoded_images([image_dir / i for i in frame["image_id"]], size, cache_dir, bad_images,
                             progress=progress)
    keep = decoded.ok
    pixels = decoded.pixels if keep.all() else decoded.pixels[keep]
    return ImageSet(pixels=pixels, y=frame["y"].to_numpy()[keep].astype(np.int64),
                    s=frame["s"].to_numpy()[keep].astype(np.int64),
                    image_ids=frame["image_id"][keep].tolist())


def sample_crop_boxes(n: int, height: int, width: int, scale: tuple[float, float],
                      ratio: tuple[float, float], generator: torch.Generator) -> torch.Tensor:
    """Per-image crop boxes (x1, y1, x2, y2) drawn as transforms.v2.RandomResizedCrop draws them."""
    tries = 10
    area = height * width
    target_area = area * torch.empty(n, tries).uniform_(scale[0], scale[1], generator=generator)
    log_ratio = torch.empty(n, tries).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    aspect = torch.exp(log_ratio)
    w = torch.round(torch.sqrt(target_area * aspect))
    h = torch.round(torch.sqrt(target_area / aspect))
    valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.argmax(valid.int(), dim=1)  # first valid try per image
    rows = torch.arange(n)
    w, h, any_valid = w[rows, first], h[rows, first], valid.any(dim=1)
    # torchvision's fallback: a centre crop with the aspect ratio clamped to `ratio`
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        fw, fh = round(height * ratio[1]), height
    else:
        fw, fh = width, height
    w = torch.where(any_valid, w, torch.tensor(float(fw)))
    h = torch.where(any_valid, h, torch.tensor(float(fh)))
    u = torch.rand(n, 2, generator=generator)
    top = torch.where(any_valid, torch.floor(u[:, 0] * (height - h + 1)), torch.tensor(float((height - fh) // 2)))
    left = torch.where(any_valid, torch.floor(u[:, 1] * (width - w + 1)), torch.tensor(float((width - fw) // 2)))
    return torch.stack([left, top, left + w, top + h], dim=1)


class BatchAugment:
    """Train-time augmentation of a whole uint8 batch on its device, a different crop and flip per image."""

    BACKENDS = ("auto", "roi_align", "resized_crop")

    def __init__(self, size: int, scale: tuple[float, float] = (0.08, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), flip: bool = True, seed: int = 0,
                 backend: str = "auto"):
        if backend not in self.BACKENDS:
            raise AimfairError(f"augmentation backend must be one of {self.BACKENDS}, got {backend!r}")
        self.size, self.scale, self.ratio, self.flip = size, tuple(scale), tuple(ratio), flip
        self.backend = backend  # "auto": roi_align on accelerators, resized_crop on the CPU
        self.generator = torch.Generator().manual_seed(seed)  # on the CPU: same draws on every device
        self.normalize = v2.Normalize(NORMALIZE_MEAN, NORMALIZE_STD)

    def _crop_roi_align(self, batch: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        x = batch.float().div_(255)
        rois = torch.cat([torch.arange(len(boxes), dtype=torch.float32)[:, None], boxes], dim=1).to(x.device)
        # One bilinear sample at each output pixel's centre (aligned=True): the full box at the same size is
        # the identity. Crops are never larger than the cached image (it is already at the input size),
        # so the resize only ever enlarges and needs no antialiasing.
        return roi_align(x, rois, output_size=self.size, spatial_scale=1.0, sampling_ratio=1, aligned=True)

    def _crop_resized_crop(self, batch: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        left, top, right, bottom = boxes.long().unbind(1)
        crops = [v2.functional.resized_crop(img, int(t), int(lf), int(b - t), int(r - lf), [self.size, self.size],
                                            antialias=True)
                 for img, lf, t, r, b in zip(batch, left, top, right, bottom)]
        return torch.stack(crops).float().div_(255)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        n, _, height, width = batch.shape
        boxes = sample_crop_boxes(n, height, width, self.scale, self.ratio, self.generator)
        backend = self.backend
        if backend == "auto":
            backend = "resized_crop" if batch.device.type == "cpu" else "roi_align"
        x = self._crop_roi_align(batch, boxes) if backend == "roi_align" else self._crop_resized_crop(batch, boxes)
        if self.flip:
            flip = (torch.rand(n, generator=self.generator) < 0.5).to(x.device)
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return self.normalize(x)


def resize_uint8(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, H, W, 3) -> uint8 (N, 3, size, size), antialiased when shrinking."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = torch.nn.functional.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True)
        x = x.round().clamp(0, 255).to(torch.uint8)
    return x.contiguous().numpy()


def eval_transform(batch: torch.Tensor) -> torch.Tensor:
    """Test-time transform of a uint8 batch: the cache already resized and centre-cropped it."""
    return v2.functional.normalize(batch.float().div_(255), NORMALIZE_MEAN, NORMALIZE_STD)


class BatchLoader:
    """Iterate (images, y, s) batches of an ImageSet, on `device`, augmented or not.

    Shuffling uses its own seeded generator, so an epoch's order depends only on (seed, epoch). The next
    batch is gathered from the memory map and augmented in a background thread while the model works on
    this one.
    """

    def __init__(self, images: ImageSet, batch_size: int, device: torch.device, augment: BatchAugment | None = None,
                 shuffle: bool = False, drop_last: bool = False, seed: int = 0):
        if batch_size <= 0:
            raise AimfairError(f"batch_size must be positive, got {batch_size}")
        self.images, self.batch_size, self.device = images, batch_size, device
        self.augment, self.shuffle, self.drop_last, self.seed = augment, shuffle, drop_last, seed
        self.epoch = 0

    def __len__(self) -> int:
        n = len(self.images)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _prepare(self, index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Gather one batch from the memory map, move it to the device and transform it."""
        order = np.sort(index)  # sorted reads are kinder to the memory map; the batch is a set anyway
        x = torch.from_numpy(np.ascontiguousarray(self.images.pixels[order]))
        if self.device.type == "cuda":
            x = x.pin_memory()
        x = x.to(self.device, non_blocking=True)
        x = self.augment(x) if self.augment else eval_transform(x)
        y, s = torch.from_numpy(self.images.y[order]), torch.from_numpy(self.images.s[order])
        return x, y.to(self.device), s.to(self.device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        n = len(self.images)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(n, generator=g).numpy()
        else:
            order = np.arange(n)
        self.epoch += 1
        batches = [order[i:i + self.batch_size] for i in range(0, len(self) * self.batch_size, self.batch_size)]
        # one background thread prepares batch k+1 while the caller works on batch k; a single worker
        # keeps the augmentation's random draws in batch order, so results do not depend on timing. It runs
        # its torch ops on one intra-op thread: a second team of threads fighting the model's for the cores
        # cost 17-19% of CPU training speed (docs/benchmarks.md); the batches are the same either way
        with ThreadPoolExecutor(1, initializer=torch.set_num_threads, initargs=(1,)) as prefetch:
            pending = prefetch.submit(self._prepare, batches[0]) if batches else None
            for k in range(len(batches)):
                batch = pending.result()
                if k + 1 < len(batches):
                    pending = prefetch.submit(self._prepare, batches[k + 1])
                yield batch


def concat_image_sets(*sets: ImageSet) -> ImageSet:
    """One set holding the images of all `sets`, in order (their pixels must have the same size)."""
    sizes = {tuple(s.pixels.shape[1:]) for s in sets}
    if len(sizes) != 1:
        raise AimfairError(f"cannot combine image sets of different sizes {sorted(sizes)}: load them at one size")
    return ImageSet(pixels=np.concatenate([s.pixels for s in sets]), y=np.concatenate([s.y for s in sets]),
                    s=np.concatenate([s.s for s in sets]), image_ids=[i for s in sets for i in s.image_ids])

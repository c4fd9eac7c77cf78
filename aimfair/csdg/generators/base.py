"""What every text-to-image model offers the generation runner (aimfair.csdg.pool).

A generator turns prompts into images, one seed per image: the image for (prompt, seed) must not depend on
which other images share its batch. So each image's starting noise comes from its own seeded generator, and
the model always computes `info.batch` images at once (in_fixed_batches): CPU and GPU kernels are chosen by
shape and round differently, so a batch of 20 gives other pixels than a batch of 8, in float32 as in
bfloat16, while at one shape an image's pixels depend neither on its neighbours nor on its place.
`info` is what the pool's manifest records about the model and sampler.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Protocol, Sequence

import numpy as np


@dataclass(frozen=True)
class GeneratorInfo:
    """The identity of a model and its sampling settings, as written into every manifest row."""

    model: str  # a name or path: "builtin", "/models/sd-2-1-base", "stabilityai/stable-diffusion-2-1-base"
    revision: str  # checkpoint hash or pinned revision
    sampler: str  # "ddim", "dpmsolver++", ...
    steps: int
    guidance: float
    resolution: int  # side of the square images handed back (after any resizing)
    precision: str = "float32"  # arithmetic of the sampler: float32, bfloat16 or float16
    batch: int = 1  # images computed at once, always (the pixels depend on it)

    def as_dict(self) -> dict:
        return asdict(self)


class Generator(Protocol):
    """A text-to-image model ready to sample."""

    info: GeneratorInfo

    def generate(self, prompts: Sequence[str], seeds: Sequence[int]) -> np.ndarray:
        """Images for the prompts, uint8 of shape (len(prompts), resolution, resolution, 3)."""
        ...

    def edit(self, images: np.ndarray, prompts: Sequence[str], seeds: Sequence[int], strength: float) -> np.ndarray:
        """SDEdit: square uint8 images (N, H, W, 3) noised to `strength` of the schedule (0-1) and denoised
        with the prompts; uint8 of shape (N, resolution, resolution, 3)."""
        ...


def initial_noise(seeds: Sequence[int], shape: tuple[int, ...], dtype=None, device=None):
    """Per-image starting noise: row i depends on seeds[i] only (a CPU generator each, then moved)."""
    import torch

    rows = [torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
    return torch.stack(rows).to(device=device, dtype=dtype or torch.float32)


def in_fixed_batches(compute: Callable[..., np.ndarray], columns: Sequence, batch: int, resolution: int) -> np.ndarray:
    """`compute` applied to the rows of `columns` (lists, arrays or tensors of equal length) `batch` rows at a
    time, the last call filled up with copies of its last row, which are dropped: every call sees the same
    shape. Returns uint8 (N, resolution, resolution, 3)."""
    n = len(columns[0])
    out = [compute(*(_pad_rows(column[i:i + batch], batch) for column in columns))[:min(batch, n - i)]
           for i in range(0, n, batch)]
    return np.concatenate(out) if out else np.zeros((0, resolution, resolution, 3), np.uint8)


def _pad_rows(rows, size: int):
    missing = size - len(rows)
    if missing <= 0:
        return rows
    if isinstance(rows, np.ndarray):
        return np.concatenate([rows, np.repeat(rows[-1:], missing, axis=0)])
    if isinstance(rows, (list, tuple)):
        return list(rows) + [rows[-1]] * missing
    import torch

    return torch.cat([rows, rows[-1:].expand(missing, *rows.shape[1:])])

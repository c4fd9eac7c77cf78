"""Decode every image once: a uint8 array per (image list, resolution), memory-mapped from disk.

Decoding JPEGs is the slowest part of a PIL-based input pipeline and it is repeated every epoch, for every
seed and every stage. Here each image is decoded once, resized so that its shorter side is `size` and
centre-cropped to `size` x `size` (the test-time transform), and stored in an .npy file of shape
(N, 3, size, size). Later reads are a memory map: no decoding, shared between processes by the OS page
cache. The file name holds a hash of the image paths and the resolution, and one of the files' sizes and
modification times and the decoder's source code: a changed dataset or decoder gets a fresh cache, and
the stale entry for the same images is deleted.
"""

from __future__ import annotations

import hashlib
import inspect
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from aimfair.config import BAD_IMAGE_POLICIES
from aimfair.core import io
from aimfair.core.errors import AimfairError, notice


@dataclass
class DecodedImages:
    """A decoded image array and which of its rows could be read."""

    pixels: np.ndarray  # (N, 3, size, size) uint8, memory-mapped
    ok: np.ndarray  # (N,) bool; False for unreadable images (their pixels are zeros)


def decode_image(path: Path, size: int) -> np.ndarray:
    """Read one image as (3, size, size) uint8: shorter side resized to `size`, then centre-cropped."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        scale = size / min(w, h)
        new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
        im = im.resize((new_w, new_h), Image.BILINEAR, reducing_gap=None)
        left, top = (new_w - size) // 2, (new_h - size) // 2
        im = im.crop((left, top, left + size, top + size))
        return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)


_DECODER_SOURCE = inspect.getsource(decode_image).encode()


def _cache_keys(paths: list[Path], size: int) -> tuple[str, str]:
    """(which images, what they hold): the list of paths, and their sizes, mtimes and the decoder's code."""
    which = hashlib.sha1(f"{size}\n".encode())
    what = hashlib.sha1(_DECODER_SOURCE)  # a changed decoder invalidates the cache
    for p in paths:
        which.update(f"{p.resolve()}\n".encode())
        try:
            st = p.stat()
            what.update(f"{st.st_size}|{st.st_mtime_ns}\n".encode())
        except FileNotFoundError:
            what.update(b"missing\n")
    return which.hexdigest()[:12], what.hexdigest()[:12]


def decoded_images(paths: list[Path], size: int, cache_dir: str | os.PathLike, bad_images: str = "skip",
                   workers: int = 2, progress: bool = True) -> DecodedImages:
    """The images at `paths` as one memory-mapped uint8 array, decoding them only the first time.

    bad_images: "skip" marks unreadable or missing files as not ok and warns with their count;
    "fail" raises an AimfairError with their count and the first one. Either way every image is tried
    once, and the result is cached, so switching the policy does not decode again.
    """
    if bad_images not in BAD_IMAGE_POLICIES:
        raise AimfairError(f"bad_images must be one of {BAD_IMAGE_POLICIES}, got {bad_images!r}")
    if not paths:
        raise AimfairError("no images to decode: the split is empty")
    cache_dir = Path(cache_dir)
    which, what = _cache_keys(paths, size)
    stem = f"{which}_{what}_{size}px"
    pixel_file, ok_file = cache_dir / f"{stem}.npy", cache_dir / f"{stem}.ok.npy"

    if not (pixel_file.exists() and ok_file.exists()):
        cache_dir.mkdir(parents=True, exist_ok=True)
        io.remove_orphans(cache_dir)  # half-written arrays of killed processes
        for stale in cache_dir.glob(f"{which}_*_{size}px*.npy"):  # the same images before they changed
            stale.unlink(missing_ok=True)
        shape = (len(paths), 3, size, size)
        io.require_free_space(cache_dir, int(np.prod(shape)) + len(paths) + 4096, f"decoding {len(paths)} images")
        ok = np.ones(len(paths), dtype=bool)
        with io.atomic_path(pixel_file) as tmp:
            # np.save would append .npy to a temporary name, so open the memmap on the file itself
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
            with open(tmp, "r+b") as f:  # claim the blocks now: a disk that fills later is an error, not SIGBUS
                os.posix_fallocate(f.fileno(), 0, os.path.getsize(tmp))

            def load(i: int) -> None:
                try:
                    out[i] = decode_image(paths[i], size)
                except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError):
                    ok[i] = False

            with ThreadPoolExecutor(workers) as pool:  # PIL releases the GIL while decoding
                list(tqdm(pool.map(load, range(len(paths))), total=len(paths), unit="img",
                          desc=f"decode {len(paths)} images at {size}px (once)", disable=not progress))
            out.flush()
            del out
        with io.atomic_path(ok_file) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, ok)

    ok = np.load(ok_file)
    if not ok.any():
        raise AimfairError(f"none of the {len(paths)} images could be read, e.g. {paths[0]}: check data.root")
    if not ok.all():
        n_bad, first = int((~ok).sum()), paths[int(np.flatnonzero(~ok)[0])]
        if bad_images == "fail":
            raise AimfairError(f"{n_bad} unreadable image(s), first: {first}; "
                               "replace the file(s) or set data.bad_images: skip")
        bad = [str(paths[i]) for i in np.flatnonzero(~ok)[:3]]
        notice(f"skipped {n_bad} of {len(ok)} unreadable or missing image(s) "
               f"(data.bad_images: skip), e.g. {', '.join(bad)}")
    return DecodedImages(pixels=np.load(pixel_file, mmap_mode="r"), ok=ok)

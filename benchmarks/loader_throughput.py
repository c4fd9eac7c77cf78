"""Training-loader throughput: the authors' PIL + per-image transforms against our decode-once batch loader.

What it measures: images per second of iterating whole training epochs, with no model: fetch the images,
augment them (RandomResizedCrop to `--size` with `--scale`, horizontal flip, Normalize(0.5, 0.5)) and put
the batch on the device (synchronised there before the clock stops). Three loaders, same images, same size,
scale and batch size:

* authors: a torch Dataset that opens each JPEG with PIL and applies torchvision transforms image by image
  (RandomResizedCrop, RandomHorizontalFlip, ToImage + ToDtype, Normalize), in a DataLoader with `--workers`
  worker processes (shuffle, persistent workers, pinned memory on CUDA). Every epoch decodes every JPEG.
* ours: aimfair.data.loading.BatchLoader over the decode-once cache (aimfair.data.cache), augmented as whole
  batches on the device by BatchAugment. "cold" is the first epoch including the one-off cache build (the
  decode of every image into a fresh cache folder); "warm" is a later epoch (steady state).
* ours on the CPU: the warm loader with the device forced to the CPU (only when the device is not the CPU).

Each loader is warmed up once untimed (the authors' loader for one full epoch, which also starts its
persistent workers and brings every JPEG into the page cache; ours with one augmented batch, which loads
torchvision's kernels). The timed epochs of the loaders are interleaved (authors, ours, ours-on-CPU, then
again), so that a noisy shared machine slows them alike; the ratio ours/authors is of warm epochs measured
in the same run. The first batch of every loader is checked: shape (B, 3, size, size), float32, values in
[-1, 1] after normalisation.

Input: a CelebA-format folder (`--root`, images in img_align_celeba/) and optionally a split CSV with an
image_id column (`--split`; default: every .jpg of the folder, first `--images` of them). Without `--root`
it renders `--images` tinyfaces images at `--image-size` px into a temporary folder (or into `--world DIR`,
kept and reused by later runs), so it runs with no data. Run from the repository root:

    .venv/bin/python benchmarks/loader_throughput.py                      # 4000 images, 64 px -> 32 px
    .venv/bin/python benchmarks/loader_throughput.py --size 64            # 64 px -> 64 px
    .venv/bin/python benchmarks/loader_throughput.py --image-size 224 --size 224 --images 2000
    .venv/bin/python benchmarks/loader_throughput.py --root data/celeba --split work/splits/train.csv \\
        --size 224 --scale 0.08 1.0 --json docs/loader_throughput.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from aimfair.config import WorldConfig
from aimfair.core.device import resolve_device
from aimfair.data.cache import decoded_images
from aimfair.data.celeba import celeba_image_dir
from aimfair.data.loading import NORMALIZE_MEAN, NORMALIZE_STD, BatchAugment, BatchLoader, ImageSet
from aimfair.data.tinyfaces import write_world

# ----------------------------------------------------------------------------- the authors' style


class PILImageDataset(Dataset):
    """One JPEG per item, opened with PIL and transformed on its own, as the authors' training code does."""

    def __init__(self, paths: list[Path], y: np.ndarray, s: np.ndarray, transform):
        self.paths, self.y, self.s, self.transform = paths, y, s, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        with Image.open(self.paths[i]) as im:
            x = self.transform(im.convert("RGB"))
        return x, int(self.y[i]), int(self.s[i])


def authors_transform(size: int, scale: tuple[float, float]) -> v2.Compose:
    return v2.Compose([
        v2.RandomResizedCrop(size, scale=scale, antialias=True),
        v2.RandomHorizontalFlip(),
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(NORMALIZE_MEAN, NORMALIZE_STD),
    ])


def authors_loader(paths, y, s, size, scale, batch_size, workers, device) -> DataLoader:
    dataset = PILImageDataset(paths, y, s, authors_transform(size, scale))
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                      pin_memory=device.type == "cuda", persistent_workers=workers > 0, drop_last=False)


# ----------------------------------------------------------------------------- timing


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def run_epoch(loader, device: torch.device) -> tuple[int, float, torch.Tensor]:
    """Iterate one epoch, moving each batch to `device`; return (images, seconds, first batch)."""
    synchronize(device)
    start = time.perf_counter()
    n, first = 0, None
    for x, y, s in loader:
        x = x.to(device, non_blocking=True)  # a no-op for ours, whose batches are already there
        y, s = y.to(device, non_blocking=True), s.to(device, non_blocking=True)
        n += x.shape[0]
        if first is None:
            first = x
    synchronize(device)
    return n, time.perf_counter() - start, first


def check_batch(name: str, x: torch.Tensor, batch_size: int, size: int, device: torch.device) -> dict:
    """Sanity check of a first batch: shape, dtype, device and the range after Normalize(0.5, 0.5)."""
    lo, hi = float(x.min()), float(x.max())
    problems = []  # (the first batch is full unless the whole list is smaller than a batch)
    if x.ndim != 4 or tuple(x.shape[1:]) != (3, size, size) or x.shape[0] != batch_size:
        problems.append(f"shape {tuple(x.shape)} != ({batch_size}, 3, {size}, {size})")
    if x.dtype != torch.float32:
        problems.append(f"dtype {x.dtype}")
    if x.device.type != device.type:
        problems.append(f"on {x.device}, expected {device}")
    if lo < -1 - 1e-4 or hi > 1 + 1e-4:
        problems.append(f"values in [{lo:.3f}, {hi:.3f}], outside [-1, 1]")
    if not (lo < 0 < hi):
        problems.append(f"values in [{lo:.3f}, {hi:.3f}]: not normalised to both sides of 0")
    if problems:
        sys.exit(f"{name}: bad first batch: " + "; ".join(problems))
    return dict(shape=list(x.shape), min=round(lo, 4), max=round(hi, 4), mean=round(float(x.mean()), 4))


# ----------------------------------------------------------------------------- input


def image_list(args, scratch: Path) -> tuple[list[Path], np.ndarray, np.ndarray, str]:
    """The images both loaders read, with y and s when the split has them (zeros otherwise)."""
    if args.root is None:
        world = Path(args.world) if args.world else scratch / "world"
        t0 = time.perf_counter()
        write_world(world, WorldConfig(n_images=args.images, image_size=args.image_size), workers=args.workers,
                    progress=False)
        print(f"tinyfaces world: {args.images} images at {args.image_size} px in {world} "
              f"({time.perf_counter() - t0:.1f} s to render or reuse)", flush=True)
        root, source = world, f"tinyfaces, {args.images} images rendered at {args.image_size} px"
    else:
        root, source = Path(args.root), f"{args.root}"
    image_dir = celeba_image_dir(root)
    if args.split:
        frame = pd.read_csv(args.split)
        if "image_id" not in frame.columns:
            sys.exit(f"{args.split} has no image_id column")
        source += f", split {args.split}"
    else:
        frame = pd.DataFrame({"image_id": sorted(p.name for p in image_dir.glob("*.jpg"))})
    if args.images and len(frame) > args.images:
        frame = frame.iloc[:args.images]
    if frame.empty:
        sys.exit(f"no images found in {image_dir}")
    y = frame["y"].to_numpy(np.int64) if "y" in frame.columns else np.zeros(len(frame), np.int64)
    s = frame["s"].to_numpy(np.int64) if "s" in frame.columns else np.zeros(len(frame), np.int64)
    return [image_dir / i for i in frame["image_id"]], y, s, source


# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", help="CelebA-format folder (images in img_align_celeba/); "
                                       "default: render a tinyfaces world")
    parser.add_argument("--split", help="CSV with an image_id column (y and s used when present)")
    parser.add_argument("--images", type=int, default=4000, help="images to render, or at most to use (0: all)")
    parser.add_argument("--image-size", type=int, default=64, help="px of the rendered tinyfaces images")
    parser.add_argument("--world", help="render the tinyfaces world here and keep it (reused when it matches)")
    parser.add_argument("--size", type=int, default=32, help="input size of the network, px")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (authors' loader)")
    parser.add_argument("--epochs", type=int, default=2, help="timed steady-state epochs per loader")
    parser.add_argument("--scale", type=float, nargs=2, default=(0.6, 1.0), help="RandomResizedCrop scale")
    parser.add_argument("--device", default="auto", help="auto (cuda, mps, cpu) or a torch device")
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args()
    device = resolve_device(args.device)
    scale = tuple(args.scale)

    with tempfile.TemporaryDirectory(prefix="loader_throughput_") as scratch:
        scratch = Path(scratch)
        paths, y, s, source = image_list(args, scratch)
        n = len(paths)
        first_batch = min(args.batch_size, n)
        print(f"{n} images -> {args.size} px, scale {scale}, batch {args.batch_size}, {args.workers} workers, "
              f"device {device}, torch {torch.__version__}, {os.cpu_count()} CPU cores", flush=True)

        # authors': warm up with one full epoch (starts the persistent workers, reads every file once)
        authors = authors_loader(paths, y, s, args.size, scale, args.batch_size, args.workers, device)
        count, seconds, first = run_epoch(authors, device)
        checks = {"authors": check_batch("authors", first, first_batch, args.size, device)}
        print(f"authors warm-up epoch: {count / seconds:,.0f} img/s", flush=True)

        # ours, cold: warm up the kernels on a dummy batch, then cache build + first epoch, timed together
        augment = BatchAugment(args.size, scale=scale, seed=0)
        synchronize(device)
        augment(torch.zeros(2, 3, args.size, args.size, dtype=torch.uint8, device=device))
        synchronize(device)
        start = time.perf_counter()
        decoded = decoded_images(paths, args.size, scratch / "cache", bad_images="fail", workers=args.workers,
                                 progress=False)
        images = ImageSet(pixels=decoded.pixels, y=y, s=s, image_ids=[p.name for p in paths])
        build_seconds = time.perf_counter() - start
        ours = BatchLoader(images, args.batch_size, device, augment=augment, shuffle=True, seed=0)
        count, epoch_seconds, first = run_epoch(ours, device)
        if count != n:
            sys.exit(f"ours iterated {count} images, the list has {n}")
        cold_seconds = build_seconds + epoch_seconds
        checks["ours"] = check_batch("ours", first, first_batch, args.size, device)
        print(f"ours cold epoch (cache build {build_seconds:.1f} s + epoch {epoch_seconds:.1f} s): "
              f"{n / cold_seconds:,.0f} img/s", flush=True)

        loaders = {"authors": authors, "ours": ours}
        # the same loader with the other crop backend: one call of roi_align for the whole batch, which
        # "auto" uses on accelerators (on the CPU "auto" crops each image with resized_crop on uint8)
        other = "resized_crop" if device.type != "cpu" else "roi_align"
        loaders[f"ours_{other}"] = BatchLoader(images, args.batch_size, device, shuffle=True, seed=0,
                                               augment=BatchAugment(args.size, scale=scale, seed=0, backend=other))
        run_epoch(loaders[f"ours_{other}"], device)  # its warm-up
        if device.type != "cpu":
            cpu = torch.device("cpu")
            cpu_loader = BatchLoader(images, args.batch_size, cpu,
                                     augment=BatchAugment(args.size, scale=scale, seed=0), shuffle=True, seed=0)
            count, _, first = run_epoch(cpu_loader, cpu)  # its warm-up
            checks["ours_cpu"] = check_batch("ours on the CPU", first, first_batch, args.size, cpu)
            loaders["ours_cpu"] = cpu_loader

        # steady state, interleaved
        times: dict[str, list[float]] = {k: [] for k in loaders}
        for epoch in range(args.epochs):
            for name, loader in loaders.items():
                on = torch.device("cpu") if name == "ours_cpu" else device
                count, seconds, _ = run_epoch(loader, on)
                if count != n:
                    sys.exit(f"{name} iterated {count} images, the list has {n}")
                times[name].append(seconds)
            print(f"epoch {epoch + 1}/{args.epochs}: " +
                  ", ".join(f"{k} {n / v[-1]:,.0f} img/s" for k, v in times.items()), flush=True)
        del authors, loaders  # stops the workers before the temporary folder goes

    labels = {"authors": f"authors: PIL + per-image transforms, DataLoader({args.workers} workers)",
              "ours": f"ours: BatchLoader + BatchAugment on {device.type}, warm",
              "ours_cpu": "ours: BatchLoader + BatchAugment on cpu, warm",
              "ours_roi_align": f"ours, crops by roi_align on {device.type}, warm",
              "ours_resized_crop": f"ours, crops by per-image resized_crop on {device.type}, warm"}
    rows = [dict(loader="authors", label=labels["authors"], images_per_s=n * len(times["authors"]) /
                 sum(times["authors"]), epoch_seconds=times["authors"])]
    rows.append(dict(loader="ours_cold", label=f"ours: cold (cache build + first epoch, {device.type})",
                     images_per_s=n / cold_seconds, epoch_seconds=[cold_seconds],
                     cache_build_seconds=round(build_seconds, 3)))
    for name in ("ours", "ours_roi_align", "ours_resized_crop", "ours_cpu"):
        if name in times:
            rows.append(dict(loader=name, label=labels[name], images_per_s=n * len(times[name]) / sum(times[name]),
                             epoch_seconds=times[name]))
    authors_rate = rows[0]["images_per_s"]
    for r in rows:
        r["vs_authors"] = r["images_per_s"] / authors_rate
        r["images_per_s"] = round(r["images_per_s"], 1)
        r["vs_authors"] = round(r["vs_authors"], 2)
        r["epoch_seconds"] = [round(t, 3) for t in r["epoch_seconds"]]
    # a per-epoch ratio too: each pair of epochs ran back to back, so it is the least affected by noise
    pair_ratios = [a / o for a, o in zip(times["authors"], times["ours"])]
    ratio = rows[[r["loader"] for r in rows].index("ours")]["vs_authors"]

    print()
    print(f"{'loader':<62} {'img/s':>9} {'x authors':>10}")
    for r in rows:
        print(f"{r['label']:<62} {r['images_per_s']:>9,.0f} {r['vs_authors']:>9.2f}x")
    print(f"steady state ours/authors: {ratio:.2f}x (per epoch pair: "
          f"{', '.join(f'{p:.2f}' for p in pair_ratios)}; median {statistics.median(pair_ratios):.2f})")

    if args.json:
        result = dict(
            machine=dict(cpus=os.cpu_count(), python=platform.python_version(), torch=torch.__version__,
                         device=str(device),
                         gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else None),
            settings=dict(source=source, images=n, size=args.size, scale=list(scale), batch_size=args.batch_size,
                          workers=args.workers, epochs=args.epochs),
            results=rows, ratio_ours_over_authors=ratio,
            epoch_pair_ratios=[round(p, 2) for p in pair_ratios], first_batches=checks)
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

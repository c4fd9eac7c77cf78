"""The generation runner: a synthetic pool per group, resumable, identical whatever the batching.

The pool is a job list: image i of group g uses prompt i mod P (P prompts per group) as its k-th image,
k = i div P, with a seed hashed from (base seed, group, prompt index, k). Jobs are cut into work batches
of `generate.batch_size` in job order, the unit of resuming, and processes take whole batches
(accelerate's split_between_processes). The generator computes `info.batch` images at a time whatever it
is handed (aimfair.csdg.generators.base), so the pool is the same for any work batch and for 1 process
or 8, in float32 and in bfloat16 (tests/test_generate_processes.py).

Each image is a PNG written atomically, carrying its own record (prompt, seed, model, sampler...) in a
text chunk. A restarted run reads the records and generates only what is missing or stale, so killing a
run never leaves half-written files or duplicates. `manifest.csv` is written last, by the main process.

Folder layout: `{y}_{s}/{prompt index:03d}_{k:04d}.png`, `manifest.csv`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from PIL import Image, PngImagePlugin

from aimfair.core import io
from aimfair.core.errors import AimfairError
from aimfair.core.groups import GROUPS, parse_group_key
from aimfair.csdg.generators.base import Generator, GeneratorInfo
from aimfair.data.splits import group_quotas

MANIFEST = "manifest.csv"
RECORD_KEY = "aimfair"  # PNG text chunk holding the image's record
_IMAGE_NAME = re.compile(r"(\d{3,})_(\d{4,})\.png")


@dataclass(frozen=True)
class Job:
    """One image of the pool."""

    group: str
    prompt_index: int
    k: int  # the k-th image from this prompt
    prompt: str
    seed: int
    source: str = ""  # an image to edit (SDEdit) instead of starting from noise: its id in the real data

    @property
    def path(self) -> str:
        return f"{self.group}/{self.prompt_index:03d}_{self.k:04d}.png"


def image_seed(base_seed: int, group: str, prompt_index: int, k: int) -> int:
    """A 63-bit seed for one image, from a hash: independent of batch size, order and process count."""
    digest = hashlib.sha256(f"{base_seed}|{group}|{prompt_index}|{k}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def pool_sizes(balanced_per_group: int, biased_size: int, biased_skew: str, val_per_group: int = 0) -> dict[str, int]:
    """Images per group: the most that the balanced set (D_S2) and the biased set (D_S1) draw from it, and
    after those the synthetic validation set's."""
    biased = group_quotas(biased_skew, biased_size)
    return {g: max(balanced_per_group, biased[g]) + val_per_group for g in GROUPS}


def plan_jobs(prompts: Mapping[str, Sequence[str]], sizes: Mapping[str, int], base_seed: int) -> list[Job]:
    """The pool's jobs, group by group, cycling through each group's prompts."""
    missing = [g for g in GROUPS if not prompts.get(g)]
    if missing:
        raise AimfairError(f"no prompts for group(s) {', '.join(missing)}: rerun the prompts stage")
    jobs = []
    for group in GROUPS:
        texts = prompts[group]
        for i in range(sizes[group]):
            p, k = i % len(texts), i // len(texts)
            jobs.append(Job(group, p, k, texts[p], image_seed(base_seed, group, p, k)))
    return jobs


def batches_of(jobs: Sequence[Job], batch_size: int) -> list[list[Job]]:
    """Fixed batches in job order: the unit of work (and of sharding across processes)."""
    return [list(jobs[i:i + batch_size]) for i in range(0, len(jobs), batch_size)]


def record(job: Job, info: GeneratorInfo) -> dict:
    """What the manifest (and the PNG's text chunk) says about one image."""
    y, s = parse_group_key(job.group)
    rec = dict(path=job.path, y=y, s=s, group=job.group, prompt_index=job.prompt_index, k=job.k,
               prompt=job.prompt, seed=job.seed, **info.as_dict())
    if job.source:
        rec["source"] = job.source
    return rec


# ----------------------------------------------------------------------------- the pool on disk


def read_record(path: Path) -> dict | None:
    """The record stored in one of our PNGs, or None if it has none; raises for unreadable files."""
    with Image.open(path) as img:
        img.load()  # decodes the pixels: a truncated or damaged file fails here
        text = getattr(img, "text", {}).get(RECORD_KEY)
    return json.loads(text) if text else None


def write_image(path: Path, pixels: np.ndarray, rec: dict) -> None:
    """One PNG, atomically, with its record; a full disk is a clear error and leaves no partial file."""
    meta = PngImagePlugin.PngInfo()
    meta.add_text(RECORD_KEY, json.dumps(rec, sort_keys=True))
    with io.atomic_path(path) as tmp:  # a full disk: io names the file, and the images written are kept
        Image.fromarray(pixels).save(tmp, format="PNG", pnginfo=meta)


def scan_pool(out: Path, jobs: Sequence[Job], info: GeneratorInfo) -> set[str]:
    """Paths (relative) of images already in the pool that match their job; clears what is stale.

    Temporary files of a killed run are removed; images of ours that no current job wants (the pool
    shrank, prompts changed) are removed too. Anything else is foreign: an error, since deleting a
    user's file would lose data and keeping it would pollute the pool.
    """
    wanted = {job.path: record(job, info) for job in jobs}
    done: set[str] = set()
    foreign: list[str] = []
    if not out.exists():
        return done
    for path in sorted(out.rglob("*")):
        rel = path.relative_to(out).as_posix()
        if path.is_dir():
            if path.parent != out or path.name not in GROUPS:
                foreign.append(rel + "/")
            continue
        if path.name.startswith(".") and path.name.endswith(".tmp"):
            path.unlink()  # a write that a killed run never finished
            continue
        if path.parent == out and path.name == MANIFEST:
            continue
        if path.parent == out or path.parent.name not in GROUPS or not _IMAGE_NAME.fullmatch(path.name):
            foreign.append(rel)
            continue
        try:
            existing = read_record(path)
        except (OSError, SyntaxError, ValueError) as e:
            raise AimfairError(f"{path} is damaged ({e}): delete it and run again to regenerate it") from None
        if existing is None:
            foreign.append(rel)
        elif wanted.get(rel) == existing:
            done.add(rel)
        elif rel not in wanted:
            path.unlink()  # ours, but no longer part of the pool
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise AimfairError(f"the pool folder {out} holds files that the generator did not write: {shown}; "
                           "move them elsewhere (the pool folder is managed by aimfair) and run again")
    return done


def write_manifest(out: Path, jobs: Sequence[Job], info: GeneratorInfo) -> pd.DataFrame:
    """manifest.csv: one row per image (path, y, s, prompt, seed, model, revision, sampler, ...)."""
    frame = pd.DataFrame([record(job, info) for job in jobs])
    io.write_csv(out / MANIFEST, frame)
    return frame


# ----------------------------------------------------------------------------- running


@dataclass
class PoolRun:
    """What a run did: images generated now, images found already done, the manifest."""

    generated: int
    reused: int
    manifest: pd.DataFrame | None  # None on processes other than the main one


def generate_pool(generator: Generator, jobs: Sequence[Job], out: str | os.PathLike, batch_size: int,
                  progress: bool = True, state=None) -> PoolRun:
    """Generate every job's image into `out`, skipping those already there; write the manifest.

    `state` is an accelerate PartialState when several processes share the work (one per GPU, or CPU
    processes): each takes a contiguous share of the batches. Without it the run is single-process.
    """
    out = Path(out)
    main = state is None or state.is_main_process
    # one launch writes a folder at a time: its main process locks it (its other processes share the work)
    out.mkdir(parents=True, exist_ok=True)
    with io.exclusive(out, f"the image folder {out}") if main else nullcontext():
        return _generate_pool(generator, jobs, out, batch_size, progress, state)


def _generate_pool(generator: Generator, jobs: Sequence[Job], out: Path, batch_size: int, progress: bool,
                   state) -> PoolRun:
    info = generator.info
    main = state is None or state.is_main_process
    # every process scans (read-only checks are cheap); only the main one deletes stale files, first
    done = scan_pool(out, jobs, info) if main else set()
    if state is not None:
        state.wait_for_everyone()
        if not main:
            done = scan_pool(out, jobs, info)
    todo = [b for b in batches_of(jobs, batch_size) if any(job.path not in done for job in b)]
    for group in GROUPS:
        (out / group).mkdir(parents=True, exist_ok=True)
    if state is None:
        generated = _generate_batches(generator, todo, done, out, progress)
    else:
        with state.split_between_processes(todo) as mine:  # a contiguous share of the batches each
            generated = _generate_batches(generator, mine, done, out, progress and main)
        state.wait_for_everyone()
    manifest = write_manifest(out, jobs, info) if main else None
    return PoolRun(generated=generated, reused=len(done), manifest=manifest)


def _generate_batches(generator: Generator, batches: Sequence[list[Job]], done: set[str], out: Path,
                      progress: bool) -> int:
    """Generate the given batches and write the images not already done; returns how many were written."""
    from tqdm import tqdm

    info = generator.info
    bar = tqdm(total=sum(len(b) for b in batches), desc="generate pool", unit="img", disable=not progress)
    generated = 0
    for batch in batches:
        # the whole batch is recomputed, so that its images match an uninterrupted run's exactly
        prompts, seeds = [job.prompt for job in batch], [job.seed for job in batch]
        if batch[0].source:  # a batch of edits (aimfair.csdg.repair): the generator is a SourceEditor
            images = generator.edit_sources([job.source for job in batch], prompts, seeds)
        else:
            images = generator.generate(prompts, seeds)
        expected = (len(batch), info.resolution, info.resolution, 3)
        if images.shape != expected or images.dtype != np.uint8:
            raise RuntimeError(f"the generator returned {images.shape} {images.dtype}, expected {expected} uint8")
        for job, pixels in zip(batch, images):
            if job.path not in done:
                write_image(out / job.path, pixels, record(job, info))
                generated += 1
        bar.update(len(batch))
    bar.close()
    return generated


def read_manifest(out: str | os.PathLike) -> pd.DataFrame:
    """The pool's manifest; a clear error if the pool was never completed."""
    path = Path(out) / MANIFEST
    if not path.exists():
        raise AimfairError(f"{path} does not exist: the pool is incomplete; run the generate stage (dvc repro)")
    return pd.read_csv(path, keep_default_na=False)


def load_pool_images(out: str | os.PathLike, manifest: pd.DataFrame) -> np.ndarray:
    """The pool's images as uint8 (N, H, W, 3), in manifest order."""
    out = Path(out)
    return np.stack([np.asarray(Image.open(out / p).convert("RGB")) for p in manifest["path"]])

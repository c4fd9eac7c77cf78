"""The built-in text-to-image model trained on a dataset's own images (generator.corpus: dataset), end to end at
toy size. The built-in world's "photo" renders stand in for a real dataset: they are written in CelebA's format,
so the pool, the captions, the training and the sampling run exactly as they do on CelebA."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aimfair.config import WorldConfig, parse_params
from aimfair.core import paths
from aimfair.core.errors import AimfairError
from aimfair.core.groups import GROUPS
from aimfair.data.generator_pool import POOL_FILE
from aimfair.data.tinyfaces import write_world

pytestmark = pytest.mark.slow

TOY = {
    "data": {"dataset": "tinyfaces", "root": "world", "n_train": 60, "bias_degree": "1/3"},
    "generator": {"corpus": "dataset", "pool_per_group": 16, "resolution": 16, "steps": 3, "warmup": 1,
                  "batch_size": 8, "threads": 1},
    "generate": {"steps": 2, "batch_size": 4, "device": "cpu"},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, object]:
    from aimfair.pipeline.data import run_data
    from aimfair.pipeline.dataset_generator import run_dataset_generator

    root = tmp_path_factory.mktemp("dataset_generator")
    write_world(root / "world", WorldConfig(n_images=600, image_size=32), workers=1, progress=False)
    params = parse_params(TOY)
    run_data(params, root)
    run_dataset_generator(params, root, progress=False)
    return root, params


def test_the_data_stage_writes_a_pool_outside_every_split(trained):
    root, _ = trained
    pool = pd.read_csv(root / paths.SPLITS / POOL_FILE, dtype={"image_id": str})
    used = set().union(*(set(pd.read_csv(root / paths.SPLITS / f"{n}.csv", dtype={"image_id": str})["image_id"])
                         for n in ("train", "val", "test")))
    assert len(pool) > 0 and not used & set(pool["image_id"])


def test_the_model_learns_a_balanced_captioned_corpus_and_records_what_it_was_trained_for(trained):
    root, _ = trained
    folder = root / paths.DATASET_GENERATOR
    meta = json.loads((folder / "config.json").read_text())
    assert (meta["dataset"], meta["corpus"], meta["resolution"], meta["model"]["resolution"]) == ("tinyfaces",
                                                                                                  "dataset", 16, 16)
    corpus = pd.read_csv(folder / "corpus.csv")
    assert (corpus["y"].astype(str) + "_" + corpus["s"].astype(str)).value_counts().to_dict() == {g: 16 for g in GROUPS}
    assert corpus["caption"].str.endswith(".").all() and len(pd.read_csv(folder / "train_log.csv")) == 3
    assert not (root / paths.GENERATOR).exists()  # never where the committed studio model lives


def test_the_generate_stage_draws_with_it(trained):
    from aimfair.csdg.generation import build_generator

    root, params = trained
    images = build_generator(params, root, device="cpu").generate(["A photo of the face of a smiling man."] * 2, [1, 2])
    assert images.shape == (2, 16, 16, 3) and images.dtype == np.uint8


def test_a_pool_too_small_to_learn_from_is_refused_by_the_data_stage(tmp_path):
    from aimfair.pipeline.data import run_data

    write_world(tmp_path / "world", WorldConfig(n_images=200, image_size=32), workers=1, progress=False)
    params = parse_params(TOY)  # 140 train-partition images less a 60-image split: under 50 per group
    with pytest.raises(AimfairError, match="generator pool.*too small to train on"):
        run_data(params, tmp_path)


def test_the_generator_also_learns_at_64_px(tmp_path):
    from aimfair.csdg.generation import build_generator
    from aimfair.pipeline.data import run_data
    from aimfair.pipeline.dataset_generator import run_dataset_generator

    write_world(tmp_path / "world", WorldConfig(n_images=600, image_size=64), workers=1, progress=False)
    params = parse_params({**TOY, "generator": {**TOY["generator"], "resolution": 64, "steps": 2}})
    run_data(params, tmp_path)
    run_dataset_generator(params, tmp_path, progress=False)
    images = build_generator(params, tmp_path, device="cpu").generate(["A headshot of a young woman."], [3])
    assert images.shape == (1, 64, 64, 3)

"""The built-in world: CelebA format, determinism, worker independence, styles and captions."""

import numpy as np
import pytest
from PIL import Image

from aimfair.data.celeba import read_celeba
from aimfair.data.splits import make_split
from aimfair.data.tinyfaces import (
    ATTRIBUTES, WorldConfig, caption, render, sample_attributes, write_world,
)
from aimfair.errors import AimfairError

SMALL = WorldConfig(n_images=40, image_size=32)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return write_world(tmp_path_factory.mktemp("world"), SMALL, workers=2, progress=False)


def _pixels(root, n):
    return np.stack([np.asarray(Image.open(root / "img_align_celeba" / f"{i + 1:06d}.jpg")) for i in range(n)])


def test_world_is_written_in_celeba_format_and_read_by_the_celeba_reader(world):
    frame = read_celeba(world)
    assert len(frame) == 40 and list(frame["image_id"][:2]) == ["000001.jpg", "000002.jpg"]
    assert set(ATTRIBUTES) <= set(frame.columns)
    assert set(np.unique(frame[list(ATTRIBUTES)].to_numpy())) <= {-1, 1}
    # 70/10/20 partitions by id, like CelebA's id ranges
    assert frame["partition"].tolist() == [0] * 28 + [1] * 4 + [2] * 8
    assert Image.open(world / "img_align_celeba" / "000001.jpg").size == (32, 32)


def test_world_does_not_depend_on_the_number_of_workers(world, tmp_path):
    single = write_world(tmp_path / "one", SMALL, workers=1, progress=False)
    assert (single / "list_attr_celeba.txt").read_bytes() == (world / "list_attr_celeba.txt").read_bytes()
    assert np.array_equal(_pixels(single, 40), _pixels(world, 40))


def test_another_seed_gives_another_world(world, tmp_path):
    other = write_world(tmp_path / "other", WorldConfig(seed=1, n_images=40, image_size=32), progress=False)
    assert (other / "list_attr_celeba.txt").read_bytes() != (world / "list_attr_celeba.txt").read_bytes()


def test_a_complete_world_is_not_rendered_again(world):
    stamp = (world / "img_align_celeba" / "000001.jpg").stat().st_mtime_ns
    write_world(world, SMALL, progress=False)
    assert (world / "img_align_celeba" / "000001.jpg").stat().st_mtime_ns == stamp


def test_the_smile_is_the_mouth_lift_within_the_configured_ranges():
    cfg = WorldConfig()
    for i in range(300):
        a = sample_attributes(np.random.default_rng([0, i, 0]), cfg)
        if a["Smiling"]:
            assert cfg.smile_amplitude[0] <= a["mouth_lift"] <= cfg.smile_amplitude[1]
        else:
            assert abs(a["mouth_lift"]) <= cfg.neutral_amplitude


def test_studio_style_is_clean_and_differs_from_photo():
    a = sample_attributes(np.random.default_rng(3), WorldConfig())
    photo = np.asarray(render(a, "photo", 64, np.random.default_rng(0)), dtype=float)
    studio = np.asarray(render(a, "studio", 64, np.random.default_rng(0)), dtype=float)
    assert np.abs(photo - studio).mean() > 5
    # a flat background corner: no sensor noise in the studio style
    assert studio[:6, :6].std(axis=(0, 1)).max() < 1.0 < photo[:6, :6].std(axis=(0, 1)).max()
    with pytest.raises(AimfairError, match="style"):
        render(a, "painting", 64, np.random.default_rng(0))


def test_captions_name_the_group():
    rng = np.random.default_rng(0)
    for i in range(50):
        a = sample_attributes(np.random.default_rng([1, i, 0]), WorldConfig())
        text = caption(a, rng).lower()
        assert ("woman" in text or "lady" in text) != bool(a["Male"])
        smiling_words = ("smiling" in text and "not smiling" not in text) or "smile" in text or "happy" in text
        assert smiling_words == bool(a["Smiling"]), text


def test_split_of_a_rendered_world(world):
    splits = make_split("tinyfaces", world, "Smiling", "Male", "1", 8)
    assert len(splits["train"]) == 8 and len(splits["val"]) == 4 and len(splits["test"]) == 8
    assert (splits["train"].groupby(["y", "s"]).size() == 2).all()

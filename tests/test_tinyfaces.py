"""The built-in world: CelebA format, determinism, worker independence, styles and captions."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from aimfair.config import WorldConfig
from aimfair.core.errors import AimfairError
from aimfair.data.celeba import read_celeba
from aimfair.data.splits import make_split
from aimfair.data.tinyfaces import ATTRIBUTES, caption, image_name, partition_of, render, sample_attributes, write_world

SMALL = WorldConfig(n_images=40, image_size=32)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return write_world(tmp_path_factory.mktemp("world"), SMALL, workers=2, progress=False)


def _pixels(root, n):
    return np.stack([np.asarray(Image.open(root / "img_align_celeba" / image_name(i))) for i in range(n)])


def _attr_lines(root):
    return (root / "list_attr_celeba.txt").read_text().splitlines()


# ----------------------------------------------------------------------------- format


def test_world_is_written_in_celeba_format_and_read_by_the_celeba_reader(world):
    frame = read_celeba(world)
    assert len(frame) == 40
    assert frame["image_id"].tolist() == [f"{i:06d}.jpg" for i in range(1, 41)]
    assert {"Smiling", "Male", "Young"} <= set(ATTRIBUTES) <= set(frame.columns)
    values = frame[list(ATTRIBUTES)].to_numpy()
    assert set(np.unique(values)) == {-1, 1}
    # both values of the attributes that matter occur even in 40 images
    for name in ("Smiling", "Male", "Young"):
        assert set(frame[name]) == {-1, 1}, name
    # 70/10/20 partitions by id range, like CelebA's
    assert frame["partition"].tolist() == [0] * 28 + [1] * 4 + [2] * 8
    assert frame["partition"].tolist() == [partition_of(i, SMALL) for i in range(40)]
    # the header line holds the image count, as in the official file
    assert _attr_lines(world)[0] == "40"
    with Image.open(world / "img_align_celeba" / "000001.jpg") as im:
        assert im.size == (32, 32) and im.format == "JPEG" and im.mode == "RGB"
    assert json.loads((world / "world.json").read_text())["n_images"] == 40


def test_partition_follows_the_configured_fractions():
    cfg = WorldConfig(n_images=20, partition=(0.5, 0.25, 0.25))
    assert [partition_of(i, cfg) for i in range(20)] == [0] * 10 + [1] * 5 + [2] * 5


def test_attribute_table_agrees_with_the_mouth_that_was_drawn(world):
    frame = read_celeba(world)
    meta = pd.read_csv(world / "tinyfaces_meta.csv")
    assert meta["image_id"].tolist() == frame["image_id"].tolist()
    smiling = frame["Smiling"].to_numpy() == 1
    lift = meta["mouth_lift"].to_numpy()
    lo, hi = SMALL.smile_amplitude
    assert smiling.any() and (~smiling).any()
    assert ((lift[smiling] >= lo - 1e-3) & (lift[smiling] <= hi + 1e-3)).all()
    assert (np.abs(lift[~smiling]) <= SMALL.neutral_amplitude + 1e-3).all()


# ----------------------------------------------------------------------------- determinism


def test_same_seed_gives_the_same_world(world, tmp_path):
    again = write_world(tmp_path / "again", SMALL, workers=2, progress=False)
    assert (again / "list_attr_celeba.txt").read_bytes() == (world / "list_attr_celeba.txt").read_bytes()
    assert (again / "list_eval_partition.txt").read_bytes() == (world / "list_eval_partition.txt").read_bytes()
    assert np.array_equal(_pixels(again, 40), _pixels(world, 40))


def test_world_does_not_depend_on_the_number_of_workers(tmp_path):
    # more than one chunk of 250 images, so that two workers really render different parts
    cfg = WorldConfig(n_images=260, image_size=16)
    one = write_world(tmp_path / "one", cfg, workers=1, progress=False)
    two = write_world(tmp_path / "two", cfg, workers=2, progress=False)
    for name in ("list_attr_celeba.txt", "list_eval_partition.txt", "tinyfaces_meta.csv"):
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
    assert np.array_equal(_pixels(one, 260), _pixels(two, 260))


def test_each_image_has_its_own_seed(world, tmp_path):
    # a bigger world with the same seed starts with the same 40 faces: image i depends only on (seed, i)
    bigger = write_world(tmp_path / "bigger", WorldConfig(n_images=48, image_size=32), workers=1, progress=False)
    assert _attr_lines(bigger)[2:42] == _attr_lines(world)[2:]
    assert np.array_equal(_pixels(bigger, 40), _pixels(world, 40))


def test_another_seed_gives_another_world(world, tmp_path):
    other = write_world(tmp_path / "other", WorldConfig(seed=1, n_images=40, image_size=32), progress=False)
    assert (other / "list_attr_celeba.txt").read_bytes() != (world / "list_attr_celeba.txt").read_bytes()
    assert not np.array_equal(_pixels(other, 40), _pixels(world, 40))


def test_a_complete_world_is_not_rendered_again(world):
    files = [world / "img_align_celeba" / "000001.jpg", world / "list_attr_celeba.txt", world / "world.json"]
    stamps = [f.stat().st_mtime_ns for f in files]
    assert write_world(world, SMALL, progress=False) == world
    assert [f.stat().st_mtime_ns for f in files] == stamps


def test_a_changed_config_renders_the_world_again(tmp_path):
    write_world(tmp_path, WorldConfig(n_images=8, image_size=16), workers=1, progress=False)
    with Image.open(tmp_path / "img_align_celeba" / "000001.jpg") as im:
        assert im.size == (16, 16)
    write_world(tmp_path, WorldConfig(n_images=8, image_size=24), workers=1, progress=False)
    with Image.open(tmp_path / "img_align_celeba" / "000001.jpg") as im:
        assert im.size == (24, 24)
    assert json.loads((tmp_path / "world.json").read_text())["image_size"] == 24


@pytest.mark.parametrize("changes, message", [
    (dict(n_images=4), "n_images must be at least 8"),
    (dict(partition=(0.5, 0.5, 0.5)), "partition must be three shares that sum to 1"),
    (dict(smile_amplitude=(6.0, 3.0)), "smile_amplitude must be"),
    (dict(p_male=1.5), "p_male must be a probability"),
])
def test_impossible_configs_are_refused(changes, message):
    with pytest.raises(AimfairError, match=f"data.tinyfaces: {message}"):
        WorldConfig(**changes)


# ----------------------------------------------------------------------------- attributes, styles, captions


def test_the_smile_is_the_mouth_lift_within_the_configured_ranges():
    cfg = WorldConfig(smile_amplitude=(5.0, 9.0), neutral_amplitude=1.5)
    smiles = 0
    for i in range(300):
        a = sample_attributes(np.random.default_rng([0, i, 0]), cfg)
        assert a["Smiling"] in (0.0, 1.0)
        if a["Smiling"]:
            smiles += 1
            assert 5.0 <= a["mouth_lift"] <= 9.0
        else:
            assert abs(a["mouth_lift"]) <= 1.5
    assert 60 < smiles < 240  # both kinds are drawn


def test_attribute_probabilities_are_the_configured_ones():
    cfg = WorldConfig(p_male=0.0, p_smile_female=1.0)
    for i in range(50):
        a = sample_attributes(np.random.default_rng(i), cfg)
        assert a["Male"] == 0.0 and a["Smiling"] == 1.0 and a["No_Beard"] == 1.0


def test_studio_style_is_clean_and_differs_from_photo():
    a = sample_attributes(np.random.default_rng(3), WorldConfig())
    photo = np.asarray(render(a, "photo", 64, np.random.default_rng(0)), dtype=float)
    studio = np.asarray(render(a, "studio", 64, np.random.default_rng(0)), dtype=float)
    assert photo.shape == studio.shape == (64, 64, 3)
    assert np.abs(photo - studio).mean() > 5
    # a flat background corner: no sensor noise in the studio style
    assert studio[:6, :6].std(axis=(0, 1)).max() < 1.0 < photo[:6, :6].std(axis=(0, 1)).max()
    # studio renders need no random draws: the same face whatever the generator
    again = np.asarray(render(a, "studio", 64, np.random.default_rng(99)), dtype=float)
    assert np.array_equal(studio, again)


def test_unknown_style_is_refused():
    a = sample_attributes(np.random.default_rng(3), WorldConfig())
    with pytest.raises(AimfairError, match="unknown tinyfaces style 'painting'"):
        render(a, "painting", 64, np.random.default_rng(0))


def test_captions_name_the_target_and_the_group():
    # read back with the validation every prompt goes through: names its group's values and no others
    from aimfair.csdg.prompts.validate import problem_with, values_named

    rng = np.random.default_rng(0)
    seen, texts = set(), set()
    for i in range(200):
        a = sample_attributes(np.random.default_rng([1, i, 0]), WorldConfig())
        text = caption(a, rng)
        group = f"{int(a['Smiling'])}_{int(a['Male'])}"
        assert problem_with(text, "Smiling", "Male", group) is None, text
        assert values_named(text, "Young") <= {int(a["Young"])}, text  # an age, when said, is right
        seen.add(group)
        texts.add(text)
        assert text.endswith(".")
    assert seen == {"0_0", "0_1", "1_0", "1_1"}
    assert len(texts) > 150  # varied wording and details


def test_split_of_a_rendered_world(tmp_path):
    root = write_world(tmp_path, WorldConfig(n_images=100, image_size=16), workers=2, progress=False)
    splits = make_split("tinyfaces", root, "Smiling", "Male", "1/9", 20)
    train = splits["train"]
    assert len(train) == 20 and len(splits["val"]) == 10 and len(splits["test"]) == 20
    # the paper's skew: minorities (0, 0) and (1, 1) get 5% each, majorities 45% each
    assert train.groupby(["y", "s"]).size().to_dict() == {(0, 0): 1, (0, 1): 9, (1, 0): 9, (1, 1): 1}
    labels = read_celeba(root).set_index("image_id")
    ids = train["image_id"]
    assert (labels.loc[ids, "partition"] == 0).all()
    assert ids.tolist() == sorted(ids)
    assert ((labels.loc[ids, "Smiling"].to_numpy() + 1) // 2 == train["y"].to_numpy()).all()
    assert ((labels.loc[ids, "Male"].to_numpy() + 1) // 2 == train["s"].to_numpy()).all()

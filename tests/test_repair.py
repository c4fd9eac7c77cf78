"""Data repairing: which images are edited into which group, SDEdit with the built-in model, the runner."""

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from aimfair.config import TinyConfig
from aimfair.core.errors import AimfairError
from aimfair.csdg.generators.tiny import TinyT2I, save_tiny
from aimfair.csdg.generators.tiny_sampling import load_tiny_generator
from aimfair.csdg.pool import generate_pool, read_manifest
from aimfair.csdg.repair import SourceEditor, plan_repairs

SMALL = TinyConfig(resolution=16, channels=(8, 16, 16), head_dim=8, max_tokens=16)
PROMPTS = {g: [f"a face of group {g}", f"another face of group {g}"] for g in ("0_0", "0_1", "1_0", "1_1")}


def _train(counts: dict[str, int]) -> pd.DataFrame:
    rows, i = [], 0
    for group, n in counts.items():
        y, s = map(int, group.split("_"))
        for _ in range(n):
            rows.append(dict(image_id=f"{i:06d}.jpg", y=y, s=s))
            i += 1
    return pd.DataFrame(rows)


def test_repairs_fill_every_group_up_to_the_largest_with_edits_of_the_other_protected_value():
    train = _train({"0_0": 1, "0_1": 5, "1_0": 4, "1_1": 2})
    jobs = plan_repairs(train, PROMPTS, base_seed=0)
    wanted = {"0_0": 4, "1_0": 1, "1_1": 3}
    assert {g: sum(j.group == g for j in jobs) for g in wanted} == wanted
    by_id = train.set_index("image_id")
    for job in jobs:
        y, s = map(int, job.group.split("_"))
        assert (by_id.loc[job.source, "y"], by_id.loc[job.source, "s"]) == (y, 1 - s)  # same target, other s
        assert job.prompt == PROMPTS[job.group][job.prompt_index]
    into_00 = [j.source for j in jobs if j.group == "0_0"]
    assert into_00 == sorted(into_00) and len(set(into_00)) == 4  # the first donors in id order, no repeats
    assert len({j.path for j in jobs}) == len(jobs) and len({j.seed for j in jobs}) == len(jobs)


def test_a_group_without_donors_is_a_clear_error():
    train = _train({"0_0": 3, "0_1": 3, "1_1": 1})  # no smiling women to turn into smiling men
    with pytest.raises(AimfairError, match=r"group 1_1 needs 2 repaired images but .*no image of group 1_0"):
        plan_repairs(train, PROMPTS, base_seed=0)


@pytest.fixture(scope="module")
def generator(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("t2i")
    save_tiny(TinyT2I(SMALL), folder)
    return load_tiny_generator(folder, steps=4, guidance=2.0, batch=3)


def test_an_edit_depends_on_its_image_prompt_and_seed_only_and_keeps_the_image_at_low_strength(generator):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    prompts, seeds = ["a smiling man"] * 4, [1, 2, 3, 4]
    edited = generator.edit(images, prompts, seeds, strength=0.5)
    assert edited.shape == (4, 16, 16, 3) and edited.dtype == np.uint8
    assert np.array_equal(generator.edit(images[2:3], prompts[2:3], seeds[2:3], 0.5)[0], edited[2])  # batch-free
    assert not np.array_equal(generator.edit(images[2:3], prompts[2:3], [99], 0.5)[0], edited[2])
    # a light edit stays closer to its source than one through the whole schedule
    source = np.stack([np.asarray(Image.fromarray(im).resize((16, 16), Image.BILINEAR)) for im in images]).astype(int)
    light = np.abs(generator.edit(images, prompts, seeds, 0.25).astype(int) - source).mean()
    full = np.abs(generator.edit(images, prompts, seeds, 1.0).astype(int) - source).mean()
    assert light < full
    with pytest.raises(AimfairError, match="strength must be in"):
        generator.edit(images, prompts, seeds, 0.0)


def test_the_runner_writes_repairs_with_their_source_and_resumes(generator, tmp_path):
    train = _train({"0_0": 1, "0_1": 3, "1_0": 3, "1_1": 1})
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    rng = np.random.default_rng(1)
    for image_id in train["image_id"]:
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(image_dir / image_id)
    editor = SourceEditor(generator, image_dir, strength=0.5, source_size=16)
    jobs = plan_repairs(train, PROMPTS, base_seed=0)
    out = tmp_path / "repaired"
    run = generate_pool(editor, jobs, out, batch_size=2, progress=False)
    manifest = read_manifest(out)
    assert run.generated == 4 and sorted(manifest["group"]) == ["0_0", "0_0", "1_1", "1_1"]
    assert set(manifest["source"]) <= set(train["image_id"]) and set(manifest["sampler"]) == {"ddim+sdedit0.5"}
    again = generate_pool(editor, jobs, out, batch_size=3, progress=False)
    assert (again.generated, again.reused) == (0, 4)

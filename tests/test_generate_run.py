"""The generation runner: job plan, hashed seeds, atomic resumable pool, manifest, bad pool folders."""

import dataclasses
import errno
import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aimfair.core.errors import AimfairError
from aimfair.core.groups import GROUPS
from aimfair.csdg.generators.base import GeneratorInfo
from aimfair.csdg.pool import MANIFEST, generate_pool, image_seed, plan_jobs, pool_sizes, read_manifest, read_record

PROMPTS = {g: [f"prompt {i} of group {g}" for i in range(3)] for g in GROUPS}


class HashGenerator:
    """A deterministic stand-in model: each image is noise seeded by (prompt, seed), so it is exactly
    reproducible and independent of batching; it counts the images it was asked for."""

    def __init__(self, resolution=8, fail_after=None):
        self.info = GeneratorInfo("hash", "r1", "none", 1, 1.0, resolution)
        self.calls, self.fail_after = 0, fail_after

    def generate(self, prompts, seeds):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt  # as if the run were killed between batches
        self.calls += len(prompts)
        r = self.info.resolution
        out = []
        for p, s in zip(prompts, seeds):
            key = int.from_bytes(hashlib.sha256(f"{p}|{s}".encode()).digest()[:8], "little")
            out.append(np.random.default_rng(key).integers(0, 256, (r, r, 3), dtype=np.uint8))
        return np.stack(out)


def pool_bytes(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


def test_image_seeds_are_hashed_per_image_and_stable():
    assert image_seed(0, "0_1", 2, 5) == image_seed(0, "0_1", 2, 5)
    seeds = {image_seed(0, g, p, k) for g in GROUPS for p in range(10) for k in range(10)}
    assert len(seeds) == 400 and all(0 <= s < 2**63 for s in seeds)
    assert image_seed(1, "0_1", 2, 5) != image_seed(0, "0_1", 2, 5)


def test_pool_size_is_the_larger_of_the_balanced_and_the_biased_draw():
    # D_S1 of 2,000 at 1/9: 100 / 900 / 900 / 100; D_S2: 500 per group
    assert pool_sizes(500, 2000, "1/9") == {"0_0": 500, "0_1": 900, "1_0": 900, "1_1": 500}
    assert pool_sizes(5000, 20000, "1/9") == {"0_0": 5000, "0_1": 9000, "1_0": 9000, "1_1": 5000}  # paper


def test_jobs_cycle_through_each_groups_prompts():
    jobs = plan_jobs(PROMPTS, {g: 7 for g in GROUPS}, base_seed=0)
    first = [j for j in jobs if j.group == "1_0"]
    assert [(j.prompt_index, j.k) for j in first] == [(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (2, 1), (0, 2)]
    assert first[4].prompt == PROMPTS["1_0"][1] and first[4].path == "1_0/001_0001.png"
    with pytest.raises(AimfairError, match="no prompts for group"):
        plan_jobs({**PROMPTS, "1_1": []}, {g: 2 for g in GROUPS}, 0)


def test_pool_has_group_folders_a_full_manifest_and_self_describing_pngs(tmp_path):
    jobs = plan_jobs(PROMPTS, {g: 4 for g in GROUPS}, base_seed=3)
    run = generate_pool(HashGenerator(), jobs, tmp_path, batch_size=5, progress=False)
    assert run.generated == 16 and run.reused == 0
    manifest = read_manifest(tmp_path)
    assert list(manifest.columns[:8]) == ["path", "y", "s", "group", "prompt_index", "k", "prompt", "seed"]
    assert {"model", "revision", "sampler", "steps", "guidance", "resolution"} <= set(manifest.columns)
    assert sorted(p.parent.name for p in tmp_path.rglob("*.png")) == sorted(GROUPS * 4)
    row = manifest.iloc[5]
    assert read_record(tmp_path / row["path"])["seed"] == row["seed"]
    assert (manifest["y"].astype(str) + "_" + manifest["s"].astype(str) == manifest["group"]).all()


def test_pool_does_not_depend_on_batch_size(tmp_path):
    jobs = plan_jobs(PROMPTS, {g: 5 for g in GROUPS}, base_seed=0)
    generate_pool(HashGenerator(), jobs, tmp_path / "a", batch_size=3, progress=False)
    generate_pool(HashGenerator(), jobs, tmp_path / "b", batch_size=8, progress=False)
    assert pool_bytes(tmp_path / "a") == pool_bytes(tmp_path / "b")


def test_a_killed_run_resumes_without_duplicates_or_half_files(tmp_path):
    jobs = plan_jobs(PROMPTS, {g: 6 for g in GROUPS}, base_seed=0)
    with pytest.raises(KeyboardInterrupt):
        generate_pool(HashGenerator(fail_after=10), jobs, tmp_path / "pool", batch_size=5, progress=False)
    written = list((tmp_path / "pool").rglob("*.png"))
    assert len(written) == 10 and not list((tmp_path / "pool").rglob("*.tmp"))
    assert not (tmp_path / "pool" / MANIFEST).exists()  # the manifest marks a complete pool

    again = HashGenerator()
    run = generate_pool(again, jobs, tmp_path / "pool", batch_size=5, progress=False)
    assert run.reused == 10 and run.generated == 14 and again.calls == 14
    generate_pool(HashGenerator(), jobs, tmp_path / "ref", batch_size=5, progress=False)
    assert pool_bytes(tmp_path / "pool") == pool_bytes(tmp_path / "ref")
    assert len(read_manifest(tmp_path / "pool")) == 24


def test_changed_settings_regenerate_stale_images_and_drop_unwanted_ones(tmp_path):
    jobs = plan_jobs(PROMPTS, {g: 6 for g in GROUPS}, base_seed=0)
    generate_pool(HashGenerator(), jobs, tmp_path, batch_size=4, progress=False)
    fewer = plan_jobs({g: [p + " edited" for p in v] for g, v in PROMPTS.items()}, {g: 4 for g in GROUPS}, 0)
    run = generate_pool(HashGenerator(), fewer, tmp_path, batch_size=4, progress=False)
    assert run.reused == 0 and run.generated == 16
    assert len(list(tmp_path.rglob("*.png"))) == 16
    assert set(read_manifest(tmp_path)["prompt"].str.endswith("edited")) == {True}


def test_a_resumed_run_with_another_compute_batch_regenerates_every_image(tmp_path):
    # the pixels depend on the compute batch, so a pool never mixes two of them
    jobs = plan_jobs(PROMPTS, {g: 3 for g in GROUPS}, base_seed=0)
    generate_pool(HashGenerator(), jobs, tmp_path, batch_size=4, progress=False)
    other = HashGenerator()
    other.info = dataclasses.replace(other.info, batch=5)
    run = generate_pool(other, jobs, tmp_path, batch_size=4, progress=False)
    assert run.reused == 0 and run.generated == 12
    assert set(read_manifest(tmp_path)["batch"]) == {5}


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_the_builtin_models_pool_does_not_depend_on_the_work_batch(tmp_path, precision):
    # the shipped model: kernels chosen by batch shape round differently (a batch of 8 and one of 20 gave
    # different pixels for some images on the CPUs measured), so it always computes info.batch images at once
    from aimfair.csdg.generators.tiny_sampling import load_tiny_generator

    model = Path(__file__).resolve().parents[1] / "models" / "tinyfaces_t2i"
    generator = load_tiny_generator(model, steps=2, batch=5, precision=precision)
    jobs = plan_jobs(PROMPTS, {g: 4 for g in GROUPS}, base_seed=0)
    pools = {}
    for work_batch in (1, 3, 7, 16):
        generate_pool(generator, jobs, tmp_path / str(work_batch), batch_size=work_batch, progress=False)
        pools[work_batch] = pool_bytes(tmp_path / str(work_batch))
    assert len(pools[1]) == 16 and all(pool == pools[1] for pool in pools.values())
    alone = generator.generate([jobs[5].prompt], [jobs[5].seed])[0]
    assert np.array_equal(alone, np.asarray(Image.open(tmp_path / "1" / jobs[5].path).convert("RGB")))


def test_foreign_and_damaged_files_in_the_pool_are_clear_errors(tmp_path):
    jobs = plan_jobs(PROMPTS, {g: 2 for g in GROUPS}, base_seed=0)
    generate_pool(HashGenerator(), jobs, tmp_path, batch_size=4, progress=False)
    (tmp_path / "0_0" / "holiday.jpg").write_bytes(b"not ours")
    with pytest.raises(AimfairError, match="did not write: 0_0/holiday.jpg; move them"):
        generate_pool(HashGenerator(), jobs, tmp_path, batch_size=4, progress=False)
    (tmp_path / "0_0" / "holiday.jpg").unlink()

    damaged = tmp_path / "1_1" / "000_0000.png"
    damaged.write_bytes(damaged.read_bytes()[:60])
    with pytest.raises(AimfairError, match="1_1/000_0000.png is damaged.*delete it"):
        generate_pool(HashGenerator(), jobs, tmp_path, batch_size=4, progress=False)
    damaged.unlink()
    assert generate_pool(HashGenerator(), jobs, tmp_path, batch_size=4, progress=False).generated == 1

    # a PNG under our naming scheme but without our record was not written by the runner either
    Image.new("RGB", (8, 8)).save(tmp_path / "0_1" / "000_0000.png")
    with pytest.raises(AimfairError, match="did not write: 0_1/000_0000.png"):
        generate_pool(HashGenerator(), jobs, tmp_path, batch_size=4, progress=False)


def test_a_full_disk_is_a_clear_error_that_leaves_no_partial_files(tmp_path, monkeypatch):
    jobs = plan_jobs(PROMPTS, {g: 3 for g in GROUPS}, base_seed=0)
    real_save, saves = Image.Image.save, []

    def save_until_full(self, fp, *args, **kwargs):
        if len(saves) == 5:
            with open(fp, "wb") as f:
                f.write(b"\x89PNG half")  # the disk fills up in the middle of a file
            raise OSError(errno.ENOSPC, "No space left on device")
        saves.append(fp)
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save_until_full)
    with pytest.raises(AimfairError, match="the disk is full: .*could not be written .*finished work is kept"):
        generate_pool(HashGenerator(), jobs, tmp_path, batch_size=4, progress=False)
    assert len(list(tmp_path.rglob("*.png"))) == 5 and not list(tmp_path.rglob("*.tmp"))
    monkeypatch.setattr(Image.Image, "save", real_save)
    run = generate_pool(HashGenerator(), jobs, tmp_path, batch_size=4, progress=False)
    assert (run.reused, run.generated) == (5, 7)


def test_reading_an_unfinished_pool_says_what_to_run(tmp_path):
    with pytest.raises(AimfairError, match="pool is incomplete; run the generate stage"):
        read_manifest(tmp_path)

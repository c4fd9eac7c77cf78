"""Real data without a GPU: CelebA subsets, the seeded partition, the generator pool, its captions, the guard
against a generator trained on another dataset, the fidelity banner and the world stage's skip."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aimfair.config import parse_params
from aimfair.core import paths
from aimfair.core.errors import AimfairError
from aimfair.core.groups import GROUPS
from aimfair.csdg.prompts.captions import pool_captions
from aimfair.csdg.prompts.validate import problem_with
from aimfair.data.celeba import read_celeba
from aimfair.data.generator_pool import MIN_PER_GROUP, balanced_pool, check_pool, generator_pool
from aimfair.data.splits import group_counts, make_split

NAMES = ["Male", "Smiling", "Young", "Eyeglasses", "Black_Hair", "Wavy_Hair", "No_Beard"]


def write_celeba(root: Path, n: int, header: int | None = None, partition: bool = True, seed: int = 0) -> None:
    """A CelebA-format label folder of `n` images with random labels (the images are not needed here)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    lines = [str(n if header is None else header), " ".join(NAMES)]
    lines += [f"{i:06d}.jpg " + " ".join(rng.choice(["-1", "1"], len(NAMES))) for i in range(1, n + 1)]
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    if partition:
        parts = [0 if i <= 0.7 * n else 1 if i <= 0.8 * n else 2 for i in range(1, n + 1)]
        (root / "list_eval_partition.txt").write_text("".join(f"{i:06d}.jpg {p}\n" for i, p in zip(range(1, n + 1), parts)))


# --- CelebA subsets -----------------------------------------------------------------------------------------


def test_a_header_count_that_differs_from_the_rows_is_a_warning_naming_both(tmp_path, capsys):
    write_celeba(tmp_path, 50, header=202599)
    frame = read_celeba(tmp_path)
    assert len(frame) == 50
    err = capsys.readouterr().err
    assert "header says 202599 images but the file lists 50" in err and "corrupt" not in err


def test_a_subset_without_a_partition_file_needs_the_seeded_partition(tmp_path):
    write_celeba(tmp_path, 400, partition=False)
    with pytest.raises(AimfairError, match="data.partition: seeded"):
        make_split("celeba", tmp_path, "Smiling", "Male", "1", 40)
    splits = make_split("celeba", tmp_path, "Smiling", "Male", "1", 40, seed=3, partition="seeded",
                        seeded_fractions=(0.7, 0.1, 0.2))
    assert (len(splits["val"]), len(splits["test"])) == (40, 80)
    assert len(splits["train"]) == 40 and list(splits["train"]["image_id"]) == sorted(splits["train"]["image_id"])
    ids = [set(splits[name]["image_id"]) for name in ("train", "val", "test")]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    again = make_split("celeba", tmp_path, "Smiling", "Male", "1", 40, seed=3, partition="seeded")
    other = make_split("celeba", tmp_path, "Smiling", "Male", "1", 40, seed=4, partition="seeded")
    assert again["test"].equals(splits["test"]) and not other["test"].equals(splits["test"])


def test_an_official_partition_that_leaves_test_empty_offers_the_seeded_one(tmp_path):
    write_celeba(tmp_path, 100, partition=False)
    (tmp_path / "list_eval_partition.txt").write_text("".join(f"{i:06d}.jpg 0\n" for i in range(1, 101)))
    with pytest.raises(AimfairError, match="leaves val and test empty.*data.partition: seeded"):
        make_split("celeba", tmp_path, "Smiling", "Male", "1", 20)


def test_a_seeded_partition_that_leaves_a_part_empty_says_which_share_to_raise(tmp_path):
    write_celeba(tmp_path, 40, partition=False)
    with pytest.raises(AimfairError, match="seeded partition of 40 images.*leaves test empty.*seeded_fractions"):
        make_split("celeba", tmp_path, "Smiling", "Male", "1", 8, partition="seeded", seeded_fractions=(0.97, 0.02, 0.01))


def test_seeded_fractions_must_be_three_shares_adding_up_to_one():
    with pytest.raises(AimfairError, match="data.seeded_fractions"):
        parse_params({"data": {"seeded_fractions": [0.7, 0.2, 0.2]}})
    with pytest.raises(AimfairError, match="data.partition"):
        parse_params({"data": {"partition": "random"}})


# --- the generator pool -------------------------------------------------------------------------------------


def test_the_generator_pool_is_disjoint_from_every_split_and_keeps_the_labels(tmp_path):
    write_celeba(tmp_path, 2000)
    splits = make_split("celeba", tmp_path, "Smiling", "Male", "1/9", 200)
    pool = generator_pool("celeba", tmp_path, "Smiling", "Male", splits)
    used = set().union(*(set(splits[n]["image_id"]) for n in ("train", "val", "test")))
    assert not used & set(pool["image_id"])
    assert len(pool) == 1400 - 200  # the official train partition less the biased split
    assert set(pool.columns) >= {"image_id", "y", "s", *NAMES}
    assert set(pool["Smiling"].unique()) <= {0, 1} and (pool["y"] == pool["Smiling"]).all()
    assert min(check_pool(pool).values()) >= MIN_PER_GROUP


def test_a_generator_pool_missing_a_group_is_refused_naming_it():
    pool = pd.DataFrame({"image_id": [f"{i}.jpg" for i in range(400)], "y": [0, 0, 1, 1] * 100,
                         "s": [0, 1, 0, 0] * 100})
    with pytest.raises(AimfairError, match=r"group\(s\) 1_1 have fewer than 50.*1_1 0"):
        check_pool(pool)


def test_balanced_pool_draws_every_group_equally_cycling_a_small_one():
    pool = pd.DataFrame({"image_id": [f"{i}.jpg" for i in range(460)],
                         "y": [0] * 300 + [0] * 60 + [1] * 50 + [1] * 50, "s": [0] * 300 + [1] * 60 + [0] * 50 + [1] * 50})
    rows = balanced_pool(pool, 120, seed=0)
    assert group_counts(rows) == {g: 120 for g in GROUPS}
    small = rows[(rows["y"] == 1) & (rows["s"] == 1)]
    assert small["image_id"].nunique() == 50 and small["repeat"].max() == 2
    assert rows.equals(balanced_pool(pool, 120, seed=0))


# --- captions in the prompts' words -------------------------------------------------------------------------


def test_every_celeba_caption_names_its_own_group_in_the_prompt_vocabulary(tmp_path):
    write_celeba(tmp_path, 400)
    splits = make_split("celeba", tmp_path, "Smiling", "Male", "1", 40)
    pool = generator_pool("celeba", tmp_path, "Smiling", "Male", splits)
    captions = pool_captions(pool, "celeba", "Smiling", "Male", seed=0)
    assert len(set(captions)) > len(captions) // 2  # wording and details vary
    for caption, y, s in zip(captions, pool["y"], pool["s"]):
        # the prompts' own validator reads the caption as its group: prompts land in what the model learned
        assert problem_with(caption, "Smiling", "Male", f"{y}_{s}") is None, caption
    glasses = pool["Eyeglasses"] == 1
    assert not any("glasses" in c for c, g in zip(captions, glasses) if not g)
    assert captions == pool_captions(pool, "celeba", "Smiling", "Male", seed=0)


def test_utkface_captions_say_gender_race_and_age():
    pool = pd.DataFrame({"image_id": ["a", "b", "c"], "age": [24, 45, 70], "gender": [1, 0, 1], "race": [0, 2, 1],
                         "Female": [1, 0, 1], "White": [1, 0, 0], "y": [1, 0, 1], "s": [1, 0, 0]})
    captions = pool_captions(pool, "utkface", "Female", "White", seed=1)
    assert "white" in captions[0] and "east asian" in captions[1] and "black" in captions[2]
    assert "middle-aged" in captions[1] and ("elderly" in captions[2] or "old" in captions[2])
    for caption, y, s in zip(captions, pool["y"], pool["s"]):
        assert problem_with(caption, "Female", "White", f"{y}_{s}") is None, caption


def test_a_caption_vocabulary_that_cannot_say_the_target_is_refused(tmp_path):
    pool = pd.DataFrame({"image_id": ["a"], "y": [1], "s": [0], "Attractive": [1], "Male": [0]})
    with pytest.raises(AimfairError, match="captions cannot say the target attribute 'Attractive'.*vocabulary.py"):
        pool_captions(pool, "celeba", "Attractive", "Male", seed=0)


# --- never a Table 3 built on the wrong images --------------------------------------------------------------


def setting(tmp_path: Path, **data) -> "object":
    """A setting root (tmp_path) with a CelebA label folder and params for it."""
    write_celeba(tmp_path / "celeba", 400)
    return parse_params({"data": {"dataset": "celeba", "root": "celeba", "n_train": 40, "bias_degree": "1", **data}})


def fake_checkpoint(folder: Path, dataset: str | None, resolution: int = 32) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"model": {"resolution": resolution}, "trained_on": f"{dataset or 'tinyfaces'} images"}
    if dataset:
        meta["dataset"] = dataset
    (folder / "config.json").write_text(json.dumps(meta))


def test_the_studio_generator_on_a_real_dataset_is_refused_by_check_and_by_generate(tmp_path):
    from aimfair.csdg.generation import build_generator
    from aimfair.preflight import missing_inputs

    params = setting(tmp_path)
    shutil.copytree(paths.repo_root(Path(__file__).parent) / paths.GENERATOR, tmp_path / paths.GENERATOR)
    problems = missing_inputs(params, tmp_path)
    assert any("tinyfaces studio renders" in p and "generator.corpus: dataset" in p and "Stable Diffusion" in p
               for p in problems), problems
    with pytest.raises(AimfairError, match="data.dataset is celeba.*generator.corpus: dataset"):
        build_generator(params, tmp_path, device="cpu")
    opted_out = parse_params({"data": {"dataset": "celeba", "root": "celeba", "n_train": 40, "bias_degree": "1"},
                              "generate": {"allow_foreign_generator": True}})
    assert build_generator(opted_out, tmp_path, device="cpu").info.resolution == 32


def test_a_dataset_checkpoint_of_another_dataset_or_resolution_is_refused(tmp_path):
    from aimfair.csdg.generation import builtin_generator_problem

    params = parse_params({"data": {"dataset": "celeba", "root": "celeba"},
                           "generator": {"corpus": "dataset", "resolution": 32}})
    assert builtin_generator_problem(params, tmp_path) is None  # not trained yet: the generator stage will
    fake_checkpoint(tmp_path / paths.DATASET_GENERATOR, "utkface")
    assert "was trained on utkface images, but data.dataset is celeba" in builtin_generator_problem(params, tmp_path)
    fake_checkpoint(tmp_path / paths.DATASET_GENERATOR, "celeba", resolution=64)
    assert "trained at 64 px, but generator.resolution is 32" in builtin_generator_problem(params, tmp_path)
    fake_checkpoint(tmp_path / paths.DATASET_GENERATOR, "celeba", resolution=32)
    assert builtin_generator_problem(params, tmp_path) is None
    # the splits changed after training: the model learned images the classifier now trains or is tested on
    pd.DataFrame({"image_id": ["1.jpg", "2.jpg", "3.jpg"]}).to_csv(tmp_path / paths.DATASET_GENERATOR / "corpus.csv")
    (tmp_path / paths.SPLITS).mkdir(parents=True)
    pd.DataFrame({"image_id": ["2.jpg", "3.jpg", "9.jpg"]}).to_csv(tmp_path / paths.SPLITS / "test.csv")
    assert "learned from 2 image(s) that are now in the classifier's" in builtin_generator_problem(params, tmp_path)
    (tmp_path / paths.SPLITS / "test.csv").unlink()
    assert builtin_generator_problem(params, tmp_path) is None
    (tmp_path / paths.DATASET_GENERATOR / "config.json").write_text("{not json")
    assert "is damaged" in builtin_generator_problem(params, tmp_path)


def fidelity_report(both: dict[str, float]) -> dict:
    return {"per_group": {g: {"target": 99.0, "sensitive": 99.0, "both": v} for g, v in both.items()},
            "lowest_both": min(both.values()), "threshold": 80.0}


def test_a_pool_below_the_fidelity_threshold_puts_a_banner_on_the_table_and_in_the_metrics(tmp_path, capsys):
    from aimfair.core import io
    from aimfair.csdg.fidelity import REPORT
    from aimfair.evaluation.evaluate import Evaluation, write_evaluation
    from aimfair.evaluation.metrics import aggregate_seeds, fairness_metrics

    params = parse_params({"seeds": [1]})
    rng = np.random.default_rng(0)
    y, s = rng.integers(0, 2, 400), rng.integers(0, 2, 400)
    pred = np.where(rng.random(400) < 0.8, y, 1 - y)
    metrics = fairness_metrics(y, s, pred)
    per_seed = pd.DataFrame([dict(strategy="baseline", seed=1, **metrics)])
    aggregate = {"baseline": aggregate_seeds([metrics])}
    predictions = pd.DataFrame(dict(strategy="baseline", seed=1, image_id=range(400), y=y, s=s, pred=pred))
    evaluation = Evaluation(per_seed, predictions, aggregate)

    report = fidelity_report({"0_0": 95.0, "0_1": 41.5, "1_0": 90.0, "1_1": 12.0})
    report["oracle_val_accuracy"] = {"both": {"0_0": 90.0, "0_1": 88.5, "1_0": 91.0, "1_1": 70.25}}
    io.write_json(tmp_path / REPORT, report)
    files = write_evaluation(evaluation, params, tmp_path)
    table = files["table_md"].read_text()
    assert table.startswith("> **WARNING: PROMPT FIDELITY BELOW 80 % in group(s) 0_1 41.5 %, 1_1 12.0 % (real "
                            "validation photos of the same group(s) read right: 88.5 %, 70.2 %)")
    metrics = json.loads(files["metrics"].read_text())
    assert metrics["prompt_fidelity"]["below_threshold"] == ["0_1", "1_1"] and metrics["prompt_fidelity"]["warning"]
    assert "PROMPT FIDELITY BELOW 80 %" in capsys.readouterr().err

    io.write_json(tmp_path / REPORT, fidelity_report({g: 95.0 for g in GROUPS}))
    files = write_evaluation(evaluation, params, tmp_path)
    assert "WARNING" not in files["table_md"].read_text()
    assert json.loads(files["metrics"].read_text())["prompt_fidelity"]["warning"] is None


def test_the_world_stage_renders_nothing_for_a_real_dataset(tmp_path):
    from aimfair.pipeline.world import SKIPPED, run_world

    params = parse_params({"data": {"dataset": "celeba", "root": "data/celeba"}})
    folder = run_world(params, tmp_path, progress=False)
    assert [p.name for p in folder.iterdir()] == [SKIPPED]


def test_the_fidelity_oracle_draws_its_images_in_a_seeded_shuffled_order_and_cycles_small_groups(tmp_path):
    """UTKFace names start with the age: the first images in name order would all be the youngest."""
    from aimfair.csdg.fidelity import oracle_training_frame

    folder = tmp_path / "utk" / "UTKFace"
    folder.mkdir(parents=True)
    for i in range(400):
        age = 1 + i // 5  # names sort by age
        (folder / f"{age}_{i % 2}_{(i // 2) % 2}_2017{i:09d}.jpg.chip.jpg").write_bytes(b"")
    (tmp_path / paths.SPLITS).mkdir(parents=True)
    for split in ("val", "test"):
        pd.DataFrame({"image_id": [], "y": [], "s": []}).to_csv(tmp_path / paths.SPLITS / f"{split}.csv", index=False)
    params = parse_params({"data": {"dataset": "utkface", "root": "utk", "target": "Female", "sensitive": "White"}})
    frame = oracle_training_frame(params, tmp_path, per_group=20)
    ages = frame["image_id"].str.split("_").str[0].astype(int)
    assert len(frame) == 80 and ages.median() > 30  # name order would give ages 1-16 only
    assert frame.equals(oracle_training_frame(params, tmp_path, per_group=20))

    # 100 images per group here: asking 150 repeats half of each group, and keeps all 100 of them
    cycled = oracle_training_frame(params, tmp_path, per_group=150)
    assert len(cycled) == 600 and cycled["image_id"].nunique() == 400
    assert cycled["image_id"].value_counts().max() == 2


def test_check_says_when_the_splits_leave_too_small_a_generator_pool(tmp_path):
    from aimfair.preflight import missing_inputs

    write_celeba(tmp_path / "celeba", 1000)
    (tmp_path / "celeba" / "img_align_celeba").mkdir()
    for i in range(1, 1001):
        (tmp_path / "celeba" / "img_align_celeba" / f"{i:06d}.jpg").write_bytes(b"")
    data = {"dataset": "celeba", "root": "celeba", "bias_degree": "1"}
    small = parse_params({"data": {**data, "n_train": 40}, "generator": {"corpus": "dataset"}})
    assert missing_inputs(small, tmp_path) == []  # 700 train-partition images leave 660 for the pool
    large = parse_params({"data": {**data, "n_train": 600}, "generator": {"corpus": "dataset"}})  # ~25 per group
    assert any("generator pool" in p and "too small" in p for p in missing_inputs(large, tmp_path))

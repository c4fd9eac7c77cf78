"""aimfair check: every missing input of a setting listed at once, before a long run."""

import shutil
import sys
import subprocess
from dataclasses import replace
from pathlib import Path

from aimfair.config import Params, DataParams, GenerateParams, PretrainParams
from aimfair.preflight import missing_inputs


IMAGES = [f"{i:06d}.jpg" for i in range(1, 41)]


def celeba(folder: Path, images=IMAGES, present=None) -> Path:
    """A CelebA folder in the official format: 40 images, all four (Smiling, Male) groups in every partition."""
    (folder / "img_align_celeba").mkdir(parents=True)
    for name in images if present is None else present:
        (folder / "img_align_celeba" / name).write_bytes(b"jpg")
    (folder / "list_attr_celeba.txt").write_text(f"{len(images)}\nSmiling Male\n" + "".join(
        f"{n} {1 if i % 2 else -1} {1 if i // 2 % 2 else -1}\n" for i, n in enumerate(images)))
    (folder / "list_eval_partition.txt").write_text("".join(f"{n} {0 if i < 32 else 1 if i < 36 else 2}\n"
                                                            for i, n in enumerate(images)))
    return folder


def params(dataset="celeba", root="data/celeba", model="builtin", pretrained="none") -> Params:
    return replace(Params(), data=DataParams(dataset=dataset, root=root, n_train=8, bias_degree="1"),
                   generate=GenerateParams(model=model), pretrain=PretrainParams(pretrained=pretrained))


def test_a_complete_celeba_folder_has_no_problems(tmp_path):
    celeba(tmp_path / "data" / "celeba")
    assert missing_inputs(params(), tmp_path) == []


def test_an_absent_dataset_folder_is_named(tmp_path):
    (problem,) = missing_inputs(params(), tmp_path)
    assert "CelebA folder" in problem and str(tmp_path / "data" / "celeba") in problem


def test_an_incomplete_celeba_folder_lists_every_missing_piece(tmp_path):
    folder = celeba(tmp_path / "data" / "celeba", present=IMAGES[:38])
    (folder / "list_eval_partition.txt").unlink()
    problems = missing_inputs(params(), tmp_path)
    assert len(problems) == 2
    assert "no CelebA partition file" in problems[0] and "list_eval_partition.txt" in problems[0]
    assert problems[1].startswith("2 images labelled in list_attr_celeba.txt are not in") and "000039.jpg" in problems[1]


def test_a_utkface_folder_without_images_is_named(tmp_path):
    (tmp_path / "data" / "utkface").mkdir(parents=True)
    (problem,) = missing_inputs(params("utkface", "data/utkface"), tmp_path)
    assert "no .jpg files" in problem


def test_absent_weights_say_where_they_were_looked_for(tmp_path, monkeypatch):
    celeba(tmp_path / "data" / "celeba")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    problems = missing_inputs(params(model="../models/sd21", pretrained="imagenet"), tmp_path / "data")
    assert len(problems) == 3  # the dataset (root is data/ here), the diffusion weights, ImageNet's
    assert problems[1].startswith(f"diffusion weights: no folder at {tmp_path / 'models' / 'sd21'}")
    assert "ImageNet weights" in problems[2] and str(tmp_path / "torch") in problems[2]


def test_the_check_command_lists_the_problems_and_fails(tmp_path):
    shutil.copy(Path(__file__).resolve().parents[1] / "params.yaml", tmp_path / "params.yaml")
    text = (tmp_path / "params.yaml").read_text().replace("dataset: tinyfaces", "dataset: celeba", 1)
    text = text.replace("n_train: 3000 ", "n_train: 8    ", 1).replace('bias_degree: "1/9"', 'bias_degree: "1"  ', 1)
    (tmp_path / "params.yaml").write_text(text.replace("root: work/tinyfaces", "root: data/celeba", 1))
    result = subprocess.run([sys.executable, "-m", "aimfair", "check"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "missing: CelebA folder" in result.stderr and "1 input(s) of params.yaml are missing" in result.stderr
    celeba(tmp_path / "data" / "celeba")
    result = subprocess.run([sys.executable, "-m", "aimfair", "check"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("ready:"), result.stderr


def test_the_built_in_world_needs_nothing(tmp_path):
    assert missing_inputs(params("tinyfaces", "work/tinyfaces"), tmp_path) == []


def test_an_incomplete_diffusion_folder_names_what_it_lacks(tmp_path):
    celeba(tmp_path / "data" / "celeba")
    (tmp_path / "sd").mkdir()
    (tmp_path / "sd" / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    (problem,) = [p for p in missing_inputs(params(model="./sd"), tmp_path) if "diffusion" in p]
    assert "is incomplete, missing" in problem and "unet" in problem


def test_labels_that_cannot_fill_the_split_are_named(tmp_path):
    celeba(tmp_path / "data" / "celeba")  # 32 training images: nowhere near 400
    p = params()
    p = replace(p, data=replace(p.data, n_train=400))
    (problem,) = missing_inputs(p, tmp_path)
    assert problem.startswith("the splits of celeba Smiling/Male:")

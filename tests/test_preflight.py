"""aimfair check: every missing input of a setting listed at once, before a long run."""

import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from PIL import Image

from aimfair.cli import main
from aimfair.config import DataParams, GenerateParams, Params, PretrainParams
from aimfair.preflight import input_warnings, missing_inputs

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


# ----------------------------------------------------------------------------- warnings: usable but likely wrong

def sized_images(folder: Path, size: tuple[int, int], names=IMAGES[:6]) -> None:
    """Real JPEGs of `size` (width, height) over the fixture's placeholder files."""
    for name in names:
        Image.new("RGB", size).save(folder / "img_align_celeba" / name)


def with_input_size(p: Params, size: int) -> Params:
    return replace(p, pretrain=replace(p.pretrain, input_size=size))


def test_images_smaller_than_the_input_size_are_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sized_images(celeba(tmp_path / "data" / "celeba"), (89, 109))
    assert input_warnings(params(), tmp_path) == [
        "images in data/celeba/img_align_celeba are 89x109 px, smaller than pretrain.input_size 224: they will be "
        "upscaled; use the full-size release (178x218 px) or lower pretrain.input_size"]
    assert input_warnings(with_input_size(params(), 64), tmp_path) == []
    assert missing_inputs(params(), tmp_path) == []  # a warning, not a missing input


def test_release_size_or_unreadable_images_give_no_warning(tmp_path):
    folder = celeba(tmp_path / "data" / "celeba")
    assert input_warnings(params(), tmp_path) == []  # the fixture's files are not images: the decoder reports those
    sized_images(folder, (178, 218))  # the official aligned release, upscaled to 224 as the paper does
    assert input_warnings(params(), tmp_path) == []


def test_a_reduced_utkface_copy_is_named(tmp_path):
    folder = tmp_path / "data" / "utkface" / "UTKFace"
    folder.mkdir(parents=True)
    for name in ("25_1_0_20170116174525125.jpg.chip.jpg", "30_0_2_20170116174525126.jpg.chip.jpg"):
        Image.new("RGB", (100, 100)).save(folder / name, format="JPEG")
    (warning,) = input_warnings(params("utkface", "data/utkface"), tmp_path)
    assert " are 100x100 px, smaller than pretrain.input_size 224: " in warning and "(200x200 px)" in warning


def test_a_symlinked_data_folder_is_named_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    celeba(tmp_path / "elsewhere" / "celeba")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "celeba").symlink_to(tmp_path / "elsewhere" / "celeba")
    assert input_warnings(params(), tmp_path) == [
        "data/celeba is a symlink: DVC does not hash the files behind it, so changes go unnoticed; move or copy the "
        "dataset into data/ (or bind-mount it) instead"]


def test_a_symlinked_image_folder_inside_the_data_folder_is_named(tmp_path):
    celeba(tmp_path / "elsewhere")
    folder = tmp_path / "paper" / "setting"
    folder.mkdir(parents=True)
    (tmp_path / "data" / "celeba").mkdir(parents=True)
    (tmp_path / "data" / "celeba" / "img_align_celeba").symlink_to(tmp_path / "elsewhere" / "img_align_celeba")
    (warning,) = input_warnings(params(root="../../data/celeba"), folder)  # a paper setting's root, one level down
    assert warning.startswith(f"{tmp_path / 'data' / 'celeba' / 'img_align_celeba'} is a symlink: DVC does not hash")


def test_nothing_to_warn_about_without_a_real_dataset(tmp_path):
    assert input_warnings(params(), tmp_path) == []  # absent: missing_inputs says so
    assert input_warnings(params("tinyfaces", "work/tinyfaces"), tmp_path) == []


def test_the_check_command_prints_warnings_and_still_succeeds(tmp_path, monkeypatch, capsys):
    shutil.copy(Path(__file__).resolve().parents[1] / "params.yaml", tmp_path / "params.yaml")
    text = (tmp_path / "params.yaml").read_text().replace("dataset: tinyfaces", "dataset: celeba", 1)
    text = text.replace("n_train: 3000 ", "n_train: 8    ", 1).replace('bias_degree: "1/9"', 'bias_degree: "1"  ', 1)
    (tmp_path / "params.yaml").write_text(text.replace("root: work/tinyfaces", "root: data/celeba", 1))
    sized_images(celeba(tmp_path / "data" / "celeba"), (20, 24))  # params.yaml's input_size is 32
    monkeypatch.chdir(tmp_path)
    assert main(["check"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("ready:")
    assert err == ("warning: images in data/celeba/img_align_celeba are 20x24 px, smaller than pretrain.input_size "
                   "32: they will be upscaled; use the full-size release (178x218 px) or lower pretrain.input_size\n")


def test_the_built_in_worlds_split_is_checked_without_rendering_it(tmp_path):
    from aimfair.config import parse_params

    shipped = parse_params({"data": {"dataset": "tinyfaces", "root": "work/tinyfaces"}})
    assert missing_inputs(shipped, tmp_path) == []
    assert not (tmp_path / "work").exists()  # nothing rendered, nothing written
    too_many = replace(shipped, data=replace(shipped.data, n_train=100000))
    assert any("not enough images for the biased train split" in p for p in missing_inputs(too_many, tmp_path))
    typo = replace(shipped, data=replace(shipped.data, target="Smilling"))
    assert any("did you mean 'Smiling'" in p for p in missing_inputs(typo, tmp_path))


def test_the_worlds_labels_without_pixels_are_the_rendered_worlds(tmp_path):
    from aimfair.config import WorldConfig
    from aimfair.data.tinyfaces import world_attributes, write_labels, write_world

    cfg = WorldConfig(n_images=40, image_size=16)
    write_world(tmp_path / "world", cfg, workers=1, progress=False)
    write_labels(tmp_path / "labels", cfg, world_attributes(cfg))
    for name in ("list_attr_celeba.txt", "list_eval_partition.txt"):
        assert (tmp_path / "labels" / name).read_bytes() == (tmp_path / "world" / name).read_bytes()


def test_check_loads_the_built_in_model_and_reads_the_prompts_file(tmp_path):
    from aimfair.config import TinyConfig, parse_params
    from aimfair.csdg.generators.tiny import TinyT2I, save_tiny

    folder = tmp_path / "models" / "tinyfaces_t2i"
    save_tiny(TinyT2I(TinyConfig(resolution=16, channels=(8, 16, 16), head_dim=8, max_tokens=16)), folder)
    setting = parse_params({"data": {"dataset": "tinyfaces", "root": "work/tinyfaces"},
                            "prompts": {"backend": "file", "file": "my_prompts.yaml"}})
    (tmp_path / "my_prompts.yaml").write_text("0_0: [a woman]\n")  # three groups short
    problems = missing_inputs(setting, tmp_path)
    assert len(problems) == 1 and "my_prompts.yaml" in problems[0]
    (folder / "model.safetensors").write_bytes(b"\x00" * 64)
    assert any("model.safetensors is damaged" in p for p in missing_inputs(setting, tmp_path))

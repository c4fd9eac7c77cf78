"""Before a long run on real data: is everything a setting reads in place? Lists every problem at once.

`aimfair check --params paper/celeba_smiling_male/params.yaml` runs it; a GPU day is not lost to a partition
file missing at the evaluation stage. The stages raise the same errors one by one when they reach them.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd

from aimfair.classifier.models import imagenet_weights_path
from aimfair.config import Params
from aimfair.core import paths
from aimfair.core.errors import AimfairError
from aimfair.csdg.generators.tiny import load_tiny
from aimfair.csdg.prompts.captions import check_caption_vocabulary
from aimfair.csdg.prompts.promptfile import read_prompts_file
from aimfair.data.celeba import ATTR_FILES, IMAGE_DIR, PARTITION_FILES, celeba_image_dir
from aimfair.data.generator_pool import check_pool, generator_pool
from aimfair.data.splits import make_split
from aimfair.data.tinyfaces import world_attributes, write_labels
from aimfair.data.utkface import utkface_image_dir


def _listed_images(attr_file: Path) -> list[str]:
    """The image names an attribute file labels (txt: first token of each line after the two header lines)."""
    if attr_file.suffix == ".csv":
        return list(pd.read_csv(attr_file, usecols=["image_id"])["image_id"])
    return [line.split(maxsplit=1)[0] for line in attr_file.read_text().splitlines()[2:] if line.strip()]


def _celeba_problems(root: Path, official: bool = True) -> list[str]:
    if not root.is_dir():
        return [f"CelebA folder {root} does not exist: put the CelebA release there (docs/data.md)"]
    problems = []
    found = {}
    wanted = (("attribute", ATTR_FILES), ("partition", PARTITION_FILES)) if official else (("attribute", ATTR_FILES),)
    for what, names in wanted:
        found[what] = next((root / n for n in names if (root / n).is_file()), None)
        if found[what] is None:
            fix = "; a subset without one can use data.partition: seeded" if what == "partition" else ""
            problems.append(f"no CelebA {what} file in {root}: looked for {' and '.join(names)}{fix}")
    try:
        images = celeba_image_dir(root)
    except AimfairError:
        return problems + [f"no image folder {root / IMAGE_DIR}: unzip img_align_celeba.zip into {root}"]
    if found["attribute"] is not None:
        present = set(os.listdir(images))
        absent = [name for name in _listed_images(found["attribute"]) if name not in present]
        if absent:
            problems.append(f"{len(absent)} images labelled in {found['attribute'].name} are not in {images} "
                            f"(e.g. {', '.join(absent[:3])}): copy the whole img_align_celeba release")
    return problems


def _utkface_problems(root: Path) -> list[str]:
    try:
        utkface_image_dir(root)
    except AimfairError as e:
        return [str(e)]
    return []


def _split_problems(params: Params, data_root: Path) -> list[str]:
    """Can the setting's splits be made from the labels (attributes present, every group's quota filled), and
    with generator.corpus: dataset, do they leave a generator pool its captions can describe?"""
    d = params.data
    try:
        splits = make_split(d.dataset, data_root, d.target, d.sensitive, d.bias_degree, d.n_train, seed=d.split_seed,
                            utkface_test_per_group=d.utkface_test_per_group or None,
                            utkface_val_fraction=d.utkface_val_fraction, partition=d.partition,
                            seeded_fractions=d.seeded_fractions)
    except AimfairError as e:
        return [f"the splits of {d.dataset} {d.target}/{d.sensitive}: {e}"]
    if params.generator.corpus != "dataset":
        return []
    try:
        pool = generator_pool(d.dataset, data_root, d.target, d.sensitive, splits, official=d.partition == "official")
        check_pool(pool)
        check_caption_vocabulary(d.dataset, d.target, d.sensitive, list(pool.columns))
    except AimfairError as e:
        return [str(e)]
    return []


def _diffusion_problems(params: Params, root: Path) -> list[str]:
    from aimfair.csdg.generators.sd import read_pipeline_index, resolve_model_folder

    given = params.generate.model
    local = (root / Path(given).expanduser()).resolve()  # the stages run from the setting's folder
    # a path (./x, ../x, /x, ~/x, or one that exists) is a folder; anything else may be a model id in the HF cache
    is_path = local.exists() or given.startswith((".", "/", "~"))
    try:
        folder, _ = resolve_model_folder(local if is_path else given, params.generate.revision or None)
        read_pipeline_index(folder)
    except AimfairError as e:
        if is_path and not local.exists():
            return [f"diffusion weights: no folder at {local} (generate.model {given!r}): put a diffusers pipeline "
                    "folder of Stable Diffusion there, e.g. stable-diffusion-2-1-base (paper/README.md, step 1)"]
        return [f"diffusion weights (generate.model {given!r}): {e}"]  # incomplete, or a model id not cached
    return []


def _builtin_model_problems(params: Params, root: Path) -> list[str]:
    """Does the built-in model load (when it is there: the generator stage trains a missing one)?"""
    folder = root / paths.generator_dir(params.generator.corpus)
    if not (folder / "config.json").exists() and not (folder / "model.safetensors").exists():
        return []
    try:
        load_tiny(folder)
    except AimfairError as e:
        return [str(e)]
    return []


def missing_inputs(params: Params, root: Path) -> list[str]:
    """Every input the setting in `params` needs that is absent or incomplete: dataset files, diffusion weights,
    ImageNet weights. Empty when all is in place."""
    data_root = (root / params.data.root).resolve()
    if params.data.dataset == "celeba":
        problems = _celeba_problems(data_root, official=params.data.partition == "official")
    elif params.data.dataset == "utkface":
        problems = _utkface_problems(data_root)
    else:
        problems = []
    if params.data.dataset != "tinyfaces" and not problems:  # the files are there: do the labels fill the split?
        problems += _split_problems(params, data_root)
    if params.data.dataset == "tinyfaces":  # the world's labels follow from its config: no need to render it
        with tempfile.TemporaryDirectory() as labels:
            write_labels(labels, params.data.tinyfaces, world_attributes(params.data.tinyfaces))
            problems += _split_problems(params, Path(labels))
    if params.generate.model != "builtin":
        problems += _diffusion_problems(params, root)
    else:
        from aimfair.csdg.generation import builtin_generator_problem

        problems += [problem for problem in [builtin_generator_problem(params, root)] if problem]
        problems += _builtin_model_problems(params, root)
    if params.prompts.backend == "file" and params.prompts.mode == "contextual":
        try:
            read_prompts_file(Path(params.prompts.file).expanduser() if Path(params.prompts.file).expanduser()
                              .is_absolute() else root / params.prompts.file)
        except AimfairError as e:
            problems.append(str(e))
    if params.pretrain.pretrained == "imagenet" and not imagenet_weights_path().exists():
        problems.append(f"ImageNet weights for resnet18 not found at {imagenet_weights_path()}: copy "
                        "resnet18-f37072fd.pth there (or point TORCH_HOME at a folder with hub/checkpoints/)")
    return problems


# Checks that warn and stop nothing: `aimfair check` prints them as warning: lines.

SAMPLED_IMAGES = 5  # images opened to learn the dataset's size: opening one reads only its header
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# (width, height) of the public releases' aligned images. They are below the paper's 224 px and are upscaled as
# the authors did, so only images smaller than these too (a reduced copy) are worth a warning.
RELEASE_SIZES: dict[str, tuple[int, int]] = {"celeba": (178, 218), "utkface": (200, 200)}


def _shown(path: Path) -> str:
    """`path` relative to the working directory when it is below it (as the user typed it), else in full."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _dataset_image_dir(dataset: str, data_root: Path) -> Path | None:
    """Where a real dataset's images are, None when missing (missing_inputs reports that) or built in."""
    find = {"celeba": celeba_image_dir, "utkface": utkface_image_dir}.get(dataset)
    try:
        return None if find is None else find(data_root)
    except AimfairError:
        return None


def _small_image_warnings(images: Path, input_size: int, release: tuple[int, int]) -> list[str]:
    """Images smaller than the network input and than the release are a reduced copy, upscaled: blurrier than the
    images the paper's numbers were measured on."""
    from PIL import Image

    names = sorted(n for n in os.listdir(images) if n.lower().endswith(_IMAGE_SUFFIXES))[:SAMPLED_IMAGES]
    sizes = []
    for name in names:
        try:
            with Image.open(images / name) as image:
                sizes.append(image.size)
        except OSError:  # unreadable files are the decoder's to report (data.bad_images)
            continue
    if not sizes:
        return []
    width, height = min(sizes, key=min)
    if min(width, height) >= min(input_size, *release):
        return []
    return [f"images in {_shown(images)} are {width}x{height} px, smaller than pretrain.input_size {input_size}: "
            f"they will be upscaled; use the full-size release ({release[0]}x{release[1]} px) or lower "
            "pretrain.input_size"]


def _symlink_warnings(data_root: Path, images: Path, root: Path) -> list[str]:
    """A symlinked data folder (or image folder inside it): DVC records it with no files and never sees changes.

    Checked: every folder from below the one shared with the project root (data/ itself, say) down to the images.
    """
    top = Path(os.path.commonpath([root, data_root]))
    if top == Path(top.anchor):  # a dataset outside the project: only the folders from data.root down matter
        top = data_root.parent
    folders = [images, *images.parents]
    linked = [f for f in reversed(folders) if f.is_relative_to(top) and f != top and f.is_symlink()]
    return [f"{_shown(f)} is a symlink: DVC does not hash the files behind it, so changes go unnoticed; move or "
            "copy the dataset into data/ (or bind-mount it) instead" for f in linked]


def input_warnings(params: Params, root: Path) -> list[str]:
    """What is in place but likely wrong for a real dataset: images smaller than the network input, data folders
    that are symlinks. Empty when nothing looks off, or when the dataset is missing (missing_inputs says so)."""
    # lexically normalised, not resolved: resolving would follow the very symlinks looked for
    data_root = Path(os.path.normpath(root / params.data.root))
    images = _dataset_image_dir(params.data.dataset, data_root)
    if images is None:
        return []
    release = RELEASE_SIZES[params.data.dataset]
    return _symlink_warnings(data_root, images, root) + _small_image_warnings(images, params.pretrain.input_size,
                                                                              release)

"""Before a long run on real data: is everything a setting reads in place? Lists every problem at once.

`aimfair check --params paper/celeba_smiling_male/params.yaml` runs it; a GPU day is not lost to a partition
file missing at the evaluation stage. The stages raise the same errors one by one when they reach them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from aimfair.config import Params
from aimfair.data.celeba import ATTR_FILES, IMAGE_DIR, PARTITION_FILES, celeba_image_dir
from aimfair.data.splits import make_split
from aimfair.data.utkface import utkface_image_dir
from aimfair.errors import AimfairError
from aimfair.models import imagenet_weights_path


def _listed_images(attr_file: Path) -> list[str]:
    """The image names an attribute file labels (txt: first token of each line after the two header lines)."""
    if attr_file.suffix == ".csv":
        return list(pd.read_csv(attr_file, usecols=["image_id"])["image_id"])
    return [line.split(maxsplit=1)[0] for line in attr_file.read_text().splitlines()[2:] if line.strip()]


def _celeba_problems(root: Path) -> list[str]:
    if not root.is_dir():
        return [f"CelebA folder {root} does not exist: put the CelebA release there (docs/data.md)"]
    problems = []
    found = {}
    for what, names in (("attribute", ATTR_FILES), ("partition", PARTITION_FILES)):
        found[what] = next((root / n for n in names if (root / n).is_file()), None)
        if found[what] is None:
            problems.append(f"no CelebA {what} file in {root}: looked for {' and '.join(names)}")
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
    """Can the setting's splits be made from the labels (attributes present, every group's quota filled)?"""
    d = params.data
    try:
        make_split(d.dataset, data_root, d.target, d.sensitive, d.bias_degree, d.n_train, seed=d.split_seed,
                   utkface_test_per_group=d.utkface_test_per_group or None, utkface_val_fraction=d.utkface_val_fraction)
    except AimfairError as e:
        return [f"the splits of {d.dataset} {d.target}/{d.sensitive}: {e}"]
    return []


def _diffusion_problems(params: Params, root: Path) -> list[str]:
    from aimfair.generate.sd import read_pipeline_index, resolve_model_folder

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


def missing_inputs(params: Params, root: Path) -> list[str]:
    """Every input the setting in `params` needs that is absent or incomplete: dataset files, diffusion weights,
    ImageNet weights. Empty when all is in place."""
    data_root = (root / params.data.root).resolve()
    problems = {"celeba": _celeba_problems, "utkface": _utkface_problems}.get(params.data.dataset,
                                                                              lambda _: [])(data_root)
    if params.data.dataset != "tinyfaces" and not problems:  # the files are there: do the labels fill the split?
        problems += _split_problems(params, data_root)
    if params.generate.model != "builtin":
        problems += _diffusion_problems(params, root)
    if params.pretrain.pretrained == "imagenet" and not imagenet_weights_path().exists():
        problems.append(f"ImageNet weights for resnet18 not found at {imagenet_weights_path()}: copy "
                        "resnet18-f37072fd.pth there (or point TORCH_HOME at a folder with hub/checkpoints/)")
    return problems

"""Where each stage reads and writes, relative to the repository root.

Notebooks run with the notebook's folder as working directory under JupyterLab and with the caller's under
papermill, so every path is resolved from the project root, found by walking up to params.yaml (the
repository, or a paper setting folder: paper/<setting>/).
"""

from __future__ import annotations

import os
from pathlib import Path

from aimfair.core.errors import AimfairError

WORK = Path("work")  # intermediate results (DVC outputs, not in git)
SPLITS = WORK / "splits"  # train.csv, val.csv, test.csv, split.json
CACHE = WORK / "cache"  # decode-once image arrays (aimfair.data.cache); safe to delete
TINYFACES = WORK / "tinyfaces"  # the built-in world, rendered by the world stage
PROMPTS = WORK / "prompts"  # prompts.json, rejected.csv, diversity.csv
GENERATOR = Path("models") / "tinyfaces_t2i"  # the built-in text-to-image model: committed, a few MB
GENERATOR_WORK = WORK / "generator"  # its resume file while it trains
DATASET_GENERATOR = GENERATOR_WORK / "model"  # the built-in model trained on the dataset's own images: never
#                                               committed, it is derived from the user's data
POOL = WORK / "pool"  # the synthetic pool: {y}_{s}/*.png, manifest.csv
PRETRAIN = WORK / "pretrain"  # seed_<seed>/best.safetensors, best.json, history.csv
REPAIRED = WORK / "repaired"  # real training images with the protected attribute edited: {y}_{s}/*.png
MASKS = WORK / "masks"  # seed_<seed>/mask.json, scores.csv
FINETUNE = WORK / "finetune"  # <strategy>/seed_<seed>/best.safetensors, history.csv, run.json
LOCKS = WORK / ".locks"  # one lock file per training run, so that two processes never train the same one
PARTIAL = WORK / "partial"  # the same for the Table 4 strategies (experiments/dvc.yaml, stage table4)
ROBUST = WORK / "robust"  # the same for the group-robustness baselines (experiments/dvc.yaml, stage robust)
ABLATIONS = WORK / "ablations"  # <ablation>/: its runs, masks and pools (experiments/dvc.yaml, stages ablation@*)
REPORTS = Path("reports")  # metrics, tables and figures
FIGURES = REPORTS / "figures"
TABLE4_REPORTS = REPORTS / "table4"  # stage table4's tables and metrics, as stage evaluate's in reports/
ROBUST_REPORTS = REPORTS / "robust"  # stage robust's
ABLATION_REPORTS = REPORTS / "ablations"  # <ablation>/: the same for each ablation


def repo_root(start: str | os.PathLike | None = None) -> Path:
    """The nearest folder at or above `start` (default: the working directory) holding params.yaml: the
    repository itself, or one of the paper's setting folders (paper/<setting>/), each a root of its own."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "params.yaml").exists():
            return folder
    raise AimfairError(f"no params.yaml at or above {here}: run inside the aimfair repository (or a paper setting "
                       "folder)")


def generator_dir(corpus: str) -> Path:
    """Folder of the built-in text-to-image model trained on `corpus` (generator.corpus: studio | dataset)."""
    return DATASET_GENERATOR if corpus == "dataset" else GENERATOR


def pretrain_dir(seed: int) -> Path:
    """Folder of the biased model trained with `seed`."""
    return PRETRAIN / f"seed_{seed}"


def mask_dir(seed: int) -> Path:
    """Folder of the selective mask of the biased model trained with `seed`."""
    return MASKS / f"seed_{seed}"


def cosine_mask_dir(seed: int) -> Path:
    """Folder of the tensor mask by the cosine rule (Table 4's aimfair_cosine), beside the seed's mask."""
    return mask_dir(seed) / "cosine"

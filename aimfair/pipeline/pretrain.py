"""Stage 04_pretrain: ERM of the biased classifier on the real training split, one run per seed."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from aimfair.classifier.models import build_classifier
from aimfair.classifier.train import fit, seed_everything
from aimfair.config import Params
from aimfair.core import io, paths
from aimfair.core.device import setup_torch
from aimfair.core.errors import AimfairError
from aimfair.data.images import load_images


def run_pretrain(params: Params, root: Path, seed: int, progress: bool = True) -> pd.DataFrame:
    """Train the biased classifier for one seed; writes work/pretrain/seed_<seed>/. Returns the history."""
    p = params.pretrain
    with io.exclusive(root / paths.LOCKS / f"pretrain_seed_{seed}.lock", f"the biased model of seed {seed}"):
        device = setup_torch(p.threads, p.device)
        train = load_images(params, root, "train", p.input_size, progress)
        val = load_images(params, root, "val", p.input_size, progress)
        seed_everything(seed)  # the initial weights depend on the seed
        model = build_classifier(p.arch, p.pretrained)
        meta = dict(stage="pretrain", arch=p.arch, pretrained=p.pretrained, input_size=p.input_size, seed=seed,
                    target=params.data.target, sensitive=params.data.sensitive, dataset=params.data.dataset)
        return fit(model, train, val, p.train_config(seed), root / paths.pretrain_dir(seed), device, meta,
                   progress=progress)


def read_history(root: Path, seed: int) -> pd.DataFrame:
    """The training curve of one seed's biased model."""
    path = root / paths.pretrain_dir(seed) / "history.csv"
    if not path.exists():
        raise AimfairError(f"{path} does not exist: run the pretrain stage for seed {seed} (dvc repro)")
    return pd.read_csv(path)

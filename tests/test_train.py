"""Training: learning, model selection, resuming a killed run, NaN losses, prediction order."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from aimfair import train
from aimfair.data.loading import ImageSet
from aimfair.errors import AimfairError
from aimfair.models import build_classifier
from aimfair.train import TrainConfig, fit, predict_proba

CPU = torch.device("cpu")


def _bright_or_dark(n, seed):
    """Label 1 = bright image, 0 = dark: learnable in a couple of epochs."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    base = np.where(y[:, None, None, None] == 1, 190, 60)
    pixels = np.clip(base + rng.normal(0, 20, (n, 3, 16, 16)), 0, 255).astype(np.uint8)
    return ImageSet(pixels=pixels, y=y, s=rng.integers(0, 2, n), image_ids=[f"{i}.jpg" for i in range(n)])


CFG = TrainConfig(epochs=3, batch_size=16, lr=0.01, milestones=[2], input_size=16, crop_scale=(0.8, 1.0), seed=1)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_fit_learns_and_keeps_the_best_validation_epoch(tmp_path):
    torch.manual_seed(0)
    model = build_classifier()
    history = fit(model, _bright_or_dark(64, 0), _bright_or_dark(32, 1), CFG, tmp_path, CPU, {"seed": 1},
                  progress=False)
    assert list(history["epoch"]) == [1, 2, 3]
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]
    assert history["val_acc"].max() >= 90
    sidecar = json.loads((tmp_path / "best.json").read_text())
    assert sidecar["epoch"] == int(history.loc[history["val_acc"].idxmax(), "epoch"])
    assert sidecar["val_acc"] == history["val_acc"].max() and sidecar["seed"] == 1
    assert pd.read_csv(tmp_path / "history.csv").shape[0] == 3
    assert not (tmp_path / "resume.pt").exists()


def test_a_killed_run_resumes_where_it_stopped(tmp_path, monkeypatch):
    train_set, val_set = _bright_or_dark(48, 0), _bright_or_dark(16, 1)
    calls = {"n": 0}
    real_accuracy = train.accuracy

    def crash_in_epoch_two(*args):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed")
        return real_accuracy(*args)

    monkeypatch.setattr(train, "accuracy", crash_in_epoch_two)
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        fit(build_classifier(), train_set, val_set, CFG, tmp_path, CPU, progress=False)
    assert (tmp_path / "resume.pt").exists() and len(pd.read_csv(tmp_path / "history.csv")) == 1
    monkeypatch.setattr(train, "accuracy", real_accuracy)

    resumed = fit(build_classifier(), train_set, val_set, CFG, tmp_path, CPU, progress=False)
    assert list(resumed["epoch"]) == [1, 2, 3]
    # the same run without the crash gives the same curve: the resume state is complete
    torch.manual_seed(0)
    straight = fit(build_classifier(), train_set, val_set, CFG, tmp_path / "straight", CPU, progress=False)
    assert np.allclose(resumed["train_loss"], straight["train_loss"], atol=1e-4)


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = TrainConfig(epochs=2, batch_size=16, lr=1e12, milestones=[5], input_size=16, seed=1)
    with pytest.raises(AimfairError, match="learning rate"):
        fit(build_classifier(), _bright_or_dark(64, 0), _bright_or_dark(16, 1), cfg, tmp_path, CPU, progress=False)


def test_predictions_keep_input_order_and_do_not_depend_on_batch_size(tmp_path):
    model = build_classifier()
    images = _bright_or_dark(20, 3)
    a = predict_proba(model, images, CPU, batch_size=7)
    b = predict_proba(model, images, CPU, batch_size=20)
    assert a.shape == (20,) and ((a >= 0) & (a <= 1)).all()
    assert np.allclose(a, b, atol=1e-5)
    flipped = ImageSet(images.pixels[::-1].copy(), images.y[::-1], images.s[::-1], images.image_ids[::-1])
    assert np.allclose(predict_proba(model, flipped, CPU, batch_size=7), a[::-1], atol=1e-5)

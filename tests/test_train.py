"""Training: learning, model selection, resuming a killed run, NaN losses, prediction order."""

import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from aimfair.classifier import train
from aimfair.classifier.models import build_classifier, load_checkpoint, read_sidecar, save_checkpoint
from aimfair.classifier.train import fit, predict_proba
from aimfair.config import TrainConfig
from aimfair.core.errors import AimfairError
from aimfair.data.loading import ImageSet

CPU = torch.device("cpu")


def _bright_or_dark(n, seed):
    """Label 1 = bright image, 0 = dark: learnable in a couple of epochs."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    base = np.where(y[:, None, None, None] == 1, 190, 60)
    pixels = np.clip(base + rng.normal(0, 20, (n, 3, 16, 16)), 0, 255).astype(np.uint8)
    return ImageSet(pixels=pixels, y=y, s=rng.integers(0, 2, n), image_ids=[f"{i}.jpg" for i in range(n)])


CFG = TrainConfig(epochs=3, batch_size=16, lr=0.01, milestones=[2], input_size=16, crop_scale=(0.8, 1.0), seed=1)


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_one_training_step_changes_the_weights_and_saves_them(tmp_path):
    torch.manual_seed(0)
    model = build_classifier()
    before = _state(model)
    cfg = replace(CFG, epochs=1, batch_size=32)  # 32 images: exactly one optimiser step
    history = fit(model, _bright_or_dark(32, 0), _bright_or_dark(8, 1), cfg, tmp_path, CPU, progress=False)
    assert len(history) == 1
    after = _state(model)
    for name, param in model.named_parameters():
        assert not torch.equal(before[name], after[name]), f"{name} did not move"
    # the single epoch is the best one: its weights are the checkpoint
    saved = build_classifier()
    load_checkpoint(saved, tmp_path / "best.safetensors")
    for name, value in after.items():
        assert torch.equal(saved.state_dict()[name], value), name


def test_fit_learns_and_keeps_the_best_validation_epoch(tmp_path):
    torch.manual_seed(0)
    model = build_classifier()
    history = fit(model, _bright_or_dark(64, 0), _bright_or_dark(32, 1), CFG, tmp_path, CPU, {"seed": 1},
                  progress=False)
    assert list(history.columns) == ["epoch", "train_loss", "train_acc", "val_acc", "lr"]
    assert list(history["epoch"]) == [1, 2, 3]
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]
    assert history["val_acc"].max() >= 90
    # MultiStepLR: lr is multiplied by gamma after the milestone epoch
    assert np.allclose(history["lr"], [0.01, 0.01, 0.001])

    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.json", "best.safetensors", "history.csv"]
    sidecar = json.loads((tmp_path / "best.json").read_text())
    assert sidecar["epoch"] == int(history.loc[history["val_acc"].idxmax(), "epoch"])
    assert sidecar["val_acc"] == history["val_acc"].max() and sidecar["seed"] == 1
    assert sidecar["config"]["lr"] == CFG.lr and sidecar["config"]["epochs"] == 3
    on_disk = pd.read_csv(tmp_path / "history.csv")
    assert len(on_disk) == 3 and np.allclose(on_disk["val_acc"], history["val_acc"])
    assert ((on_disk["train_acc"] >= 0) & (on_disk["train_acc"] <= 100)).all()


@pytest.mark.parametrize("accuracies, best", [([50.0, 90.0, 70.0], 2), ([80.0, 80.0, 60.0], 1)])
def test_the_checkpoint_is_the_best_validation_epoch(tmp_path, monkeypatch, accuracies, best):
    snapshots = []
    torch.manual_seed(0)
    model = build_classifier()

    def scripted_accuracy(probabilities, y):
        snapshots.append(_state(model))
        return float(accuracies[len(snapshots) - 1])

    monkeypatch.setattr(train, "accuracy_of", scripted_accuracy)
    history = fit(model, _bright_or_dark(16, 0), _bright_or_dark(4, 1), CFG, tmp_path, CPU, progress=False)
    assert history["val_acc"].tolist() == accuracies
    saved = build_classifier()
    sidecar = load_checkpoint(saved, tmp_path / "best.safetensors")
    assert sidecar["epoch"] == best and sidecar["val_acc"] == accuracies[best - 1]
    # the weights are those of the best epoch (the first of equal ones), not the last
    for name, value in snapshots[best - 1].items():
        assert torch.equal(saved.state_dict()[name], value), name
    assert not torch.equal(saved.conv1.weight, snapshots[-1]["conv1.weight"])


def _killed_in_epoch_two(train_set, val_set, out, monkeypatch, resume_every_s: float = 0) -> None:
    """Run fit with CFG and kill it (as Ctrl-C would) after the first epoch's state was written."""
    calls = {"n": 0}
    real_accuracy = train.accuracy_of

    def crash_in_epoch_two(*args):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed")
        return real_accuracy(*args)

    monkeypatch.setattr(train, "accuracy_of", crash_in_epoch_two)
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        fit(build_classifier(), train_set, val_set, CFG, out, CPU, progress=False, resume_every_s=resume_every_s)
    monkeypatch.setattr(train, "accuracy_of", real_accuracy)


def test_a_killed_run_resumes_where_it_stopped(tmp_path, monkeypatch, capsys):
    train_set, val_set = _bright_or_dark(48, 0), _bright_or_dark(16, 1)
    _killed_in_epoch_two(train_set, val_set, tmp_path, monkeypatch)
    assert (tmp_path / "resume.pt").exists() and (tmp_path / "best.safetensors").exists()
    crashed = pd.read_csv(tmp_path / "history.csv")
    assert crashed["epoch"].tolist() == [1]
    capsys.readouterr()

    resumed = fit(build_classifier(), train_set, val_set, CFG, tmp_path, CPU, progress=False)
    assert f"resuming {tmp_path} from epoch 1" in capsys.readouterr().out
    assert list(resumed["epoch"]) == [1, 2, 3]
    assert resumed["train_loss"].iloc[0] == pytest.approx(crashed["train_loss"].iloc[0])  # epoch 1 was not redone
    assert len(pd.read_csv(tmp_path / "history.csv")) == 3
    assert not (tmp_path / "resume.pt").exists()
    # the same run without the crash gives the same curve: the resume state is complete
    torch.manual_seed(0)
    straight = fit(build_classifier(), train_set, val_set, CFG, tmp_path / "straight", CPU, progress=False)
    assert np.allclose(resumed["train_loss"], straight["train_loss"], atol=1e-4)
    assert np.allclose(resumed["val_acc"], straight["val_acc"])


def test_a_best_epoch_newer_than_the_resume_state_is_not_replaced_by_a_worse_one(tmp_path, monkeypatch):
    # the resume state is written at most every resume_every_s, so a killed run can have kept a best
    # epoch its state does not know of; resumed epochs that score lower must not overwrite it
    train_set, val_set = _bright_or_dark(48, 0), _bright_or_dark(16, 1)
    monkeypatch.setattr(train, "accuracy_of", lambda *args: 50.0)  # epoch 1 scores 50
    _killed_in_epoch_two(train_set, val_set, tmp_path, monkeypatch)  # resume state after epoch 1
    newer = build_classifier()
    save_checkpoint(newer, tmp_path / "best.safetensors", dict(epoch=2, val_acc=99.5, config=asdict(CFG)))
    monkeypatch.setattr(train, "accuracy_of", lambda *args: 90.0)  # the resumed epochs 2 and 3 score lower
    history = fit(build_classifier(), train_set, val_set, CFG, tmp_path, CPU, progress=False)
    assert list(history["epoch"]) == [1, 2, 3]
    kept = build_classifier()
    assert load_checkpoint(kept, tmp_path / "best.safetensors")["val_acc"] == 99.5
    assert all(torch.equal(kept.state_dict()[k], v) for k, v in newer.state_dict().items())


def test_the_resume_state_is_written_at_most_every_resume_every_s(tmp_path, monkeypatch):
    train_set, val_set = _bright_or_dark(48, 0), _bright_or_dark(16, 1)
    _killed_in_epoch_two(train_set, val_set, tmp_path, monkeypatch, resume_every_s=3600)
    # epoch 1 took far less than an hour: no resume state yet, but its model and history are kept
    assert not (tmp_path / "resume.pt").exists()
    assert (tmp_path / "best.safetensors").exists() and len(pd.read_csv(tmp_path / "history.csv")) == 1


def test_a_resume_state_of_another_config_is_ignored(tmp_path, monkeypatch, capsys):
    train_set, val_set = _bright_or_dark(32, 0), _bright_or_dark(8, 1)
    _killed_in_epoch_two(train_set, val_set, tmp_path, monkeypatch)
    capsys.readouterr()

    other = replace(CFG, epochs=2, lr=0.02)
    history = fit(build_classifier(), train_set, val_set, other, tmp_path, CPU, progress=False)
    assert "resuming" not in capsys.readouterr().out
    assert list(history["epoch"]) == [1, 2] and np.allclose(history["lr"], [0.02, 0.02])
    assert json.loads((tmp_path / "best.json").read_text())["config"]["lr"] == 0.02


def test_a_resume_state_of_other_data_is_ignored(tmp_path, monkeypatch, capsys):
    train_set, val_set = _bright_or_dark(32, 0), _bright_or_dark(8, 1)
    _killed_in_epoch_two(train_set, val_set, tmp_path, monkeypatch)
    capsys.readouterr()

    relabelled = ImageSet(train_set.pixels, 1 - train_set.y, train_set.s, train_set.image_ids)  # a new split
    history = fit(build_classifier(), relabelled, val_set, CFG, tmp_path, CPU, progress=False)
    assert "resuming" not in capsys.readouterr().out and list(history["epoch"]) == [1, 2, 3]


def test_nan_loss_stops_with_a_clear_error(tmp_path):
    cfg = TrainConfig(epochs=2, batch_size=16, lr=1e12, milestones=[5], input_size=16, seed=1)
    with pytest.raises(AimfairError, match=r"loss became nan at epoch 1 .*lower the learning rate \(lr=1000000000000\.0\)"):
        fit(build_classifier(), _bright_or_dark(64, 0), _bright_or_dark(16, 1), cfg, tmp_path, CPU, progress=False)


class _NanInEpochTwo(nn.Module):
    """A classifier whose training loss becomes NaN after its first epoch's batches."""

    def __init__(self, batches_per_epoch):
        super().__init__()
        self.inner, self.budget = build_classifier(), batches_per_epoch

    def forward(self, x):
        out = self.inner(x)
        if self.training:
            self.budget -= 1
            if self.budget < 0:
                return out * float("nan")
        return out


def test_nan_loss_keeps_the_last_good_checkpoint(tmp_path):
    model = _NanInEpochTwo(batches_per_epoch=2)
    cfg = replace(CFG, epochs=3)
    with pytest.raises(AimfairError, match=r"loss became nan at epoch 2 .*lr=0\.01.*last good checkpoint is kept"):
        fit(model, _bright_or_dark(32, 0), _bright_or_dark(8, 1), cfg, tmp_path, CPU, progress=False,
            resume_every_s=0)
    assert json.loads((tmp_path / "best.json").read_text())["epoch"] == 1
    assert pd.read_csv(tmp_path / "history.csv")["epoch"].tolist() == [1]
    assert (tmp_path / "resume.pt").exists()


def test_predictions_keep_input_order_and_do_not_depend_on_batch_size():
    torch.manual_seed(0)
    model = build_classifier()
    model.fc.bias.data.fill_(0.0)
    images = _bright_or_dark(20, 3)
    a = predict_proba(model, images, CPU, batch_size=7)
    assert a.shape == (20,) and a.dtype == np.float32 and ((a >= 0) & (a <= 1)).all()
    assert np.unique(a.round(6)).size > 1  # not a constant: the order check below means something
    assert not model.training  # prediction runs in eval mode (batch-norm running statistics)
    b = predict_proba(model, images, CPU, batch_size=20)
    assert np.allclose(a, b, atol=1e-5)
    flipped = ImageSet(images.pixels[::-1].copy(), images.y[::-1], images.s[::-1], images.image_ids[::-1])
    assert np.allclose(predict_proba(model, flipped, CPU, batch_size=7), a[::-1], atol=1e-5)
    # one image alone gets the same probability as in a batch
    single = ImageSet(images.pixels[5:6], images.y[5:6], images.s[5:6], images.image_ids[5:6])
    assert predict_proba(model, single, CPU)[0] == pytest.approx(a[5], abs=1e-5)


def test_accuracy_is_a_percentage_at_threshold_one_half():
    assert train.accuracy_of(np.array([0.2, 0.5, 0.7, 0.9]), np.array([0, 1, 0, 1])) == 75.0
    # a multi-label set: averaged over every label of every image
    assert train.accuracy_of(np.array([[0.9, 0.1], [0.6, 0.4]]), np.array([[1, 1], [1, 0]])) == 75.0


def test_a_seeded_run_writes_byte_identical_outputs(tmp_path):
    """DVC hashes the outputs: the same seed must give the same files, so dvc.lock is reproduced as is."""
    for run in ("a", "b"):
        torch.manual_seed(0)
        fit(build_classifier(), _bright_or_dark(32, 0), _bright_or_dark(8, 1), replace(CFG, epochs=2),
            tmp_path / run, CPU, {"seed": 1}, progress=False)
    for name in ("best.safetensors", "best.json", "history.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_bfloat16_training_learns_validates_in_bfloat16_and_records_its_precision(tmp_path, monkeypatch):
    seen = []
    real_predict = train.predict_proba
    monkeypatch.setattr(train, "predict_proba",
                        lambda *args, **kwargs: seen.append(kwargs["precision"]) or real_predict(*args, **kwargs))
    torch.manual_seed(0)
    model = build_classifier()
    dtypes = set()  # what the convolutions compute in, in training steps and validation passes
    model.conv1.register_forward_hook(lambda module, inputs, output: dtypes.add(output.dtype))
    history = fit(model, _bright_or_dark(64, 0), _bright_or_dark(32, 1), replace(CFG, precision="bfloat16"),
                  tmp_path, CPU, progress=False)
    assert seen == ["bfloat16"] * 3  # validation runs in the precision of the training
    assert dtypes == {torch.bfloat16}
    assert history["val_acc"].max() >= 90
    assert json.loads((tmp_path / "best.json").read_text())["config"]["precision"] == "bfloat16"
    assert all(v.dtype == torch.float32 for v in model.state_dict().values() if v.is_floating_point())
    plain = build_classifier()
    plain.conv1.register_forward_hook(lambda module, inputs, output: dtypes.add(output.dtype))
    dtypes.clear()
    fit(plain, _bright_or_dark(16, 0), _bright_or_dark(8, 1), replace(CFG, epochs=1), tmp_path / "f32", CPU,
        progress=False)
    assert dtypes == {torch.float32}  # and float32 means no autocast at all


def test_fit_needs_a_resolved_precision(tmp_path):
    with pytest.raises(AimfairError, match="precision must be float32 or bfloat16 when a run starts, got 'auto'"):
        fit(build_classifier(), _bright_or_dark(8, 0), _bright_or_dark(8, 1), replace(CFG, precision="auto"),
            tmp_path, CPU, progress=False)


def test_cpu_training_runs_in_channels_last_memory_and_saves_plain_tensors(tmp_path):
    model = build_classifier()
    fit(model, _bright_or_dark(16, 0), _bright_or_dark(8, 1), replace(CFG, epochs=1), tmp_path, CPU, progress=False)
    assert model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    saved = build_classifier()
    load_checkpoint(saved, tmp_path / "best.safetensors")  # safetensors holds ordinary contiguous tensors
    assert torch.equal(saved.conv1.weight, model.conv1.weight)


class _Planted:
    """A pickle that would touch a file when unpickled with weights_only=False."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("content", ["garbage", "truncated", "planted"])
def test_a_damaged_or_foreign_resume_state_is_set_aside_and_never_runs_code(tmp_path, monkeypatch, capsys, content):
    train_set, val_set = _bright_or_dark(48, 0), _bright_or_dark(16, 1)
    resume, marker = tmp_path / "run" / "resume.pt", tmp_path / "ran"
    resume.parent.mkdir()
    if content == "garbage":
        resume.write_bytes(b"\x00not a torch file" * 10)
    elif content == "truncated":
        _killed_in_epoch_two(train_set, val_set, resume.parent, monkeypatch)
        resume.write_bytes(resume.read_bytes()[:5000])
    else:
        torch.save(dict(run_id="x", model=_Planted(marker)), resume)
    capsys.readouterr()
    history = fit(build_classifier(), train_set, val_set, CFG, resume.parent, CPU, progress=False)
    assert list(history["epoch"]) == [1, 2, 3]  # started over, to the end
    assert f"ignoring the resume state {resume}" in capsys.readouterr().err
    assert not marker.exists() and not resume.exists()


def test_monitored_sets_are_scored_per_group_and_can_choose_the_epoch(tmp_path, monkeypatch):
    from aimfair.core.groups import GROUPS

    train_set, val_set, monitored = _bright_or_dark(48, 0), _bright_or_dark(16, 1), _bright_or_dark(32, 2)
    # the monitored set's worst group scores 10, 90, 30 in epochs 1-3: selecting on it keeps epoch 2
    scores = iter([10.0, 90.0, 30.0])
    monkeypatch.setattr(train, "group_accuracies", lambda *args: {g: 95.0 for g in GROUPS} | {"0_0": next(scores)})
    history = fit(build_classifier(), train_set, val_set, CFG, tmp_path, CPU, progress=False,
                  monitors={"synthetic_val": monitored}, select="synthetic_val_wst")
    assert history["synthetic_val_wst"].tolist() == [10.0, 90.0, 30.0]
    assert {f"synthetic_val_acc_{g}" for g in GROUPS} <= set(history.columns)
    sidecar = read_sidecar(tmp_path / "best.safetensors")
    assert (sidecar["epoch"], sidecar["selected_by"], sidecar["selected_value"]) == (2, "synthetic_val_wst", 90.0)


def test_the_validation_images_are_predicted_once_per_epoch_when_they_are_also_monitored(tmp_path, monkeypatch):
    val_set, predicted = _bright_or_dark(16, 1), []
    real_predict = train.predict_proba
    monkeypatch.setattr(train, "predict_proba",
                        lambda model, images, *args, **kwargs: predicted.append(images) or real_predict(
                            model, images, *args, **kwargs))
    history = fit(build_classifier(), _bright_or_dark(48, 0), val_set, CFG, tmp_path, CPU, progress=False,
                  monitors={"real_val": val_set})
    assert len(predicted) == 3 and all(images is val_set for images in predicted)
    assert history["real_val_acc_0_0"].notna().all()


def test_a_monitored_sets_group_accuracies_are_its_own(tmp_path):
    history = fit(build_classifier(), _bright_or_dark(48, 0), _bright_or_dark(16, 1), CFG, tmp_path, CPU,
                  progress=False, monitors={"real_val": _bright_or_dark(32, 2)})
    last = history.iloc[-1]
    groups = [last[f"real_val_acc_{g}"] for g in ("0_0", "0_1", "1_0", "1_1")]
    assert last["real_val_wst"] == min(groups) and all(0 <= a <= 100 for a in groups)


def test_an_unknown_selection_column_is_refused_before_training(tmp_path):
    with pytest.raises(AimfairError, match=r"cannot select epochs by 'real_val_wst': choose one of val_acc, "
                                           r"synthetic_val_wst"):
        fit(build_classifier(), _bright_or_dark(48, 0), _bright_or_dark(16, 1), CFG, tmp_path, CPU,
            progress=False, monitors={"synthetic_val": _bright_or_dark(16, 2)}, select="real_val_wst")
    assert not (tmp_path / "best.safetensors").exists()

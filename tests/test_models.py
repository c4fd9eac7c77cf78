"""The classifier factory and safetensors checkpoints with their JSON sidecar."""

import json

import pytest
import torch
from torch import nn

from aimfair.errors import AimfairError
from aimfair.models import build_classifier, load_checkpoint, save_checkpoint


def test_resnet18_with_one_logit():
    model = build_classifier()
    assert len(list(model.parameters())) == 62  # the paper's 62 parameter tensors
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 1)


def test_imagenet_weights_are_never_downloaded(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(AimfairError, match=r"resnet18-f37072fd\.pth.*pretrained: none") as error:
        build_classifier(pretrained="imagenet")
    assert str(tmp_path) in str(error.value)


def test_imagenet_weights_load_from_the_local_cache(tmp_path, monkeypatch):
    from torchvision import models

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    reference = models.resnet18(weights=None)
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(reference.state_dict(), tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    model = build_classifier(pretrained="imagenet")
    assert torch.equal(model.conv1.weight, reference.conv1.weight)
    assert model.fc.out_features == 1


def test_unknown_architecture_or_weights():
    with pytest.raises(AimfairError, match="unknown architecture"):
        build_classifier("vit")
    with pytest.raises(AimfairError, match="pretrained must be one of"):
        build_classifier(pretrained="laion")


def test_checkpoint_round_trip_with_sidecar(tmp_path):
    model = build_classifier()
    save_checkpoint(model, tmp_path / "m.safetensors", {"seed": 7})
    sidecar = json.loads((tmp_path / "m.json").read_text())
    assert sidecar["seed"] == 7 and sidecar["tensors"]["fc.weight"] == [1, 512]
    other = build_classifier()
    assert load_checkpoint(other, tmp_path / "m.safetensors")["seed"] == 7
    for (name, a), b in zip(model.state_dict().items(), other.state_dict().values()):
        assert torch.equal(a, b), name


def test_a_checkpoint_of_another_model_is_refused(tmp_path):
    two_outputs = build_classifier()
    two_outputs.fc = nn.Linear(512, 2)
    save_checkpoint(two_outputs, tmp_path / "two.safetensors", {})
    with pytest.raises(AimfairError, match=r"does not match the model.*fc\.(weight|bias)"):
        load_checkpoint(build_classifier(), tmp_path / "two.safetensors")
    save_checkpoint(nn.Sequential(nn.Linear(3, 1)), tmp_path / "tiny.safetensors", {})
    with pytest.raises(AimfairError, match="missing tensor"):
        load_checkpoint(build_classifier(), tmp_path / "tiny.safetensors")
    with pytest.raises(AimfairError, match="does not exist"):
        load_checkpoint(build_classifier(), tmp_path / "absent.safetensors")

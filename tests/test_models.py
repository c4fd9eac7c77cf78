"""The classifier factory and safetensors checkpoints with their JSON sidecar."""

import json

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from aimfair.classifier.models import (
    SmallMapConv2d,
    build_classifier,
    imagenet_weights_path,
    load_checkpoint,
    read_sidecar,
    save_checkpoint,
)
from aimfair.core.errors import AimfairError


def test_resnet18_with_one_logit():
    model = build_classifier()
    assert len(list(model.parameters())) == 62  # the paper's 62 parameter tensors
    assert isinstance(model.fc, nn.Linear) and (model.fc.in_features, model.fc.out_features) == (512, 1)
    assert sum(p.numel() for p in model.parameters()) == 11_177_025  # ResNet-18 with a 1-logit head
    model.eval()
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 1)


def test_imagenet_weights_are_never_downloaded(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def no_download(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    with pytest.raises(AimfairError, match=r"resnet18-f37072fd\.pth.*pretrained: none") as error:
        build_classifier(pretrained="imagenet")
    assert str(imagenet_weights_path()) in str(error.value)
    assert str(tmp_path) in str(error.value)
    assert list(tmp_path.iterdir()) == []  # nothing was fetched or created


def test_imagenet_weights_load_from_the_local_cache(tmp_path, monkeypatch):
    from torchvision import models

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    reference = models.resnet18(weights=None)
    assert imagenet_weights_path() == tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    imagenet_weights_path().parent.mkdir(parents=True)
    torch.save(reference.state_dict(), imagenet_weights_path())
    model = build_classifier(pretrained="imagenet")
    for name, value in reference.state_dict().items():
        if not name.startswith("fc."):
            assert torch.equal(model.state_dict()[name], value), name
    assert model.fc.out_features == 1  # the 1000-class head is replaced


@pytest.mark.parametrize("kwargs, message", [
    (dict(arch="vit"), "unknown architecture 'vit'"),
    (dict(arch="resnet50"), "unknown architecture 'resnet50'"),
    (dict(pretrained="laion"), "pretrained must be one of"),
    (dict(pretrained="ImageNet"), "pretrained must be one of"),
])
def test_unknown_architecture_or_weights(kwargs, message):
    with pytest.raises(AimfairError, match=message):
        build_classifier(**kwargs)


def _trained_a_little(seed=0):
    torch.manual_seed(seed)
    model = build_classifier()
    model.train()
    model(torch.randn(4, 3, 32, 32))  # moves the batch-norm running statistics away from their defaults
    return model


def test_checkpoint_round_trip_with_sidecar(tmp_path):
    model = _trained_a_little()
    save_checkpoint(model, tmp_path / "m.safetensors", {"seed": 7, "stage": "pretrain"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.safetensors"]  # no temporary files

    sidecar = json.loads((tmp_path / "m.json").read_text())
    assert sidecar["seed"] == 7 and sidecar["stage"] == "pretrain"
    state = model.state_dict()
    assert sidecar["tensors"] == {k: list(v.shape) for k, v in state.items()}
    assert sidecar["tensors"]["fc.weight"] == [1, 512]
    assert read_sidecar(tmp_path / "m.safetensors") == sidecar
    assert set(load_file(str(tmp_path / "m.safetensors"))) == set(state)  # plain safetensors

    other = _trained_a_little(seed=1)
    assert not torch.equal(other.conv1.weight, model.conv1.weight)
    assert load_checkpoint(other, tmp_path / "m.safetensors") == sidecar
    assert other.state_dict().keys() == state.keys()
    for name, value in state.items():
        assert torch.equal(other.state_dict()[name], value), name
    model.eval(), other.eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model(x), other(x))


def test_a_checkpoint_of_another_head_is_refused_and_the_model_is_untouched(tmp_path):
    two_outputs = build_classifier()
    two_outputs.fc = nn.Linear(512, 2)
    save_checkpoint(two_outputs, tmp_path / "two.safetensors", {})
    target = build_classifier()
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(AimfairError, match=r"two\.safetensors does not match the model.*shape of fc\.(weight|bias)"):
        load_checkpoint(target, tmp_path / "two.safetensors")
    for name, value in before.items():
        assert torch.equal(target.state_dict()[name], value), name


def test_a_checkpoint_of_another_architecture_is_refused(tmp_path):
    save_checkpoint(nn.Sequential(nn.Linear(3, 1)), tmp_path / "tiny.safetensors", {})
    with pytest.raises(AimfairError, match=r"does not match the model \(122 missing tensor\(s\) .*2 unexpected tensor\(s\) e\.g\. 0\.bias"):
        load_checkpoint(build_classifier(), tmp_path / "tiny.safetensors")


def test_missing_checkpoint_or_sidecar(tmp_path):
    with pytest.raises(AimfairError, match=r"absent\.safetensors does not exist"):
        load_checkpoint(build_classifier(), tmp_path / "absent.safetensors")
    save_checkpoint(build_classifier(), tmp_path / "m.safetensors", {})
    (tmp_path / "m.json").unlink()
    with pytest.raises(AimfairError, match=r"sidecar .*m\.json is missing"):
        load_checkpoint(build_classifier(), tmp_path / "m.safetensors")


@pytest.mark.parametrize("size, kernel, stride, padding", [
    (1, 3, 1, 1),  # layer4's 3x3 convolutions at 32 px: only the centre tap meets a pixel
    (2, 3, 2, 1),  # layer4.0.conv1: 2x2 -> 1x1, four taps
    (2, 1, 2, 0),  # layer4.0.downsample
    (3, 3, 3, 0),  # a window that fits the map exactly
    (2, 3, 1, 1),  # a 2x2 output: the ordinary convolution
    (7, 3, 1, 1),  # 224 px inputs: the ordinary convolution
    ((1, 3), (3, 5), 1, (1, 2)),  # non-square maps and kernels
    ((2, 1), (3, 1), (2, 1), (1, 0)),
])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_a_one_pixel_convolution_as_a_matrix_product_equals_the_convolution(size, kernel, stride, padding, layout):
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, kernel, stride, padding)
    small = SmallMapConv2d(8, 16, kernel, stride, padding)
    small.load_state_dict(conv.state_dict())
    h, w = (size, size) if isinstance(size, int) else size
    x = torch.randn(4, 8, h, w).contiguous(memory_format=layout).requires_grad_()
    x_small = x.detach().clone().requires_grad_()
    expected, got = conv(x), small(x_small)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-5)
    weights = torch.randn_like(expected)  # a loss that weighs every output differently
    (expected * weights).sum().backward()
    (got * weights).sum().backward()
    assert torch.allclose(small.weight.grad, conv.weight.grad, atol=1e-5)
    assert torch.allclose(small.bias.grad, conv.bias.grad, atol=1e-5)
    assert torch.allclose(x_small.grad, x.grad, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # under autocast both compute in bfloat16
        assert small(x).dtype == conv(x).dtype == torch.bfloat16
    if size == 1 and kernel == 3:  # the taps that only meet padding get exactly zero gradient, as before
        untouched = torch.ones(3, 3, dtype=torch.bool)
        untouched[1, 1] = False
        assert (small.weight.grad[:, :, untouched] == 0).all()


def test_the_classifier_keeps_resnet18s_names_with_one_pixel_convolutions():
    model = build_classifier()
    convolutions = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convolutions) == 20 and all(type(m) is SmallMapConv2d for m in convolutions)
    from torchvision.models import resnet18
    reference = resnet18(weights=None)
    reference.fc = nn.Linear(512, 1)
    assert list(model.state_dict()) == list(reference.state_dict())  # checkpoints and masks are unchanged
    reference.load_state_dict(model.state_dict())
    reference.eval(), model.eval()
    x = torch.randn(3, 3, 32, 32)
    assert torch.allclose(model(x), reference(x), atol=1e-4)

"""The classifier (torchvision ResNet-18 with one logit) and its checkpoints (safetensors + JSON sidecar)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from torchvision import models

from aimfair.config import ARCHITECTURES, PRETRAINED
from aimfair.core import io
from aimfair.core.errors import AimfairError


def imagenet_weights_path() -> Path:
    """Where torchvision keeps its ResNet-18 ImageNet weights: $TORCH_HOME/hub/checkpoints/resnet18-*.pth."""
    url = models.ResNet18_Weights.IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


class SmallMapConv2d(nn.Conv2d):
    """A Conv2d that computes a single-pixel output as one matrix product (same parameters, same maths).

    At 32 px, ResNet-18's layer4 sees 2x2 and 1x1 feature maps: a 3x3 convolution with padding 1 on a 1x1 map
    only ever multiplies its centre tap with real pixels. oneDNN's CPU kernels handle that badly (the weight
    gradient of one such convolution took 14 ms per batch of 128, the matrix product well under 1), so when the
    output is one pixel the taps that meet the input are cut out and applied with F.linear. The other taps
    get exactly zero gradient, as they do from the convolution. Larger maps (and 224 px inputs) take the
    ordinary convolution.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (h, w), (kh, kw), (sh, sw), (ph, pw) = x.shape[-2:], self.kernel_size, self.stride, self.padding
        one_pixel = (h + 2 * ph - kh) // sh == 0 and (w + 2 * pw - kw) // sw == 0
        if not one_pixel or self.groups != 1 or self.dilation != (1, 1) or self.padding_mode != "zeros":
            return super().forward(x)
        # the output pixel's window covers input rows -ph .. kh-1-ph: keep those inside the map, and their taps
        rows, cols = slice(0, min(h, kh - ph)), slice(0, min(w, kw - pw))
        taps = self.weight[:, :, ph:ph + rows.stop, pw:pw + cols.stop]
        out = F.linear(x[:, :, rows, cols].flatten(1), taps.flatten(1), self.bias)
        return out[:, :, None, None]


def _small_map_convolutions(model: nn.Module) -> nn.Module:
    """Turn every plain Conv2d of `model` into a SmallMapConv2d (the same parameter objects, the same names)."""
    for module in model.modules():
        if type(module) is nn.Conv2d:
            module.__class__ = SmallMapConv2d
    return model


def build_classifier(arch: str = "resnet18", pretrained: str = "none", outputs: int = 1) -> nn.Module:
    """ResNet-18 whose final layer is Linear(512, outputs): one logit for the binary target by default.

    pretrained="imagenet" loads the weights from the local torch cache and never downloads them.
    """
    if arch not in ARCHITECTURES:
        raise AimfairError(f"unknown architecture {arch!r}: choose one of {ARCHITECTURES}")
    if pretrained not in PRETRAINED:
        raise AimfairError(f"pretrained must be one of {PRETRAINED}, got {pretrained!r}")
    model = models.resnet18(weights=None)
    if pretrained == "imagenet":
        path = imagenet_weights_path()
        if not path.exists():
            raise AimfairError(
                f"ImageNet weights for resnet18 not found at {path}: copy resnet18-f37072fd.pth there "
                "(or point TORCH_HOME at a folder that has hub/checkpoints/ with it), or set pretrained: none")
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    model.fc = nn.Linear(model.fc.in_features, outputs)
    return _small_map_convolutions(model)


def save_checkpoint(model: nn.Module, path: str | os.PathLike, meta: dict[str, Any]) -> None:
    """Write the weights to `path` (.safetensors) and `meta` plus the tensor shapes to the JSON sidecar."""
    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    io.require_free_space(path.parent, sum(v.numel() * v.element_size() for v in state.values()), f"writing {path}")
    with io.atomic_path(path) as tmp:
        try:
            save_file(state, str(tmp))
        except SafetensorError as e:  # safetensors reports a full disk in its own error type
            if "space" in str(e).lower() or "storagefull" in str(e).lower():
                raise io.disk_full(path) from None
            raise
    sidecar = dict(meta, tensors={k: list(v.shape) for k, v in state.items()})
    io.write_json(path.with_suffix(".json"), sidecar)


def read_sidecar(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON sidecar of a checkpoint."""
    sidecar = Path(path).with_suffix(".json")
    if not sidecar.exists():
        raise AimfairError(f"checkpoint sidecar {sidecar} is missing: re-run the stage that wrote {path}")
    return io.read_json(sidecar, f"re-run the stage that wrote {path}")


def load_checkpoint(model: nn.Module, path: str | os.PathLike) -> dict[str, Any]:
    """Load weights into `model`, checking names and shapes first; returns the sidecar metadata."""
    path = Path(path)
    if not path.exists():
        raise AimfairError(f"checkpoint {path} does not exist: run the stage that writes it (dvc repro)")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise AimfairError(f"checkpoint {path} is damaged ({str(e).splitlines()[0][:80]}): delete it and re-run the "
                           "stage that writes it (dvc repro)") from None
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    missing, unexpected = sorted(expected.keys() - found.keys()), sorted(found.keys() - expected.keys())
    wrong = sorted(k for k in expected.keys() & found.keys() if expected[k] != found[k])
    if missing or unexpected or wrong:
        detail = []
        if missing:
            detail.append(f"{len(missing)} missing tensor(s) e.g. {missing[0]}")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected tensor(s) e.g. {unexpected[0]}")
        if wrong:
            detail.append(f"shape of {wrong[0]} is {found[wrong[0]]}, model needs {expected[wrong[0]]}")
        raise AimfairError(f"checkpoint {path} does not match the model ({'; '.join(detail)}): "
                           "was it saved for another architecture or number of outputs?")
    model.load_state_dict(state)
    return read_sidecar(path)

"""params.yaml: read it, check every key, type and value against the schema below, hand out typed sections.

Each pipeline stage reads one section. A key that is not in the schema, a value of the wrong type or out of
range is an AimfairError that names the key (`data.n_train must be an integer, got '4k'`), never a silent
default. Keys left out take the defaults written here.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from aimfair.data.cache import BAD_IMAGE_POLICIES
from aimfair.data.splits import DATASETS
from aimfair.data.tinyfaces import WorldConfig
from aimfair.errors import AimfairError
from aimfair.models import ARCHITECTURES, PRETRAINED
from aimfair.train import Optimisation, TrainConfig


@dataclass(frozen=True)
class DataParams:
    """Stage 00_data: which dataset, which attributes, how skewed the training split is."""

    dataset: str = "tinyfaces"
    root: str = "work/tinyfaces"
    target: str = "Smiling"
    sensitive: str = "Male"
    bias_degree: str = "1/9"
    n_train: int = 4000
    split_seed: int = 0
    utkface_test_per_group: int = 0  # 0: 20% of the smallest group (aimfair.data.splits)
    utkface_val_fraction: float = 0.1
    bad_images: str = "skip"
    tinyfaces: WorldConfig = field(default_factory=WorldConfig)

    def __post_init__(self) -> None:
        _choice("data.dataset", self.dataset, DATASETS)
        _choice("data.bad_images", self.bad_images, BAD_IMAGE_POLICIES)
        _check("data.n_train", self.n_train > 0, "must be positive")
        _check("data.utkface_test_per_group", self.utkface_test_per_group >= 0, "must be 0 (automatic) or more")
        _check("data.utkface_val_fraction", 0 <= self.utkface_val_fraction < 1, "must be in [0, 1)")


@dataclass(frozen=True)
class PromptParams:
    """Stage 01_prompts: contextual prompts per group for the text-to-image model."""

    backend: str = "grammar"
    mode: str = "contextual"
    n_per_group: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        # the transformers and openai backends of issue 3 are not built yet
        _choice("prompts.backend", self.backend, ("grammar",))
        _choice("prompts.mode", self.mode, ("contextual", "single"))
        _check("prompts.n_per_group", self.n_per_group > 0, "must be positive")


@dataclass(frozen=True)
class PretrainParams(Optimisation):
    """Stage 04_pretrain: ERM of the biased classifier on the real training split (one run per seed).

    The optimisation keys (epochs, lr, input_size, crop_scale, ...) and their defaults, the paper's
    settings, come from aimfair.train.Optimisation; params.yaml sets smaller ones for the built-in world.
    """

    arch: str = "resnet18"
    pretrained: str = "none"
    device: str = "auto"
    threads: int = 0

    def __post_init__(self) -> None:
        _choice("pretrain.arch", self.arch, ARCHITECTURES)
        _choice("pretrain.pretrained", self.pretrained, PRETRAINED)
        _check("pretrain.device", re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device) is not None,
               "must be auto, cpu, mps, cuda or cuda:N")
        for key in ("input_size", "epochs", "batch_size"):
            _check(f"pretrain.{key}", getattr(self, key) > 0, "must be positive")
        _check("pretrain.lr", self.lr > 0, "must be positive")
        _check("pretrain.threads", self.threads >= 0, "must be 0 (torch's default) or more")
        _check("pretrain.milestones", self.milestones == sorted(self.milestones), "must be increasing epochs")
        lo, hi = self.crop_scale
        _check("pretrain.crop_scale", 0 < lo <= hi <= 1, "must be [low, high] with 0 < low <= high <= 1")

    def train_config(self, seed: int) -> TrainConfig:
        """The settings of one pre-training run."""
        settings = {f.name: copy.copy(getattr(self, f.name)) for f in dataclasses.fields(Optimisation)}
        return TrainConfig(**settings, seed=seed)  # copies: the run owns its milestones list


@dataclass(frozen=True)
class EvaluateParams:
    """Stage 07_evaluate: which split the report is computed on."""

    split: str = "test"
    batch_size: int = 256

    def __post_init__(self) -> None:
        _choice("evaluate.split", self.split, ("val", "test"))
        _check("evaluate.batch_size", self.batch_size > 0, "must be positive")


@dataclass(frozen=True)
class Params:
    """The whole params.yaml."""

    seeds: list[int] = field(default_factory=lambda: [100, 200, 300])
    data: DataParams = field(default_factory=DataParams)
    prompts: PromptParams = field(default_factory=PromptParams)
    pretrain: PretrainParams = field(default_factory=PretrainParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)

    def __post_init__(self) -> None:
        _check("seeds", len(self.seeds) > 0 and len(set(self.seeds)) == len(self.seeds),
               "must be a non-empty list of distinct integers")


def _check(key: str, ok: bool, requirement: str) -> None:
    if not ok:
        raise AimfairError(f"{key} {requirement}: fix it in params.yaml")


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        close = difflib.get_close_matches(value, allowed, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise AimfairError(f"{key} is {value!r}{hint}; choose one of: {', '.join(allowed)}")


_NAMES = {int: ("an integer", "integers"), float: ("a number", "numbers"), str: ("a string", "strings"),
          bool: ("true or false", "booleans")}


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        args = typing.get_args(tp)
        items = _NAMES.get(args[0], (str(args[0]),) * 2)[1]
        return f"a list of {items}" + (f" of length {len(args)}" if origin is tuple else "")
    return _NAMES.get(tp, (str(tp),))[0]


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`; return it in that type or raise naming `key`."""
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)) or (origin is tuple and len(value) != len(args)):
            raise AimfairError(f"{key} must be {_type_name(tp)}, got {value!r}")
        items = [_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is float and isinstance(value, str):
        try:  # YAML reads 1e-3 (no dot) as a string; accept what Python reads as a number
            return float(value)
        except ValueError:
            pass
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, (str, int, float)) and not isinstance(value, bool),
    }.get(tp)
    if not ok:
        raise AimfairError(f"{key} must be {_type_name(tp)}, got {value!r}")
    return tp(value)


def _build(cls: type, data: Any, where: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise AimfairError(f"{where or 'the params file'} must be a mapping of keys to values, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    values = {}
    for key, value in data.items():
        full = f"{where}.{key}" if where else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise AimfairError(f"unknown key {full} in params{hint}; valid keys here: {', '.join(names)}")
        values[key] = _convert(value, hints[key], full)
    return cls(**values)


def parse_params(data: dict) -> Params:
    """Validate a params mapping (as read from YAML) into typed sections."""
    return _build(Params, data, "")


def load_params(path: str | os.PathLike = "params.yaml") -> Params:
    """Read and validate params.yaml."""
    path = Path(path)
    if not path.exists():
        raise AimfairError(f"params file {path} does not exist: run from the repository root or pass its path")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise AimfairError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    return parse_params(data or {})


def to_dict(params: Any) -> dict:
    """A dataclass (section or whole Params) as plain data, e.g. for JSON provenance files."""
    return dataclasses.asdict(params)


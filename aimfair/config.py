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
from fractions import Fraction
from pathlib import Path
from typing import Any

import yaml

from aimfair.core.errors import AimfairError

# ----------------------------------------------------------------------------- the values a key may take

DATASETS: tuple[str, ...] = ("celeba", "tinyfaces", "utkface")
PARTITIONS: tuple[str, ...] = ("official", "seeded")


def parse_bias_degree(text: str | int | float | Fraction) -> Fraction:
    """Parse "1/9", "0.25", "1", 1 or 0.25 into an exact Fraction: the minority groups' size over the majority
    groups', so positive and at most 1."""
    problem = AimfairError(
        f"bias degree '{text}' is not a positive fraction such as 1/9 (skewed) or 1 (balanced)"
    )
    if isinstance(text, bool):
        raise problem
    try:
        # Floats go through their shortest repr so that 0.1 becomes 1/10, not the binary approximation.
        value = Fraction(repr(text) if isinstance(text, float) else str(text).strip())
    except (ValueError, ZeroDivisionError, OverflowError):
        raise problem from None
    if value <= 0:
        raise problem
    if value > 1:  # read as given, it would make the minority groups the majority
        raise AimfairError(f"bias degree '{text}' is above 1: write it as minority/majority, {1 / value} "
                           "(1 is balanced)")
    return value


BAD_IMAGE_POLICIES = ("skip", "fail")  # data.bad_images
ARCHITECTURES = ("resnet18",)  # pretrain.arch
PRETRAINED = ("none", "imagenet")  # pretrain.pretrained
RULES = ("absolute", "cosine")  # selection.rule
GRANULARITIES = ("tensor", "element")  # selection.granularity
BN_MODES = ("train", "eval")  # selection.bn_mode
# finetune.selection: how a fine-tuning run picks its epoch. real_val_acc: overall accuracy on real validation
# images (the paper's; no group labels); synthetic_val_worst: worst-group accuracy on a balanced synthetic
# validation set (no real group labels); real_val_worst: worst-group accuracy on real validation images (needs
# real group labels: an oracle, an upper bound)
SELECTION_RULES = ("real_val_acc", "synthetic_val_worst", "real_val_worst")
MIN_BOOTSTRAP = 100  # evaluate.bootstrap: fewer replicates leave a handful in each 2.5 % tail
# Strategy names (their classes: aimfair.strategies.registry, which a test keeps equal to these)
TABLE3_STRATEGIES = ("baseline", "synthetic_only", "supplementation", "repairing", "linear_probe", "full_ft", "aimfair")
TABLE4_FAMILIES = {"random_selection": tuple(f"random_selection-draw_{d}" for d in (1, 2, 3)),
                   "subtuning_update_one": tuple(f"subtuning_update_one-layer{b}" for b in (1, 2, 3, 4)),
                   "subtuning_freeze_one": tuple(f"subtuning_freeze_one-layer{b}" for b in (1, 2, 3, 4))}
TABLE4_STRATEGIES = ("aimfair_cosine", *(v for variants in TABLE4_FAMILIES.values() for v in variants))
STRATEGY_NAMES = TABLE3_STRATEGIES + TABLE4_STRATEGIES + tuple(TABLE4_FAMILIES)  # what a list of strategies may hold


# ----------------------------------------------------------------------------- settings the library takes
# The sections below build these, and the library's functions receive them (data.tinyfaces renders a
# WorldConfig, the built-in generator trains with TinyConfig and TinyTraining, classifier.train fits with a
# TrainConfig), so that the library imports config and never the other way round.


@dataclass(frozen=True)
class WorldConfig:
    """Knobs of the world. The defaults are calibrated so that ERM on a 1/9-skewed split is unfair."""

    seed: int = 0
    n_images: int = 12000
    image_size: int = 64
    partition: tuple[float, float, float] = (0.7, 0.1, 0.2)  # train / val / test, in id order
    p_male: float = 0.45
    p_smile_male: float = 0.42  # CelebA: men smile a little less often than women
    p_smile_female: float = 0.55
    p_young: float = 0.75
    smile_amplitude: tuple[float, float] = (17.0, 28.0)  # mouth-corner lift, px on the 128 px canvas
    neutral_amplitude: float = 2.0  # non-smiling mouths curve by at most this much, either way
    teeth_probability: float = 0.0  # an open, toothy smile is much easier to see

    def __post_init__(self) -> None:
        problems = []
        if self.n_images < 8:
            problems.append(f"n_images must be at least 8, got {self.n_images}")
        if self.image_size < 8:
            problems.append(f"image_size must be at least 8 px, got {self.image_size}")
        if abs(sum(self.partition) - 1) > 1e-6 or min(self.partition) < 0:
            problems.append(f"partition must be three shares that sum to 1, got {list(self.partition)}")
        if not 0 <= self.smile_amplitude[0] <= self.smile_amplitude[1]:
            problems.append(f"smile_amplitude must be [low, high] with 0 <= low <= high, got {list(self.smile_amplitude)}")
        probabilities = ("p_male", "p_smile_male", "p_smile_female", "p_young", "teeth_probability")
        problems += [f"{k} must be a probability in [0, 1]" for k in probabilities if not 0 <= getattr(self, k) <= 1]
        if problems:
            raise AimfairError(f"data.tinyfaces: {problems[0]}: fix it in params.yaml")


@dataclass(frozen=True)
class TinyConfig:
    """Architecture of the built-in model; saved with its weights."""

    resolution: int = 32
    channels: tuple[int, int, int] = (32, 64, 64)
    max_tokens: int = 40  # the longest contextual prompts take about 35 MiniLM tokens
    head_dim: int = 32
    train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"


@dataclass(frozen=True)
class TinyTraining:
    """How the built-in model is trained (params.yaml, section `generator`)."""

    corpus_size: int = 20000
    corpus_seed: int = 1  # the world's faces use the world seed; the corpus draws other faces
    steps: int = 1200
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 50
    ema_decay: float = 0.995
    cond_dropout: float = 0.1  # share of captions replaced by the null context, for guidance
    seed: int = 0

@dataclass(frozen=True)
class Optimisation:
    """How a model is trained; the defaults are the paper's pre-training settings."""

    epochs: int = 15
    batch_size: int = 128
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    milestones: list[int] = field(default_factory=lambda: [10])
    gamma: float = 0.1
    input_size: int = 224
    crop_scale: tuple[float, float] = (0.08, 1.0)  # RandomResizedCrop's scale range
    precision: str = "float32"  # float32 | bfloat16 (autocast, for training and validation) | auto (bfloat16


@dataclass(frozen=True)
class TrainConfig(Optimisation):
    """One training run: the optimisation settings and the seed."""

    seed: int = 100

# ----------------------------------------------------------------------------- params.yaml, section by section


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
    partition: str = "official"  # CelebA/tinyfaces: official (the release's partition file) | seeded
    seeded_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)  # train/val/test shares when seeded
    bad_images: str = "skip"
    tinyfaces: WorldConfig = field(default_factory=WorldConfig)

    def __post_init__(self) -> None:
        _choice("data.dataset", self.dataset, DATASETS)
        _choice("data.partition", self.partition, PARTITIONS)
        _check("data.seeded_fractions", min(self.seeded_fractions) > 0 and abs(sum(self.seeded_fractions) - 1) < 1e-6,
               "must be three positive shares of train, val and test adding up to 1, e.g. [0.7, 0.1, 0.2]")
        _choice("data.bad_images", self.bad_images, BAD_IMAGE_POLICIES)
        try:
            parse_bias_degree(self.bias_degree)
        except AimfairError as e:
            raise AimfairError(f"data.bias_degree: {e}: fix it in params.yaml") from None
        _check("data.n_train", self.n_train > 0, "must be positive")
        _check("data.utkface_test_per_group", self.utkface_test_per_group >= 0, "must be 0 (automatic) or more")
        _check("data.utkface_val_fraction", 0 <= self.utkface_val_fraction < 1, "must be in [0, 1)")


@dataclass(frozen=True)
class PromptParams:
    """Stage 01_prompts: contextual prompts per group for the text-to-image model."""

    backend: str = "grammar"  # grammar | transformers | openai | file
    mode: str = "contextual"
    n_per_group: int = 50
    seed: int = 0
    # both LLM backends (transformers, openai)
    template: str = ""  # instruction template file; empty: the packaged aimfair/csdg/prompts/templates/<dataset>.txt
    rounds: int = 5  # questions per group at most, until it has n_per_group valid prompts
    max_new_tokens: int = 2048
    temperature: float = 0.9  # 0: greedy, the same answer every round
    # transformers: a local causal LM
    model_path: str = ""
    device: str = "auto"
    # openai: any OpenAI-compatible chat-completions endpoint
    url: str = "http://localhost:8000/v1"
    model: str = ""
    api_key_env: str = "OPENAI_API_KEY"  # the NAME of the environment variable holding the key
    allow_plain_http: bool = False  # true: send the key over plain http:// to another machine (your own network)
    timeout_s: float = 120.0
    retries: int = 4
    backoff_s: float = 2.0
    # file: prompts written by hand, {"0_0": [...], ...} in JSON or YAML
    file: str = ""

    def __post_init__(self) -> None:
        _choice("prompts.backend", self.backend, ("grammar", "transformers", "openai", "file"))
        _choice("prompts.mode", self.mode, ("contextual", "single"))
        _check("prompts.n_per_group", self.n_per_group > 0, "must be positive")
        for key in ("rounds", "max_new_tokens", "timeout_s"):
            _check(f"prompts.{key}", getattr(self, key) > 0, "must be positive")
        _check("prompts.temperature", self.temperature >= 0, "must be 0 (greedy) or more")
        _check("prompts.retries", self.retries >= 0, "must be 0 or more")
        _check("prompts.backoff_s", self.backoff_s >= 0, "must be 0 or more seconds")
        _check("prompts.device", re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device) is not None,
               "must be auto, cpu, mps, cuda or cuda:N")
        _check("prompts.api_key_env", re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.api_key_env) is not None,
               "must be the NAME of an environment variable holding the key (never the key itself)")
        # each backend's own required key, checked only when that backend is chosen
        _check("prompts.model_path", self.backend != "transformers" or bool(self.model_path),
               "must name a local model folder when prompts.backend is transformers")
        _check("prompts.url", self.backend != "openai" or self.url.startswith(("http://", "https://")),
               "must be the endpoint's base URL, e.g. http://localhost:8000/v1, when prompts.backend is openai")
        _check("prompts.model", self.backend != "openai" or bool(self.model),
               "must name the served model when prompts.backend is openai")
        _check("prompts.file", self.backend != "file" or bool(self.file),
               "must name a prompts file (JSON or YAML) when prompts.backend is file")


CORPORA = ("studio", "dataset")


@dataclass(frozen=True)
class GeneratorParams(TinyTraining):
    """Stage generator: training the built-in text-to-image model.

    corpus "studio": on captioned studio renders of the built-in world (the default pipeline; the checkpoint is
    committed). corpus "dataset": on the dataset's own real images outside the classifier's splits (the
    generator pool), captioned from their labels; the checkpoint stays under work/. The training keys and
    their defaults come from TinyTraining above.
    """

    corpus: str = "studio"
    pool_per_group: int = 4000  # dataset corpus: images per group it learns from (minority groups cycled)
    resolution: int = 32
    threads: int = 0

    def __post_init__(self) -> None:
        _choice("generator.corpus", self.corpus, CORPORA)
        _check("generator.pool_per_group", self.pool_per_group >= self.batch_size // 4 and self.pool_per_group > 0,
               "must be positive and at least a quarter of generator.batch_size")
        _check("generator.resolution", self.resolution >= 16 and self.resolution % 4 == 0,
               "must be a multiple of 4 of at least 16 px (the UNet halves it twice)")
        for key in ("corpus_size", "steps", "batch_size"):
            _check(f"generator.{key}", getattr(self, key) > 0, "must be positive")
        _check("generator.batch_size", self.batch_size <= self.corpus_size, "must not exceed corpus_size")
        _check("generator.lr", self.lr > 0, "must be positive")
        _check("generator.warmup", 0 <= self.warmup < self.steps, "must be in [0, steps)")
        _check("generator.ema_decay", 0 <= self.ema_decay < 1, "must be in [0, 1)")
        _check("generator.cond_dropout", 0 < self.cond_dropout < 1,
               "must be in (0, 1): guidance needs some training without the caption")
        _check("generator.threads", self.threads >= 0, "must be 0 (torch's default) or more")

    def model_config(self) -> TinyConfig:
        return TinyConfig(resolution=self.resolution)

    def training(self) -> TinyTraining:
        return TinyTraining(**{f.name: getattr(self, f.name) for f in dataclasses.fields(TinyTraining)})


@dataclass(frozen=True)
class SyntheticParams:
    """The synthetic sets drawn from the generated pool (the paper's: D_S2 balanced, D_S1 biased like D_R).

    The pool holds, per group, as many images as the larger of the two sets draws from that group.
    """

    balanced_per_group: int = 500  # D_S2: images per group (paper: 5,000)
    biased_size: int = 1000  # D_S1: images in all (paper: 20,000 = 1,000 / 9,000 / 9,000 / 1,000)
    biased_skew: str = ""  # minority:majority ratio of D_S1, e.g. "1/9"; empty = data.bias_degree
    val_per_group: int = 0  # a balanced synthetic validation set, beyond D_S1 and D_S2 in the pool (0: none)

    def __post_init__(self) -> None:
        _check("synthetic.balanced_per_group", self.balanced_per_group > 0, "must be positive")
        _check("synthetic.val_per_group", self.val_per_group >= 0, "must be 0 (no synthetic validation set) or more")
        _check("synthetic.biased_size", self.biased_size >= 4, "must be at least 4 (one image per group)")
        if self.biased_skew:
            try:
                parse_bias_degree(self.biased_skew)
            except AimfairError as e:
                raise AimfairError(f"synthetic.biased_skew: {e}: fix it in params.yaml") from None


@dataclass(frozen=True)
class GenerateParams:
    """Stage 03_generate: the synthetic pool per group, from the prompts, with the chosen model."""

    model: str = "builtin"  # builtin | a local Stable Diffusion folder | a model id in the local HF cache
    revision: str = ""  # Stable Diffusion: pinned revision of a cached model id
    preset: str = "paper"  # Stable Diffusion: paper | fast
    steps: int = 0  # 0: the model's default (built-in: 10 DDIM steps; SD: the preset's)
    guidance: float = 0.0  # 0: the model's default (built-in: 3; SD: 9, as the authors)
    resolution: int = 0  # 0: the model's default (built-in: its training size; SD: 224 as the authors)
    precision: str = "auto"  # built-in model: auto (bfloat16 where the hardware has it) | float32 | bfloat16
    compute_batch: int = 0  # images computed at once, always; 0: the model's default (built-in: 25; SD: the preset's)
    batch_size: int = 100  # images per work batch (sharding, resuming): the pool does not depend on it
    seed: int = 0  # the pool's base seed; every image's seed is hashed from it
    device: str = "auto"
    threads: int = 0
    allow_foreign_generator: bool = False  # true: let the built-in model draw for a dataset it was not trained on

    def __post_init__(self) -> None:
        _check("generate.model", bool(self.model), "must be builtin or a model folder or id")
        _choice("generate.preset", self.preset, ("paper", "fast"))
        _choice("generate.precision", self.precision, ("auto", "float32", "bfloat16"))
        for key in ("steps", "resolution", "threads", "compute_batch"):
            _check(f"generate.{key}", getattr(self, key) >= 0, "must be 0 (the default) or more")
        _check("generate.guidance", self.guidance == 0 or self.guidance >= 1,
               "must be 0 (the default) or at least 1 (1 = no guidance)")
        _check("generate.batch_size", self.batch_size > 0, "must be positive")
        _check("generate.device", re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device) is not None,
               "must be auto, cpu, mps, cuda or cuda:N")


@dataclass(frozen=True)
class FidelityParams:
    """Stage 03_generate: the prompt-fidelity check by attribute oracles trained on real images."""

    per_group: int = 1400  # real training images per group for the oracle (balanced)
    epochs: int = 12
    seed: int = 0
    filter: bool = False  # leave images the oracles read as another group out of the synthetic sets

    def __post_init__(self) -> None:
        _check("fidelity.per_group", self.per_group >= 20, "must be at least 20")
        _check("fidelity.epochs", self.epochs > 0, "must be positive")


@dataclass(frozen=True)
class PretrainParams(Optimisation):
    """Stage 04_pretrain: ERM of the biased classifier on the real training split (one run per seed).

    The optimisation keys (epochs, lr, input_size, crop_scale, ...) and their defaults, the paper's
    settings, come from Optimisation above; params.yaml sets smaller ones for the built-in world.
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
        _choice("pretrain.precision", self.precision, ("auto", "float32", "bfloat16"))

    def train_config(self, seed: int) -> TrainConfig:
        """The settings of one pre-training run, with precision "auto" resolved for this machine's device (so
        a run's record says what it computed in)."""
        settings = {f.name: copy.copy(getattr(self, f.name)) for f in dataclasses.fields(Optimisation)}
        from aimfair.core.device import resolve_device, resolve_precision  # torch, only once a run is set up

        settings["precision"] = resolve_precision(self.precision, resolve_device(self.device))
        return TrainConfig(**settings, seed=seed)  # copies: the run owns its milestones list


@dataclass(frozen=True)
class SelectionParams:
    """Stage 05_mask: selective mask generation (aimfair.selective) on each seed's biased model."""

    top_k: int = 55  # tensors in each of the two top-k sets (paper: 55 of ResNet-18's 62)
    rule: str = "absolute"  # absolute: mean |g_a - g_b| (the paper) | cosine: 1 - cos(g_a, g_b) (Table 4)
    granularity: str = "tensor"  # tensor (the paper) | element (an extension: single entries)
    element_fraction: float = 0.9  # element granularity: the share of entries in each top set
    bn_mode: str = "train"  # BatchNorm while the gradients are computed: train (as the authors) | eval
    batch_size: int = 128
    seed: int = 0  # the order of the images (with BatchNorm in train mode, batches mix the groups)

    def __post_init__(self) -> None:
        _check("selection.top_k", self.top_k >= 1, "must be at least 1")
        _choice("selection.rule", self.rule, RULES)
        _choice("selection.granularity", self.granularity, GRANULARITIES)
        _choice("selection.bn_mode", self.bn_mode, BN_MODES)
        _check("selection.element_fraction", 0 < self.element_fraction <= 1, "must be in (0, 1]")
        _check("selection.batch_size", self.batch_size > 0, "must be positive")
        _check("selection.rule", not (self.rule == "cosine" and self.granularity == "element"),
               "cosine works per tensor only (a single entry has no direction)")


NEW_MODEL_BUDGETS = ("epochs", "steps")


@dataclass(frozen=True)
class FinetuneParams:
    """Stage 06_finetune: the strategies of the paper's Table 3, each run for every seed.

    Runs that start from the biased model use these settings (paper: 10 epochs, lr 0.06); runs that train a
    new model use section pretrain's, for as many epochs as `new_model_budget` says. Momentum, weight decay,
    input size and cropping come from pretrain.
    """

    strategies: list[str] = field(default_factory=lambda: [
        "baseline", "synthetic_only", "supplementation", "repairing", "linear_probe", "full_ft", "aimfair"])
    selection: str = "real_val_acc"  # how a run picks its epoch (SELECTION_RULES)
    epochs: int = 10
    lr: float = 0.06
    batch_size: int = 128
    milestones: list[int] = field(default_factory=list)  # MultiStepLR epochs; [] = a constant rate
    gamma: float = 0.1
    new_model_budget: str = "epochs"  # epochs: pretrain.epochs over their own set | steps: the biased model's
    #                                   number of SGD steps (its epochs and milestones scaled to the set's size)

    def __post_init__(self) -> None:
        _check("finetune.strategies", len(self.strategies) > 0 and len(set(self.strategies)) == len(self.strategies),
               "must be a non-empty list of distinct names")
        for name in self.strategies:
            _choice("finetune.strategies", name, TABLE3_STRATEGIES)
        _choice("finetune.selection", self.selection, SELECTION_RULES)
        for key in ("epochs", "batch_size"):
            _check(f"finetune.{key}", getattr(self, key) > 0, "must be positive")
        _check("finetune.lr", self.lr > 0, "must be positive")
        _check("finetune.milestones", self.milestones == sorted(self.milestones), "must be increasing epochs")
        _choice("finetune.new_model_budget", self.new_model_budget, NEW_MODEL_BUDGETS)

    def train_config(self, pretrain: PretrainParams, seed: int) -> TrainConfig:
        """The settings of one fine-tuning run."""
        return dataclasses.replace(pretrain.train_config(seed), epochs=self.epochs, lr=self.lr,
                                   batch_size=self.batch_size, milestones=list(self.milestones), gamma=self.gamma)

    def new_model_config(self, pretrain: PretrainParams, seed: int, real_images: int, images: int) -> TrainConfig:
        """The settings of a run that trains a new model on `images` images, the biased model having trained on
        `real_images`: pretrain's, with its epochs (and milestones) scaled by real_images / images when the
        budget is "steps", so that both make about the same number of SGD steps."""
        cfg = pretrain.train_config(seed)
        if self.new_model_budget == "epochs" or images == real_images:
            return cfg
        scale = real_images / images
        epochs = max(1, round(cfg.epochs * scale))
        milestones = sorted({m for m in (max(1, round(m * scale)) for m in cfg.milestones) if m < epochs})
        return dataclasses.replace(cfg, epochs=epochs, milestones=milestones)


@dataclass(frozen=True)
class RepairParams:
    """Data repairing (a strategy of stage 06): real images whose protected attribute is edited by SDEdit."""

    strength: float = 0.8  # how far the image is noised before it is denoised with the other group's prompt
    steps: int = 10  # sampler steps of the full schedule (an edit runs strength x steps); 0 = generate's
    seed: int = 0

    def __post_init__(self) -> None:
        _check("repair.strength", 0 < self.strength <= 1, "must be in (0, 1]")
        _check("repair.steps", self.steps >= 0, "must be 0 (generate's) or more")


@dataclass(frozen=True)
class EvaluateParams:
    """Stage 07_evaluate: which split the report is computed on, and its confidence intervals."""

    split: str = "test"
    batch_size: int = 256
    bootstrap: int = 2000  # replicates of the intervals' bootstrap (aimfair.evaluation.uncertainty)
    bootstrap_seed: int = 0

    def __post_init__(self) -> None:
        _choice("evaluate.split", self.split, ("val", "test"))
        _check("evaluate.batch_size", self.batch_size > 0, "must be positive")
        _check("evaluate.bootstrap", self.bootstrap >= MIN_BOOTSTRAP,
               f"must be at least {MIN_BOOTSTRAP}: fewer leave a handful of replicates in each 2.5 % tail (2000 is "
               "the default)")


@dataclass(frozen=True)
class Table4Params:
    """experiments/dvc.yaml, stage table4: the partial fine-tuning baselines of the paper's Table 4 (opt-in).

    Names of stage finetune's strategies are reused from it (they must be in finetune.strategies); the others
    (aimfair.strategies.table4) are trained with section finetune's settings, a family as all its variants.
    """

    strategies: list[str] = field(default_factory=lambda: [
        "baseline", "full_ft", "aimfair", "random_selection", "subtuning_update_one", "subtuning_freeze_one",
        "aimfair_cosine"])

    def __post_init__(self) -> None:
        _check("table4.strategies", len(self.strategies) > 0 and len(set(self.strategies)) == len(self.strategies),
               "must be a non-empty list of distinct names")
        for name in self.strategies:
            _choice("table4.strategies", name, STRATEGY_NAMES)


ABLATION_FREEZE_POINTS = ("conv1", "layer1", "layer2", "layer3", "layer4")  # ResNet-18, input side first
RESNET18_TENSORS = 62  # named parameter tensors of ResNet-18 with one logit (pretrain.arch allows only it)


@dataclass(frozen=True)
class ModelSelectionParams:
    """ablations.model_selection (experiments/dvc.yaml, stage model_selection): the rules of finetune.selection
    side by side. Stage finetune's runs give the pipeline's rule; each other rule trains the strategies again,
    monitoring a balanced synthetic validation set of `val_per_group` images per group drawn after the pool's."""

    rules: list[str] = field(default_factory=lambda: ["synthetic_val_worst", "real_val_worst"])
    strategies: list[str] = field(default_factory=lambda: ["aimfair", "full_ft", "linear_probe"])
    val_per_group: int = 100

    def __post_init__(self) -> None:
        for key in ("rules", "strategies"):
            values = getattr(self, key)
            _check(f"ablations.model_selection.{key}", len(values) > 0 and len(set(values)) == len(values),
                   "must be a non-empty list of distinct names")
        for rule in self.rules:
            _choice("ablations.model_selection.rules", rule, SELECTION_RULES)
        trained = tuple(name for name in TABLE3_STRATEGIES if name != "baseline")  # the baseline trains nothing
        for name in self.strategies:
            _choice("ablations.model_selection.strategies", name, trained)
        _check("ablations.model_selection.val_per_group", self.val_per_group >= 1, "must be at least 1")


@dataclass(frozen=True)
class AblationParams:
    """experiments/dvc.yaml, stages ablation@<name>: the paper's ablations on the pipeline's setting (opt-in).

    Each list holds the knob's values to train; the pipeline's own value is read from stage finetune (its
    aimfair or synthetic_only run), so it need not be listed. aimfair.ablations describes each one.
    """

    seeds: list[int] = field(default_factory=list)  # [] = the pipeline's seeds; else some of them
    prompts: list[str] = field(default_factory=lambda: ["single", "25"])  # synthetic-only training, prompts per group
    top_k: list[int] = field(default_factory=lambda: [40, 45, 50, 60])
    amount: list[float] = field(default_factory=lambda: [0.5, 1.0, 1.5, 2.0])  # D_S2 size / real training set size
    skew: list[str] = field(default_factory=lambda: ["4/6", "3/7", "2/8"])  # D_S1's skew for the mask
    real_fraction: list[float] = field(default_factory=lambda: [0.5, 0.25, 0.1])  # share of the real training set
    frozen_upto: list[str] = field(default_factory=lambda: list(ABLATION_FREEZE_POINTS))
    model_selection: ModelSelectionParams = field(default_factory=ModelSelectionParams)

    def __post_init__(self) -> None:
        _check("ablations.seeds", len(set(self.seeds)) == len(self.seeds), "must not repeat a seed")
        for key in ("prompts", "top_k", "amount", "skew", "real_fraction", "frozen_upto"):
            values = getattr(self, key)
            _check(f"ablations.{key}", len(values) > 0 and len(set(values)) == len(values),
                   "must be a non-empty list of distinct values")
        for value in self.prompts:
            _check("ablations.prompts", value == "single" or (value.isdigit() and int(value) > 0),
                   f"holds {value!r}: each value is 'single' or a positive number of contextual prompts per group")
        for k in self.top_k:
            _check("ablations.top_k", 0 < k <= RESNET18_TENSORS, f"holds {k}: each k must be in 1..{RESNET18_TENSORS} "
                   "(ResNet-18's parameter tensors)")
        for ratio in self.amount:
            _check("ablations.amount", 0 < ratio <= 10, f"holds {ratio}: each ratio must be in (0, 10]")
        for skew in self.skew:
            try:
                parse_bias_degree(skew)
            except AimfairError as e:
                raise AimfairError(f"ablations.skew holds {skew!r}: {e}: fix it in params.yaml") from None
        _check("ablations.skew", len({parse_bias_degree(s) for s in self.skew}) == len(self.skew),
               f"holds the same ratio twice ({', '.join(self.skew)}): 1/4 and 2/8 are one skew")
        _check("ablations.real_fraction", len({f"{f:.4g}" for f in self.real_fraction}) == len(self.real_fraction),
               "holds shares too close to tell apart: keep them 0.01 % apart or more")
        for fraction in self.real_fraction:
            _check("ablations.real_fraction", 0 < fraction < 1, f"holds {fraction}: each share must be in (0, 1)")
        for point in self.frozen_upto:
            _choice("ablations.frozen_upto", point, ABLATION_FREEZE_POINTS)


@dataclass(frozen=True)
class Params:
    """The whole params.yaml."""

    seeds: list[int] = field(default_factory=lambda: [100, 200, 300])
    data: DataParams = field(default_factory=DataParams)
    prompts: PromptParams = field(default_factory=PromptParams)
    generator: GeneratorParams = field(default_factory=GeneratorParams)
    synthetic: SyntheticParams = field(default_factory=SyntheticParams)
    generate: GenerateParams = field(default_factory=GenerateParams)
    fidelity: FidelityParams = field(default_factory=FidelityParams)
    pretrain: PretrainParams = field(default_factory=PretrainParams)
    selection: SelectionParams = field(default_factory=SelectionParams)
    finetune: FinetuneParams = field(default_factory=FinetuneParams)
    repair: RepairParams = field(default_factory=RepairParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    table4: Table4Params = field(default_factory=Table4Params)
    ablations: AblationParams = field(default_factory=AblationParams)

    def __post_init__(self) -> None:
        _check("seeds", len(self.seeds) > 0 and len(set(self.seeds)) == len(self.seeds),
               "must be a non-empty list of distinct integers")
        stray = [seed for seed in self.ablations.seeds if seed not in self.seeds]
        _check("ablations.seeds", not stray, f"holds {stray}, not among seeds (the seeds with a biased model)")
        _check("finetune.selection", self.finetune.selection != "synthetic_val_worst" or self.synthetic.val_per_group,
               "is synthetic_val_worst, which needs a synthetic validation set: set synthetic.val_per_group (e.g. 200)")
        tensors = RESNET18_TENSORS  # pretrain.arch allows only ResNet-18
        _check("selection.top_k", self.selection.granularity != "tensor" or self.selection.top_k <= tensors,
               f"is {self.selection.top_k}, more than the {tensors} parameter tensors of {self.pretrain.arch}: the "
               "paper keeps 55")


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


SEED_RANGE = 2**32  # numpy's: every seed must be below it


def _check_seeds(section: Any, where: str) -> None:
    """Every seed (a key named seed or *_seed, and the list seeds) is an integer in [0, 2**32)."""
    for f in dataclasses.fields(section):
        value, key = getattr(section, f.name), f"{where}{f.name}"
        if dataclasses.is_dataclass(value):
            _check_seeds(value, f"{key}.")
        elif f.name == "seed" or f.name.endswith("_seed") or f.name == "seeds":
            for seed in value if isinstance(value, list) else [value]:
                _check(key, 0 <= seed < SEED_RANGE, f"holds {seed}: a seed must be an integer from 0 to 2**32 - 1")


def parse_params(data: dict) -> Params:
    """Validate a params mapping (as read from YAML) into typed sections; keys left out take the defaults."""
    params = _build(Params, data, "")
    _check_seeds(params, "")
    return params


# Sections a params file may leave out: the opt-in experiments, whose defaults here are the shipped params.yaml's
# (tests/test_config.py compares them). Every other section must be in the file, so that nothing runs on a
# default the user never saw.
OPTIONAL_SECTIONS = ("table4", "ablations")


def load_params(path: str | os.PathLike = "params.yaml") -> Params:
    """Read and validate params.yaml. Unlike parse_params, a file must hold every section but the opt-in ones."""
    path = Path(path)
    if not path.exists():
        raise AimfairError(f"params file {path} does not exist: run from the repository root or pass its path")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise AimfairError(f"{path} is not valid YAML{where}: {problem}") from None
    if data is None:
        raise AimfairError(f"{path} is empty: start from the repository's params.yaml (every section is needed)")
    params = parse_params(data)  # a wrong key or value first, named
    missing = [f.name for f in dataclasses.fields(Params) if f.name not in data and f.name not in OPTIONAL_SECTIONS]
    if missing:
        raise AimfairError(f"{path} lacks the section(s) {', '.join(missing)}: copy them from the repository's "
                           "params.yaml (a left-out section would run on defaults you never saw)")
    return params


def to_dict(params: Any) -> dict:
    """A dataclass (section or whole Params) as plain data, e.g. for JSON provenance files."""
    return dataclasses.asdict(params)


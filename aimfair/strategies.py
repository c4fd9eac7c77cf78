"""The training strategies of the paper's Table 3: one registry, one small class each (as DomainBed's).

Every strategy answers the same three questions for a seed:
  * where does the model start: the seed's biased model, or a new one with the same initial weights as it;
  * which images does it train on (real, balanced synthetic, both, or real plus repaired);
  * which parameters may move (all, the last layer, or the selective mask).
`run_strategy` does the rest, identically for all: training with model selection on overall validation
accuracy on real data (no group labels), checkpoints, and a run record that lets a rerun skip a run that is
already done with the same settings and data.

| name            | starts from  | trains on                     | trainable             |
|-----------------|--------------|-------------------------------|-----------------------|
| baseline        | biased model | (nothing: evaluated as is)    | -                     |
| synthetic_only  | new model    | D_S2 (balanced synthetic)     | all                   |
| supplementation | new model    | D_R + D_S2                    | all                   |
| repairing       | new model    | D_R + edited real images      | all                   |
| linear_probe    | biased model | D_S2                          | the final layer       |
| full_ft         | biased model | D_S2                          | all                   |
| aimfair         | biased model | D_S2                          | the selective mask    |
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import time
from dataclasses import asdict, dataclass
from contextlib import nullcontext
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import pandas as pd
import torch
from torch import nn

from aimfair import io, paths
from aimfair.data.loading import ImageSet, concat_image_sets
from aimfair.errors import AimfairError
from aimfair.models import build_classifier, load_checkpoint
from aimfair.selection import Mask, freeze_except, load_mask
from aimfair.train import TrainConfig, data_fingerprint, fit, seed_everything

if TYPE_CHECKING:
    from aimfair.config import Params

RUN_RECORD = "run.json"


@dataclass
class Setting:
    """What a strategy may draw on for one seed. Image sets load on first use, then stay in memory."""

    params: Params
    root: Path
    seed: int
    device: torch.device
    progress: bool = True

    @property
    def size(self) -> int:
        return self.params.pretrain.input_size

    @property
    def biased_checkpoint(self) -> Path:
        path = self.root / paths.pretrain_dir(self.seed) / "best.safetensors"
        if not path.exists():
            raise AimfairError(f"no biased model for seed {self.seed} at {path}: run the pretrain stage first")
        return path

    @cached_property
    def real_train(self) -> ImageSet:  # D_R
        from aimfair.stages.common import load_images

        return load_images(self.params, self.root, "train", self.size, self.progress)

    @cached_property
    def val(self) -> ImageSet:
        from aimfair.stages.common import load_images

        return load_images(self.params, self.root, "val", self.size, self.progress)

    @cached_property
    def synthetic(self) -> dict[str, ImageSet]:  # {"balanced": D_S2, "biased": D_S1}
        from aimfair.synthetic import synthetic_image_sets

        return synthetic_image_sets(self.params, self.root, self.size, self.progress)

    @cached_property
    def repaired(self) -> ImageSet:
        from aimfair.repair import repaired_images

        return repaired_images(self.root, self.size, self.progress)

    def mask(self, model: nn.Module) -> Mask:
        return load_mask(self.root / paths.mask_dir(self.seed) / "mask.json", model, self.params.pretrain.arch)


class Strategy:
    """A way to obtain a (hopefully fairer) classifier; subclasses set the class attributes and override."""

    name: ClassVar[str]
    summary: ClassVar[str]
    trains: ClassVar[bool] = True
    from_biased: ClassVar[bool] = True  # start from the seed's biased model (else: a new one, same init)

    def training_set(self, setting: Setting) -> ImageSet:
        return setting.synthetic["balanced"]

    def restrict(self, model: nn.Module, setting: Setting) -> dict[str, torch.Tensor] | None:
        """Freeze what must not move; return entry masks ({name: bool tensor}) when only parts of tensors
        may. The default trains everything."""
        return None

    def config(self, setting: Setting) -> TrainConfig:
        p = setting.params
        if self.from_biased:
            return p.finetune.train_config(p.pretrain, setting.seed)
        return p.finetune.new_model_config(p.pretrain, setting.seed, len(setting.real_train),
                                           len(self.training_set(setting)))


STRATEGIES: dict[str, type[Strategy]] = {}


def register(cls: type[Strategy]) -> type[Strategy]:
    STRATEGIES[cls.name] = cls
    return cls


@register
class Baseline(Strategy):
    name, summary, trains = "baseline", "the biased model as it is", False


@register
class SyntheticOnly(Strategy):
    name, summary, from_biased = "synthetic_only", "a new model trained on balanced synthetic data only", False


@register
class Supplementation(Strategy):
    name, summary, from_biased = "supplementation", "a new model trained on real + balanced synthetic data", False

    def training_set(self, setting: Setting) -> ImageSet:
        return concat_image_sets(setting.real_train, setting.synthetic["balanced"])


@register
class Repairing(Strategy):
    name, summary, from_biased = "repairing", "a new model trained on real data balanced with edited real images", False

    def training_set(self, setting: Setting) -> ImageSet:
        return concat_image_sets(setting.real_train, setting.repaired)


@register
class LinearProbe(Strategy):
    name, summary = "linear_probe", "the biased model's final layer fine-tuned on balanced synthetic data"

    def restrict(self, model: nn.Module, setting: Setting) -> None:
        freeze_except(model, ["fc.weight", "fc.bias"])


@register
class FullFineTuning(Strategy):
    name, summary = "full_ft", "every parameter of the biased model fine-tuned on balanced synthetic data"


@register
class AimFair(Strategy):
    name, summary = "aimfair", "only the selected parameters of the biased model fine-tuned on balanced synthetic data"

    def mask(self, model: nn.Module, setting: Setting) -> Mask:
        return setting.mask(model)

    def restrict(self, model: nn.Module, setting: Setting) -> dict[str, torch.Tensor] | None:
        mask = self.mask(model, setting)
        freeze_except(model, mask.tensors)
        return mask.elements


@dataclass(frozen=True)
class Family:
    """Several runs per seed of one idea (random draws, one run per block), reported as the run with the best
    overall validation accuracy on real data (no group labels), and with `report_mean`, their mean too."""

    name: str
    summary: str
    variants: tuple[str, ...]  # registered strategy names
    report_mean: bool = False

    @property
    def mean_name(self) -> str:
        return f"{self.name}_mean"


FAMILIES: dict[str, Family] = {}


def register_family(name: str, summary: str, variants: list[str], report_mean: bool = False) -> Family:
    unknown = [v for v in variants if v not in STRATEGIES]
    if unknown or name in STRATEGIES:
        raise AimfairError(f"family {name!r}: its variants must be registered strategies and its name must not be "
                           f"one ({unknown or name})")
    FAMILIES[name] = Family(name, summary, tuple(variants), report_mean)
    return FAMILIES[name]


def known_names() -> tuple[str, ...]:
    """Every name a list of strategies may hold: registered strategies and families."""
    return tuple(STRATEGIES) + tuple(FAMILIES)


def expand(names: list[str]) -> list[str]:
    """The strategies to run for `names`: a family stands for its variants."""
    out: list[str] = []
    for name in names:
        for strategy in FAMILIES[name].variants if name in FAMILIES else [name]:
            if strategy not in out:
                out.append(strategy)
    return out


def get_strategy(name: str) -> Strategy:
    """An instance of the registered strategy `name`."""
    if name not in STRATEGIES:
        hint = f" (a family: run its variants {', '.join(FAMILIES[name].variants)})" if name in FAMILIES else ""
        raise AimfairError(f"unknown strategy {name!r}{hint}: choose from {', '.join(known_names())}")
    return STRATEGIES[name]()


def validation_accuracy(root: Path, name: str, seed: int) -> float:
    """The overall validation accuracy of a trained strategy's chosen epoch (from its checkpoint's sidecar)."""
    sidecar = root / paths.finetune_dir(name, seed) / "best.json"
    if not sidecar.exists():
        raise AimfairError(f"no model of strategy {name} for seed {seed} at {sidecar.parent}: train it first")
    return float(json.loads(sidecar.read_text())["val_acc"])


def chosen_variant(root: Path, family: str, seed: int) -> str:
    """The family's variant with the best validation accuracy for `seed` (the first of equals)."""
    variants = FAMILIES[family].variants
    accuracies = [validation_accuracy(root, v, seed) for v in variants]
    return variants[accuracies.index(max(accuracies))]


def checkpoint_path(root: Path, name: str, seed: int) -> Path:
    """Where the model of strategy `name` for `seed` is (the baseline's is the biased model itself; a
    family's is its chosen variant's)."""
    if name in FAMILIES:
        name = chosen_variant(root, name, seed)
    if not get_strategy(name).trains:
        return root / paths.pretrain_dir(seed) / "best.safetensors"
    return root / paths.finetune_dir(name, seed) / "best.safetensors"


def _file_hash(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()[:16]


# The code that decides what a run computes: when it changes, runs are retrained instead of reused. The
# computation's modules whole; of this module, only what defines the run (other strategies, the registry and
# the run loop may change without retraining anything).
_TRAINING_CODE = ("train.py", "selection.py", "models.py", "data/loading.py")


def _code_hash(strategy: Strategy) -> str:
    package = Path(__file__).parent
    digest = hashlib.sha1(b"".join((package / f).read_bytes() for f in _TRAINING_CODE))
    defining = [Setting, run_strategy] + [c for c in type(strategy).__mro__ if issubclass(c, Strategy)]
    for code in defining:
        try:
            digest.update(inspect.getsource(code).encode())
        except (OSError, TypeError):  # a variant class made with type(): what sets it apart is its attributes
            attributes = {k: v for k, v in vars(code).items() if not k.startswith("_") and not callable(v)}
            digest.update(repr(sorted(attributes.items())).encode())
    return digest.hexdigest()[:16]


def _masks_hash(entry_masks: dict[str, torch.Tensor] | None) -> str:
    digest = hashlib.sha1()
    for name, keep in sorted((entry_masks or {}).items()):
        digest.update(name.encode())
        digest.update(keep.to(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


@dataclass
class RunResult:
    strategy: str
    seed: int
    checkpoint: Path
    skipped: bool  # True when an earlier run with the same settings and data was reused
    seconds: float  # training time of this run (0 when skipped or not trained)
    trainable_tensors: int
    trainable_entries: int


def _trainable(model: nn.Module, entry_masks: dict[str, torch.Tensor] | None) -> tuple[int, int]:
    names = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    entries = sum(int(entry_masks[n].sum()) if entry_masks and n in entry_masks else p.numel() for n, p in names)
    return len(names), entries


def run_strategy(name: str, setting: Setting) -> RunResult:
    """Train (or reuse) strategy `name` for the setting's seed; returns where its model is."""
    strategy, params, seed = get_strategy(name), setting.params, setting.seed
    if not strategy.trains:
        return RunResult(name, seed, setting.biased_checkpoint, True, 0.0, 0, 0)
    out = setting.root / paths.finetune_dir(name, seed)
    p = params.pretrain
    if strategy.from_biased:
        model = build_classifier(p.arch, "none")
        load_checkpoint(model, setting.biased_checkpoint)
        start = _file_hash(setting.biased_checkpoint)
    else:
        seed_everything(seed)  # the same initial weights as the seed's biased model
        model = build_classifier(p.arch, p.pretrained)
        start = f"new {p.arch} {p.pretrained} seed {seed}"
    entry_masks = strategy.restrict(model, setting)
    cfg = strategy.config(setting)
    train = strategy.training_set(setting)
    tensors, entries = _trainable(model, entry_masks)
    trainable = sorted(n for n, q in model.named_parameters() if q.requires_grad)
    identity = dict(strategy=name, seed=seed, start=start, config=asdict(cfg),
                    data=data_fingerprint(train, setting.val),
                    trainable=hashlib.sha1("\n".join(trainable).encode()).hexdigest()[:16],
                    entries=entries, entry_masks=_masks_hash(entry_masks), code=_code_hash(strategy))
    identity = json.loads(json.dumps(identity))  # as it reads back from run.json (tuples become lists)
    record_file = out / RUN_RECORD
    checkpoint = out / "best.safetensors"
    if record_file.exists() and checkpoint.exists() and json.loads(record_file.read_text()) == identity:
        return RunResult(name, seed, checkpoint, True, 0.0, tensors, entries)
    record_file.unlink(missing_ok=True)  # the folder is being rewritten: it is not done until the record is
    previous = out / "previous_identity.json"  # what a killed run of this folder was training
    if previous.exists() and json.loads(previous.read_text()) != identity:
        (out / "resume.pt").unlink(missing_ok=True)  # fit's resume state belongs to another start or mask
    io.write_json(previous, identity)
    meta = dict(stage="finetune", strategy=name, arch=p.arch, input_size=p.input_size, seed=seed,
                target=params.data.target, sensitive=params.data.sensitive, trainable_tensors=tensors,
                trainable_entries=entries)
    t0 = time.perf_counter()
    try:
        fit(model, train, setting.val, cfg, out, setting.device, meta, progress=setting.progress,
            entry_masks=entry_masks, fingerprint=identity["data"])
    except AimfairError as e:
        raise AimfairError(f"strategy {name}, seed {seed}: {e}") from None
    seconds = time.perf_counter() - t0
    io.write_json(record_file, identity)
    previous.unlink()
    return RunResult(name, seed, checkpoint, False, seconds, tensors, entries)


def deal(runs: list, rank: int, processes: int) -> list:
    """The share of `runs` of process `rank` of `processes`: every run goes to exactly one process."""
    return runs[rank::processes]


def run_locked(name: str, setting: Setting) -> RunResult:
    """run_strategy under a lock per run (in work/.locks/, outside the outputs DVC hashes), so that two launches
    never train the same run; prints what happened when the setting shows progress."""
    lock = setting.root / paths.LOCKS / f"{name}_seed_{setting.seed}.lock"
    if setting.progress and STRATEGIES[name].trains:  # a console under `dvc repro` says what the next minutes are
        print(f"seed {setting.seed} {name}: starting", flush=True)
    with io.exclusive(lock, f"run {name} for seed {setting.seed}") if STRATEGIES[name].trains else nullcontext():
        result = run_strategy(name, setting)
    if setting.progress:
        done = "reused" if result.skipped else f"trained in {result.seconds:.0f} s"
        print(f"seed {setting.seed} {name:28s} {done}")
    return result


def run_row(result: RunResult) -> dict:
    """A run as a table row."""
    return dict(strategy=result.strategy, seed=result.seed, skipped=result.skipped, seconds=round(result.seconds, 1),
                trainable_tensors=result.trainable_tensors, trainable_entries=result.trainable_entries)


def run_all(params: Params, root: Path, device: torch.device, progress: bool = True,
            strategies: list[str] | None = None, state=None) -> pd.DataFrame:
    """Every strategy (default: params.finetune.strategies; a family stands for its variants) for every seed;
    one row per run of this process.

    With `state` (an accelerate PartialState: several processes under torchrun or accelerate launch), the
    (seed, strategy) runs are dealt out round-robin, each to exactly one process, so no two processes ever
    train the same run; a lock per run (work/.locks/) stops two separate launches from doing so either. Each run
    is seeded by itself, so the models do not depend on how many processes share the work.
    """
    names = params.finetune.strategies if strategies is None else strategies
    runs = [(seed, name) for seed in params.seeds for name in expand(names)]
    if state is not None:
        runs = deal(runs, state.process_index, state.num_processes)
    settings: dict[int, Setting] = {}  # a seed's images load once per process
    rows = []
    for seed, name in runs:
        result = run_locked(name, settings.setdefault(seed, Setting(params, root, seed, device, progress)))
        rows.append(run_row(result))
    if state is not None:
        state.wait_for_everyone()  # the caller may read every run once this returns
    return pd.DataFrame(rows)


TABLE3 = tuple(STRATEGIES)  # the strategies of stage finetune; the ones below run in experiments/dvc.yaml

# The partial fine-tuning baselines of the paper's Table 4 register themselves into STRATEGIES and FAMILIES.
importlib.import_module("aimfair.partial_finetuning")

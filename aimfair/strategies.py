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
import json
import time
from dataclasses import asdict, dataclass
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
        return p.pretrain.train_config(setting.seed)


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

    def restrict(self, model: nn.Module, setting: Setting) -> dict[str, torch.Tensor] | None:
        mask = setting.mask(model)
        freeze_except(model, mask.tensors)
        return mask.elements


def get_strategy(name: str) -> Strategy:
    """An instance of the registered strategy `name`."""
    if name not in STRATEGIES:
        raise AimfairError(f"unknown strategy {name!r}: choose from {', '.join(STRATEGIES)}")
    return STRATEGIES[name]()


def checkpoint_path(root: Path, name: str, seed: int) -> Path:
    """Where the model of strategy `name` for `seed` is (the baseline's is the biased model itself)."""
    if not get_strategy(name).trains:
        return root / paths.pretrain_dir(seed) / "best.safetensors"
    return root / paths.finetune_dir(name, seed) / "best.safetensors"


def _file_hash(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()[:16]


# The code that decides what a run computes: a changed file retrains the runs instead of reusing them.
_TRAINING_CODE = ("strategies.py", "train.py", "selection.py", "models.py", "data/loading.py")


def _code_hash() -> str:
    package = Path(__file__).parent
    return hashlib.sha1(b"".join((package / f).read_bytes() for f in _TRAINING_CODE)).hexdigest()[:16]


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
                    entries=entries, entry_masks=_masks_hash(entry_masks), code=_code_hash())
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
            entry_masks=entry_masks)
    except AimfairError as e:
        raise AimfairError(f"strategy {name}, seed {seed}: {e}") from None
    seconds = time.perf_counter() - t0
    io.write_json(record_file, identity)
    previous.unlink()
    return RunResult(name, seed, checkpoint, False, seconds, tensors, entries)


def run_all(params: Params, root: Path, device: torch.device, progress: bool = True) -> pd.DataFrame:
    """Every strategy in params.finetune.strategies for every seed; one row per run."""
    rows = []
    for seed in params.seeds:
        setting = Setting(params, root, seed, device, progress)
        for name in params.finetune.strategies:
            result = run_strategy(name, setting)
            rows.append(dict(strategy=name, seed=seed, skipped=result.skipped, seconds=round(result.seconds, 1),
                             trainable_tensors=result.trainable_tensors,
                             trainable_entries=result.trainable_entries))
            if progress:
                state = "reused" if result.skipped else f"trained in {result.seconds:.0f} s"
                print(f"seed {seed} {name:16s} {state}")
    return pd.DataFrame(rows)

"""Running strategies: one run per (strategy, seed), with model selection on overall validation accuracy on
real data (no group labels), checkpoints, and a run record that lets a rerun skip a run that is already done
with the same settings, data and code; a lock per run, and runs dealt out to several processes."""

from __future__ import annotations

import hashlib
import inspect
import json
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from aimfair.classifier.models import build_classifier, load_checkpoint
from aimfair.classifier.train import data_fingerprint, fit, seed_everything
from aimfair.config import Params
from aimfair.core import io, paths
from aimfair.core.device import setup_torch
from aimfair.core.errors import AimfairError, notice
from aimfair.strategies.base import Setting, Strategy
from aimfair.strategies.registry import STRATEGIES, expand, get_strategy, run_dir

RUN_RECORD = "run.json"


def _file_hash(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()[:16]


# The code that decides what a run computes: when it changes, runs are retrained instead of reused. The
# training modules whole; of the strategies, only what defines the run: Setting, run_strategy and the
# strategy's own classes (other strategies, the registry and the rest of the runner may change without
# retraining anything).
_TRAINING_CODE = ("classifier/train.py", "classifier/models.py", "classifier/objectives.py", "selective/masks.py",
                  "data/loading.py", "core/device.py")


def _code_hash(strategy: Strategy) -> str:
    package = Path(__file__).parents[1]  # aimfair/
    digest = hashlib.sha1(b"".join((package / f).read_bytes() for f in _TRAINING_CODE))
    defining = [Setting, run_strategy] + [c for c in type(strategy).__mro__ if issubclass(c, Strategy)]
    for code in defining:
        try:
            digest.update(inspect.getsource(code).encode())
        except (OSError, TypeError):  # a variant class made with type(): what sets it apart is its attributes
            attributes = {k: v for k, v in vars(code).items() if not k.startswith("_") and not callable(v)}
            digest.update(repr(sorted(attributes.items())).encode())
    return digest.hexdigest()[:16]


RUN_OUTPUTS = ("best.safetensors", "best.json")  # what a finished run hands on: reused only if unchanged


def _fingerprints(out: Path) -> dict[str, dict] | None:
    """Size and hash of each of a run's outputs (None if one is missing): its record holds them, so that a
    damaged or replaced checkpoint is never reused."""
    if not all((out / name).exists() for name in RUN_OUTPUTS):
        return None
    return {name: dict(size=(out / name).stat().st_size, sha1=_file_hash(out / name)) for name in RUN_OUTPUTS}


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
    out = setting.root / run_dir(name, seed)
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
    objective = strategy.objective(setting)
    tensors, entries = _trainable(model, entry_masks)
    trainable = sorted(n for n, q in model.named_parameters() if q.requires_grad)
    identity = dict(strategy=name, seed=seed, start=start, config=asdict(cfg),
                    data=data_fingerprint(train, setting.val),
                    trainable=hashlib.sha1("\n".join(trainable).encode()).hexdigest()[:16],
                    entries=entries, entry_masks=_masks_hash(entry_masks), code=_code_hash(strategy),
                    select=setting.select, monitors=data_fingerprint(*setting.monitors.values()),
                    objective=objective.describe() if objective is not None else "erm")
    identity = json.loads(json.dumps(identity))  # as it reads back from run.json (tuples become lists)
    record_file = out / RUN_RECORD
    checkpoint = out / "best.safetensors"
    record = io.read_record(record_file)
    if record is not None and {k: v for k, v in record.items() if k != "outputs"} == identity:
        if record.get("outputs") == _fingerprints(out):
            return RunResult(name, seed, checkpoint, True, 0.0, tensors, entries)
        notice(f"the model of {name} for seed {seed} in {out} is not the one its run record names (changed, cut "
               "short or missing): training it again")
    record_file.unlink(missing_ok=True)  # the folder is being rewritten: it is not done until the record is
    previous = out / "previous_identity.json"  # what a killed run of this folder was training
    if previous.exists() and io.read_record(previous) != identity:
        (out / "resume.pt").unlink(missing_ok=True)  # fit's resume state belongs to another start or mask
    io.write_json(previous, identity)
    meta = dict(stage="finetune", strategy=name, arch=p.arch, input_size=p.input_size, seed=seed,
                target=params.data.target, sensitive=params.data.sensitive, trainable_tensors=tensors,
                trainable_entries=entries)
    t0 = time.perf_counter()
    try:
        fit(model, train, setting.val, cfg, out, setting.device, meta, progress=setting.progress,
            entry_masks=entry_masks, fingerprint=identity["data"], monitors=setting.monitors, select=setting.select,
            objective=objective)
    except AimfairError as e:
        raise AimfairError(f"strategy {name}, seed {seed}: {e}") from None
    seconds = time.perf_counter() - t0
    io.write_json(record_file, dict(identity, outputs=_fingerprints(out)))
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


def training_device(params: Params, state=None) -> torch.device:
    """The device of this process: its own GPU when several processes share the work (accelerate gives
    each one), else pretrain.device with pretrain.threads CPU threads."""
    device = setup_torch(params.pretrain.threads, params.pretrain.device)
    return state.device if state is not None and state.num_processes > 1 else device

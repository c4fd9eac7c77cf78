"""Training and prediction loops: ERM with SGD + MultiStepLR, model selection on overall val accuracy.

`fit` writes into its output folder, atomically, after every epoch:
  best.safetensors (+ .json)   the weights with the best overall validation accuracy (no group labels)
  history.csv                  loss, train and validation accuracy and learning rate per epoch
  resume.pt                    model, optimiser, scheduler and random state, so a killed run picks up where
                               it was (only with the same config and the same data; removed when done).
                               Written at most every `resume_every_s` seconds (an epoch of a small run takes
                               a few seconds; writing 90 MB after each one cost 5% of the pipeline's time)
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from aimfair.classifier.models import read_sidecar, save_checkpoint
from aimfair.classifier.objectives import GroupDRO
from aimfair.config import Optimisation, TrainConfig
from aimfair.core import io
from aimfair.core.errors import AimfairError
from aimfair.core.groups import GROUPS, group_accuracies
from aimfair.core.resume import load_resume_state, save_resume_state
from aimfair.data.loading import BatchAugment, BatchLoader, ImageSet

    #                             where the device computes it natively; resolved before a run starts)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (every device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def data_fingerprint(*sets: ImageSet) -> str:
    """A hash of the image ids, labels and pixels of `sets`: a resumed or reused run must have trained on
    the same data (a regenerated image keeps its id, so the pixels count too)."""
    digest = hashlib.sha1()
    for images in sets:
        digest.update("\n".join(images.image_ids).encode())
        digest.update(np.ascontiguousarray(images.y).tobytes())
        digest.update(np.ascontiguousarray(images.pixels).data)
    return digest.hexdigest()


def logits_of(model: nn.Module, x: torch.Tensor, precision: str = "float32") -> torch.Tensor:
    """The model's float32 logits for a batch, its convolutions run in `precision` (bfloat16: autocast)."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16"):
        return model(x).float()


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    """Move the model to `device`; on a CPU also to channels-last memory, which oneDNN's convolutions run
    faster (benchmarks/cpu_training.py)."""
    cpu = device.type == "cpu"
    return model.to(device, memory_format=torch.channels_last if cpu else torch.contiguous_format)


@torch.no_grad()
def predict_proba(model: nn.Module, images: ImageSet, device: torch.device, batch_size: int = 256,
                  precision: str = "float32") -> np.ndarray:
    """P(y = 1) for every image, in order, with the test-time transform ((N, k) for a model with k logits)."""
    prepare_model(model, device).eval()
    out = [torch.sigmoid(logits_of(model, x, precision).squeeze(1)).cpu() for x, _, _ in
           BatchLoader(images, batch_size, device, augment=None, shuffle=False)]
    return torch.cat(out).numpy()


def accuracy_of(probabilities: np.ndarray, y: np.ndarray) -> float:
    """Overall accuracy in percent at threshold 0.5 (averaged over the labels of a multi-label set)."""
    return float(((probabilities >= 0.5) == y).mean() * 100)


def masked_sgd(model: nn.Module, cfg: Optimisation, entry_masks: dict[str, torch.Tensor] | None = None
               ) -> tuple[torch.optim.SGD, list]:
    """SGD over the parameters that require gradients.

    With `entry_masks` ({name: bool tensor}), only the True entries of those tensors may move: their
    gradient is masked in a hook and their weight decay is added there too (masked), so neither the decay
    nor the momentum buffer, which then stays zero for the frozen entries, ever moves them. Returns the
    optimiser and the hook handles, to be removed when training ends.
    """
    entry_masks = entry_masks or {}
    plain, masked, hooks = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name in entry_masks:
            keep = entry_masks[name].to(p.device, p.dtype)
            hooks.append(p.register_hook(lambda g, p=p, keep=keep: (g + cfg.weight_decay * p.detach()) * keep))
            masked.append(p)
        else:
            plain.append(p)
    groups = [dict(params=ps, weight_decay=wd) for ps, wd in ((plain, cfg.weight_decay), (masked, 0.0)) if ps]
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum), hooks


def fit(model: nn.Module, train: ImageSet, val: ImageSet, cfg: TrainConfig, out_dir: str | os.PathLike,
        device: torch.device, meta: dict | None = None, progress: bool = True,
        entry_masks: dict[str, torch.Tensor] | None = None, fingerprint: str | None = None,
        resume_every_s: float = 30.0, monitors: Mapping[str, ImageSet] | None = None,
        select: str = "val_acc", objective: GroupDRO | None = None) -> pd.DataFrame:
    """Train `model` with BCE-with-logits; keep the epoch with the best `select` (by default the overall
    validation accuracy, which needs no group labels).

    Labels are `train.y`: one 0/1 label per image, or several per image (shape (N, k), a model with k
    logits, accuracy averaged over the k labels). Only parameters with requires_grad are trained; within
    those named in `entry_masks`, only the True entries (see masked_sgd). `fingerprint` is
    data_fingerprint(train, val) when the caller has it already (hashing the pixels twice is wasted work).
    `monitors` ({name: image set with group labels}) are scored after every epoch into the history:
    `<name>_acc_<group>` and `<name>_wst` (the worst group's accuracy); `select` may name any of them.
    `objective` replaces the mean BCE loss (aimfair.classifier.objectives; its state is part of the resume state).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    if cfg.precision not in ("float32", "bfloat16"):
        raise AimfairError(f"precision must be float32 or bfloat16 when a run starts, got {cfg.precision!r}")
    prepare_model(model, device)
    if not any(p.requires_grad for p in model.parameters()):
        raise AimfairError(f"nothing to train in {out_dir}: every parameter is frozen")
    monitors = dict(monitors or {})
    _check_selection(select, monitors)
    optimizer, hooks = masked_sgd(model, cfg, entry_masks)
    try:
        run_id = dict(config=asdict(cfg), data=fingerprint or data_fingerprint(train, val))
        if monitors or select != "val_acc":  # a resume state of another selection is not this run's
            run_id.update(select=select, monitors=data_fingerprint(*monitors.values()) if monitors else "")
        if objective is not None:
            run_id.update(objective=objective.describe())
        return _fit(model, train, val, cfg, out_dir, device, meta, progress, optimizer, run_id, resume_every_s,
                    monitors, select, objective)
    finally:
        for hook in hooks:  # a second fit on the same model must not stack masks
            hook.remove()


def _validation_scores(model: nn.Module, val: ImageSet, monitors: Mapping[str, ImageSet], device: torch.device,
                       precision: str) -> dict[str, float]:
    """An epoch's history columns from held-out images: val_acc, and for every monitored set its accuracy
    per (y, s) group and its worst group's. Each distinct set is predicted once (the real_val monitor is
    `val` itself)."""
    predicted: dict[int, np.ndarray] = {}

    def probabilities(images: ImageSet) -> np.ndarray:
        if id(images) not in predicted:
            predicted[id(images)] = predict_proba(model, images, device, precision=precision)
        return predicted[id(images)]

    scores = {"val_acc": accuracy_of(probabilities(val), val.y)}
    for name, images in monitors.items():
        pred = (probabilities(images) >= 0.5).astype(np.int64)
        accs = group_accuracies(np.asarray(images.y), np.asarray(images.s), pred)
        scores.update({**{f"{name}_acc_{g}": accs[g] for g in GROUPS}, f"{name}_wst": min(accs.values())})
    return scores


def _check_selection(select: str, monitors: Mapping[str, ImageSet]) -> None:
    """`select` must be a history column that fit writes and that grows with a better model."""
    columns = ("wst", *(f"acc_{g}" for g in GROUPS))
    allowed = ["val_acc"] + [f"{name}_{column}" for name in monitors for column in columns]
    if select not in allowed:
        raise AimfairError(f"cannot select epochs by {select!r}: choose one of {', '.join(allowed)}")
    for name, images in monitors.items():
        if np.ndim(images.y) != 1 or images.s is None:
            raise AimfairError(f"the monitored set {name!r} needs one 0/1 label and a protected attribute per image")


def _newer_best(checkpoint: Path, resume_epoch: int, cfg: TrainConfig, select: str = "val_acc") -> float:
    """The selection score of a best checkpoint this run wrote after its resume state (-1 if none).

    The resume state is written at most every resume_every_s, so a killed run may have kept a better epoch
    than its state knows of. Counting it keeps that checkpoint from being replaced by a worse epoch when
    the resumed epochs do not repeat exactly (GPU kernels need not be deterministic)."""
    if not checkpoint.exists():
        return -1.0
    meta = read_sidecar(checkpoint)
    same_run = (meta.get("config") == json.loads(json.dumps(asdict(cfg)))
                and meta.get("selected_by", "val_acc") == select)
    score = meta.get("selected_value", meta.get("val_acc"))
    return float(score) if same_run and meta.get("epoch", 0) > resume_epoch else -1.0


def _fit(model: nn.Module, train: ImageSet, val: ImageSet, cfg: TrainConfig, out_dir: Path,
         device: torch.device, meta: dict | None, progress: bool, optimizer: torch.optim.SGD, run_id: dict,
         resume_every_s: float, monitors: dict[str, ImageSet], select: str, objective: GroupDRO | None
         ) -> pd.DataFrame:
    """fit's epoch loop: train, validate, keep the best epoch, write the resume state after every epoch."""
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=cfg.milestones, gamma=cfg.gamma)
    loss_fn = nn.BCEWithLogitsLoss()
    augment = BatchAugment(cfg.input_size, scale=cfg.crop_scale, seed=cfg.seed)
    loader = BatchLoader(train, cfg.batch_size, device, augment=augment, shuffle=True, drop_last=False,
                         seed=cfg.seed)
    history: list[dict] = []
    best_acc, start_epoch = -1.0, 0

    resume_file = out_dir / "resume.pt"  # resumed only by a run with the same run_id (config and data)
    state = load_resume_state(resume_file)
    if state is not None:
        if state.get("run_id") == run_id:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["torch_rng"])
            augment.generator.set_state(state["augment_rng"])
            history, best_acc, start_epoch = state["history"], state["best_acc"], state["epoch"]
            if objective is not None:
                objective.load_state_dict(state["objective"])
            loader.epoch = start_epoch
            best_acc = max(best_acc, _newer_best(out_dir / "best.safetensors", start_epoch, cfg, select))
            print(f"resuming {out_dir} from epoch {start_epoch}")

    last_saved = time.perf_counter()
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        t0, seen, loss_sum, correct = time.perf_counter(), 0, 0.0, 0
        # under `aimfair notebook` TQDM_MININTERVAL slows the refresh: each one is a line in the log
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=not progress)
        for x, y, s in bar:
            logits = logits_of(model, x, cfg.precision).squeeze(1)
            loss = loss_fn(logits, y.float()) if objective is None else objective(logits, y, s)
            if not torch.isfinite(loss):
                raise AimfairError(f"loss became {loss.item()} at epoch {epoch + 1} in {out_dir}: lower the "
                                   f"learning rate (lr={cfg.lr}); the last good checkpoint is kept")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += len(y)
            loss_sum += loss.item() * len(y)
            correct += int(((logits >= 0) == y.bool()).sum()) / (y.numel() // len(y))  # per image
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", refresh=False)  # shown at the next refresh
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        scores = _validation_scores(model, val, monitors, device, cfg.precision)
        val_acc = scores.pop("val_acc")
        # no wall-clock time in the history: the outputs of a seeded run are then byte-identical
        row = dict(epoch=epoch + 1, train_loss=loss_sum / seen, train_acc=100 * correct / seen,
                   val_acc=val_acc, lr=lr, **scores)
        history.append(row)
        if progress:
            print(f"epoch {epoch + 1:3d}  loss {row['train_loss']:.4f}  train {row['train_acc']:.2f}  "
                  f"val {val_acc:.2f}  ({time.perf_counter() - t0:.1f}s)")
        if row[select] > best_acc:
            best_acc = row[select]
            chosen = {} if select == "val_acc" else dict(selected_by=select, selected_value=row[select])
            save_checkpoint(model, out_dir / "best.safetensors",
                            dict(meta or {}, epoch=epoch + 1, val_acc=val_acc, config=asdict(cfg), **chosen))
        io.write_csv(out_dir / "history.csv", pd.DataFrame(history))
        if epoch + 1 == cfg.epochs or time.perf_counter() - last_saved < resume_every_s:
            continue  # (the last epoch needs no resume state)
        last_saved = time.perf_counter()
        save_resume_state(dict(model=model.state_dict(), optimizer=optimizer.state_dict(),
                               scheduler=scheduler.state_dict(), torch_rng=torch.get_rng_state(),
                               augment_rng=augment.generator.get_state(), history=history, best_acc=best_acc,
                               epoch=epoch + 1, run_id=run_id,
                               **({} if objective is None else dict(objective=objective.state_dict()))), resume_file)
    resume_file.unlink(missing_ok=True)  # finished: the resume state is no longer needed
    return pd.DataFrame(history)

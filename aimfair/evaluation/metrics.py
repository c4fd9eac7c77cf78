"""Fairness metrics as the AIM-Fair paper defines them (all values in percent, 0-100).

Groups are the four (target y, protected s) cells keyed "{y}_{s}" (see aimfair.core.groups).

EO has two definitions in circulation:
  * EO_code  = (|TPR_1 - TPR_0| + |FPR_1 - FPR_0|) / 2   -- what the authors' code computes;
  * EO_paper = max(|TPR_1 - TPR_0|, |FPR_1 - FPR_0|)      -- what matches the paper's printed tables.
Both are reported; the tables (PAPER_COLUMNS) print EO_paper.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from aimfair.core.errors import AimfairError
from aimfair.core.groups import GROUPS, parse_group_key
from aimfair.core.groups import group_accuracies as group_accuracies_of

# Column order of the paper's result tables. "EO" there is the max definition (EO_paper);
# EO_code is reported alongside in our outputs but not in this table order.
PAPER_COLUMNS: list[str] = ["acc_0_0", "acc_0_1", "acc_1_0", "acc_1_1", "ACC", "WST", "EO_paper", "STD"]

_ACC_KEYS: tuple[str, ...] = tuple(f"acc_{g}" for g in GROUPS)
# Keys the paper aggregates as plain seed means (WST/STD are recomputed from averaged group accs).
_SEED_MEAN_KEYS: tuple[str, ...] = ("ACC", "EO_code", "EO_paper", "DP")


def _as_binary(name: str, values: Any) -> np.ndarray:
    """Convert to a 1-D int array, refusing anything that is not 0/1 (bools and 0.0/1.0 are fine)."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise AimfairError(f"{name} must be 1-D, got shape {arr.shape}: pass a flat array of 0/1 labels")
    if arr.size and not np.isin(arr, (0, 1)).all():
        bad = sorted({str(v) for v in np.unique(arr[~np.isin(arr, (0, 1))])})[:5]
        raise AimfairError(f"{name} contains values other than 0/1 (e.g. {', '.join(bad)}): binarise it first")
    return arr.astype(np.int64)


def _validate(y: Any, s: Any, pred: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check inputs once so every metric below can divide by group sizes safely."""
    y_arr, s_arr, p_arr = _as_binary("y", y), _as_binary("s", s), _as_binary("pred", pred)
    if not (len(y_arr) == len(s_arr) == len(p_arr)):
        raise AimfairError(
            f"y, s and pred have different lengths ({len(y_arr)}, {len(s_arr)}, {len(p_arr)}): "
            "pass one label, attribute and prediction per sample"
        )
    if len(y_arr) == 0:
        raise AimfairError("empty evaluation set: metrics need at least one sample in each of the four groups")
    for g in GROUPS:
        gy, gs = parse_group_key(g)
        if not np.any((y_arr == gy) & (s_arr == gs)):
            raise AimfairError(
                f"group (y={gy}, s={gs}) has no samples in the evaluation set; "
                "metrics need all four groups: check the split"
            )
    return y_arr, s_arr, p_arr


def group_accuracies(y: Sequence[int] | np.ndarray, s: Sequence[int] | np.ndarray,
                     pred: Sequence[int] | np.ndarray) -> dict[str, float]:
    """Accuracy (percent) within each (y, s) group, keyed "0_0", "0_1", "1_0", "1_1"."""
    y_arr, s_arr, p_arr = _validate(y, s, pred)
    return group_accuracies_of(y_arr, s_arr, p_arr)


def fairness_metrics(y: Sequence[int] | np.ndarray, s: Sequence[int] | np.ndarray,
                     pred: Sequence[int] | np.ndarray) -> dict[str, float]:
    """All per-run metrics in percent: acc_{g}, ACC, WST, STD, EO_code, EO_paper, DP, TPR_s*, FPR_s*."""
    y_arr, s_arr, p_arr = _validate(y, s, pred)
    accs = group_accuracies_of(y_arr, s_arr, p_arr)
    acc_values = np.array([accs[g] for g in GROUPS])

    # TPR_s = P(pred=1 | y=1, s), FPR_s = P(pred=1 | y=0, s); every cell is non-empty after validation.
    rates: dict[str, float] = {}
    for sv in (0, 1):
        rates[f"TPR_s{sv}"] = float(np.mean(p_arr[(y_arr == 1) & (s_arr == sv)]) * 100.0)
        rates[f"FPR_s{sv}"] = float(np.mean(p_arr[(y_arr == 0) & (s_arr == sv)]) * 100.0)
    d_tpr = abs(rates["TPR_s1"] - rates["TPR_s0"])
    d_fpr = abs(rates["FPR_s1"] - rates["FPR_s0"])
    # Demographic parity: gap in positive-prediction rate between the protected groups.
    dp = abs(float(np.mean(p_arr[s_arr == 1])) - float(np.mean(p_arr[s_arr == 0]))) * 100.0

    out: dict[str, float] = {f"acc_{g}": accs[g] for g in GROUPS}
    out.update(
        ACC=float(np.mean(p_arr == y_arr) * 100.0),
        WST=float(acc_values.min()),
        STD=float(np.std(acc_values, ddof=0)),  # paper uses the population std of the 4 groups
        EO_code=(d_tpr + d_fpr) / 2.0,
        EO_paper=max(d_tpr, d_fpr),
        DP=dp,
    )
    out.update(rates)
    return out


def aggregate_seeds(per_seed: list[dict[str, float]]) -> dict[str, Any]:
    """Combine fairness_metrics() outputs of several seeds.

    "paper": group accs averaged over seeds, WST/STD taken of those averages (the paper's way);
    ACC/EO_code/EO_paper/DP are seed means. "mean"/"std": per-key mean and sample std (ddof=1)
    over seeds; std is None for a single seed.
    """
    if not per_seed:
        raise AimfairError("no per-seed metrics to aggregate: run at least one seed before aggregating")
    keys = list(per_seed[0].keys())
    required = set(_ACC_KEYS) | set(_SEED_MEAN_KEYS)
    for i, row in enumerate(per_seed):
        missing = sorted(required - set(row))
        if missing:
            raise AimfairError(
                f"seed entry {i} lacks metric(s) {', '.join(missing)}: pass fairness_metrics() outputs"
            )
        if set(row) != set(keys):
            raise AimfairError(
                f"seed entry {i} has different metric keys than entry 0: pass fairness_metrics() outputs"
            )

    n = len(per_seed)
    table = np.array([[float(row[k]) for k in keys] for row in per_seed])
    means = table.mean(axis=0)
    mean = {k: float(v) for k, v in zip(keys, means)}
    # None instead of NaN so the result stays valid JSON when there is only one seed.
    std: dict[str, float | None]
    if n > 1:
        std = {k: float(v) for k, v in zip(keys, table.std(axis=0, ddof=1))}
    else:
        std = {k: None for k in keys}

    avg_accs = np.array([mean[k] for k in _ACC_KEYS])
    paper: dict[str, float] = {k: mean[k] for k in _ACC_KEYS}
    paper["WST"] = float(avg_accs.min())
    paper["STD"] = float(np.std(avg_accs, ddof=0))
    for k in _SEED_MEAN_KEYS:
        paper[k] = mean[k]
    return {"n_seeds": n, "paper": paper, "mean": mean, "std": std}


def format_mean_std(mean: float, std: float | None, digits: int = 2) -> str:
    """Render "89.23 ± 0.41"; just the mean when std is None (single seed)."""
    if std is None:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"

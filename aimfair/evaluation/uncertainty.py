"""Confidence intervals for the fairness metrics, and paired comparisons between strategies.

Every metric of aimfair.evaluation.metrics is a function of four counts per run: how many test images of
each (y, s) group the model gets right (a group's positive predictions are its correct ones when y = 1 and
its wrong ones when y = 0). So a bootstrap only has to resample those counts.

* **One run** (a strategy and a seed): a percentile interval over test images resampled within each
  group, keeping the group sizes the test split fixed.
* **Over seeds** (the tables' aggregation: group accuracies averaged over seeds, WST and STD of those
  averages, ACC and EO seed means): a Student t interval. Its variance has two parts. The spread between
  seeds, s^2 / n (from a bootstrap of the seeds with the images fixed, times n / (n - 1)), holds the
  training noise and the part of the test-image noise that differs between seeds. What it misses is the
  image noise every seed shares, since all of them see the same images: its covariance between seeds,
  n / (n - 1) * (Var of the seed mean - mean of the single seeds' Var / n), from the image bootstrap with
  the seeds fixed (one draw shared by every seed and strategy). The degrees of freedom are
  Welch-Satterthwaite's: n - 1 when the seeds' spread dominates, more when the shared image noise does.
  A percentile bootstrap over 3 seeds would be far too narrow (10 distinct draws, and it shrinks the seed
  variance by (n - 1) / n). For WST and STD, which are not means, the split is an approximation. With one
  seed, the interval is the image bootstrap's percentile interval.
* **Paired comparisons**: the same for the difference of the aggregated metric between two strategies,
  on the same seeds and the same resampled images, with the t test's two-sided p-value (one seed: the
  bootstrap's, twice the share of replicates beyond zero). The p-values are not corrected for the number
  of comparisons in a table.

Intervals of percentages are clipped to [0, 100].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from aimfair.config import MIN_BOOTSTRAP
from aimfair.core.errors import AimfairError
from aimfair.core.groups import GROUPS, parse_group_key

LEVEL = 0.95
METRICS = ("acc_0_0", "acc_0_1", "acc_1_0", "acc_1_1", "ACC", "WST", "EO_paper", "STD", "EO_code", "DP")
_SEED_MEANS = ("ACC", "EO_paper", "EO_code", "DP")  # averaged over seeds; WST and STD come from the group means


@dataclass
class Replicates:
    """Correct counts per (y, s) group for every run, in the data and in each bootstrap replicate."""

    runs: list[tuple[str, int]]  # (strategy, seed), one per column of the counts
    sizes: dict[str, int]  # images per group
    observed: dict[str, np.ndarray]  # group -> (runs,) correct counts on the test set itself
    images: dict[str, np.ndarray]  # group -> (replicates, runs) correct counts after resampling images
    seed_weights: np.ndarray  # (replicates, seeds): how often each seed is drawn
    seeds: list[int]


def bootstrap(predictions: pd.DataFrame, replicates: int, seed: int = 0) -> Replicates:
    """Resample the test images (stratified by group, shared by every run) and the seeds.

    `predictions` holds one row per (strategy, seed, image): strategy, seed, image_id, y, s, pred.
    """
    if replicates < MIN_BOOTSTRAP:
        raise AimfairError(f"evaluate.bootstrap must be at least {MIN_BOOTSTRAP} replicates, got {replicates}: "
                           "fewer leave a handful of replicates in each 2.5 % tail (2000 is the default)")
    runs = list(predictions.groupby(["strategy", "seed"], sort=False).groups)
    correct = (predictions["pred"] == predictions["y"]).to_numpy()
    table = predictions.assign(correct=correct.astype(float)).pivot(index="image_id", columns=["strategy", "seed"],
                                                                    values="correct")
    if table.isna().any().any():
        missing = [f"{name} seed {s}" for (name, s), col in table.items() if col.isna().any()]
        raise AimfairError(f"not every run was evaluated on the same images ({', '.join(missing[:3])} lack some): "
                           "evaluate them on one split")
    table = table[runs]
    labels = predictions.drop_duplicates("image_id").set_index("image_id").loc[table.index]
    correct_by_image = table.to_numpy()  # (images, runs) 0/1
    rng = np.random.default_rng(seed)
    sizes, observed, images = {}, {}, {}
    for g in GROUPS:
        y, s = parse_group_key(g)
        rows = correct_by_image[((labels["y"] == y) & (labels["s"] == s)).to_numpy()]
        if not len(rows):
            raise AimfairError(f"group (y={y}, s={s}) has no test images: metrics need all four groups")
        sizes[g] = len(rows)
        observed[g] = rows.sum(axis=0)
        draws = rng.multinomial(len(rows), np.full(len(rows), 1 / len(rows)), size=replicates)
        images[g] = draws @ rows
    seeds = sorted({s for _, s in runs})
    seed_weights = rng.multinomial(len(seeds), np.full(len(seeds), 1 / len(seeds)), size=replicates)
    return Replicates(runs, sizes, observed, images, seed_weights, seeds)


def metrics_from_counts(correct: dict[str, np.ndarray], sizes: dict[str, int]) -> dict[str, np.ndarray]:
    """fairness_metrics' values (percent) from correct counts per group, for arrays of any shape."""
    acc = {g: 100.0 * correct[g] / sizes[g] for g in GROUPS}
    stacked = np.stack([acc[g] for g in GROUPS])
    # TPR_s = acc of (1, s); FPR_s = 100 - acc of (0, s)
    d_tpr = np.abs(acc["1_1"] - acc["1_0"])
    d_fpr = np.abs(acc["0_0"] - acc["0_1"])
    positives = {s: correct[f"1_{s}"] + sizes[f"0_{s}"] - correct[f"0_{s}"] for s in (0, 1)}
    share = {s: positives[s] / (sizes[f"1_{s}"] + sizes[f"0_{s}"]) for s in (0, 1)}
    out = {f"acc_{g}": acc[g] for g in GROUPS}
    out.update(ACC=100.0 * sum(correct[g] for g in GROUPS) / sum(sizes.values()), WST=stacked.min(axis=0),
               STD=stacked.std(axis=0), EO_code=(d_tpr + d_fpr) / 2, EO_paper=np.maximum(d_tpr, d_fpr),
               DP=100.0 * np.abs(share[1] - share[0]))
    return out


def per_run_intervals(rep: Replicates, level: float = LEVEL) -> pd.DataFrame:
    """One row per (strategy, seed): every metric's interval over resampled images (seeds fixed)."""
    values = metrics_from_counts(rep.images, rep.sizes)  # each (replicates, runs)
    rows = []
    for i, (name, seed) in enumerate(rep.runs):
        row = dict(strategy=name, seed=seed)
        for key in METRICS:
            row[f"{key}_lo"], row[f"{key}_hi"] = _percentiles(values[key][:, i], level)
        rows.append(row)
    return pd.DataFrame(rows)


@dataclass
class Aggregate:
    """A strategy's metrics aggregated over seeds: on the data, and in each bootstrap replicate with the test
    images resampled (seeds fixed; also each seed alone) or the seeds resampled (images fixed)."""

    value: dict[str, float]
    over_images: dict[str, np.ndarray]  # (replicates,)
    single_seeds: dict[str, np.ndarray]  # (replicates, seeds): each seed's own metric, images resampled
    over_seeds: dict[str, np.ndarray]  # (replicates,)

    def __sub__(self, other: "Aggregate") -> "Aggregate":
        """The paired difference: self minus other, draw by draw."""
        return Aggregate(*({k: mine[k] - theirs[k] for k in mine}
                           for mine, theirs in ((self.value, other.value), (self.over_images, other.over_images),
                                                (self.single_seeds, other.single_seeds),
                                                (self.over_seeds, other.over_seeds))))

    def interval(self, key: str, level: float = LEVEL) -> tuple[float, float, float]:
        """(lo, hi, two-sided p-value of value = 0) of one metric (module docstring)."""
        value, images, single = self.value[key], self.over_images[key], self.single_seeds[key]
        n = single.shape[1]
        if n < 2:
            lo, hi = _percentiles(images, level)
            p = min(1.0, 2 * min(np.mean(images <= 0), np.mean(images >= 0)))
            return lo, hi, float(p) if images.std() > 0 or value != 0 else 1.0
        spread = float(self.over_seeds[key].var()) * n / (n - 1)  # s^2 / n
        shared = max(0.0, n / (n - 1) * (float(images.var()) - float(single.var(axis=0).mean()) / n))
        se = np.sqrt(spread + shared)
        if se == 0:
            return value, value, 1.0 if value == 0 else float("nan")
        df = (n - 1) * (spread + shared) ** 2 / spread ** 2 if spread > 0 else np.inf
        half = stats.t.ppf(0.5 + level / 2, df) * se
        return value - half, value + half, float(2 * stats.t.sf(abs(value) / se, df))


def aggregated(rep: Replicates, strategy: str) -> Aggregate:
    """A strategy's metrics aggregated over seeds as the tables do, on the data and in every replicate."""
    columns = [i for i, (name, _) in enumerate(rep.runs) if name == strategy]
    if not columns:
        raise AimfairError(f"strategy {strategy!r} was not evaluated")
    seeds = [rep.runs[i][1] for i in columns]
    if sorted(seeds) != rep.seeds:
        raise AimfairError(f"strategy {strategy} was run on seeds {sorted(seeds)}, the others on {rep.seeds}: "
                           "comparisons need the same seeds; train the missing ones or drop them from seeds")
    order = [columns[seeds.index(s)] for s in rep.seeds]
    observed = metrics_from_counts({g: rep.observed[g][order] for g in GROUPS}, rep.sizes)
    resampled = metrics_from_counts({g: rep.images[g][:, order] for g in GROUPS}, rep.sizes)  # (B, seeds)
    equal = np.ones((1, len(order)))
    value = {k: float(v[0]) for k, v in _over_seeds(observed, equal).items()}
    single = {k: resampled[k] for k in METRICS}
    return Aggregate(value, _over_seeds(resampled, equal), single, _over_seeds(observed, rep.seed_weights))


def _over_seeds(per_seed: dict[str, np.ndarray], weights: np.ndarray) -> dict[str, np.ndarray]:
    """Seed-weighted aggregation of per-seed metrics (shape (replicates, seeds) or (seeds,))."""
    w = weights / weights.sum(axis=1, keepdims=True)  # (replicates, seeds)
    mean = {k: (w * np.atleast_2d(v)).sum(axis=1) for k, v in per_seed.items()}
    groups = np.stack([mean[f"acc_{g}"] for g in GROUPS])
    out = {f"acc_{g}": mean[f"acc_{g}"] for g in GROUPS}
    out.update(WST=groups.min(axis=0), STD=groups.std(axis=0), **{k: mean[k] for k in _SEED_MEANS})
    return out


def aggregate_intervals(rep: Replicates, strategies: list[str], level: float = LEVEL) -> dict[str, dict]:
    """Per strategy: each metric aggregated over seeds, with its 95 % interval (value, lo, hi)."""
    out = {}
    for name in strategies:
        agg = aggregated(rep, name)
        out[name] = {}
        for key in METRICS:
            lo, hi, _ = agg.interval(key, level)
            out[name][key] = dict(value=agg.value[key], lo=max(lo, 0.0), hi=min(hi, 100.0))
    return out


def compare(rep: Replicates, strategy: str, reference: str, metrics: tuple[str, ...] = ("ACC", "WST", "EO_paper"),
            level: float = LEVEL) -> dict[str, dict]:
    """strategy minus reference, aggregated over seeds: the difference, its interval and p-value."""
    difference = aggregated(rep, strategy) - aggregated(rep, reference)
    out = {}
    for key in metrics:
        lo, hi, p = difference.interval(key, level)
        out[key] = dict(difference=difference.value[key], lo=lo, hi=hi, p=p)
    return out


def _percentiles(draws: np.ndarray, level: float) -> tuple[float, float]:
    lo, hi = np.percentile(draws, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)

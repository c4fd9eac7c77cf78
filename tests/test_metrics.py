"""Tests for aimfair.evaluation.metrics: paper definitions, agreement with fairlearn, aggregation, validation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    equalized_odds_difference,
)
from sklearn.metrics import accuracy_score

from aimfair.core.errors import AimfairError
from aimfair.core.groups import GROUPS
from aimfair.evaluation.metrics import (
    PAPER_COLUMNS,
    aggregate_seeds,
    fairness_metrics,
    format_mean_std,
    group_accuracies,
)

# Hand-built case: 12 samples, group sizes 3/3/2/4 so ACC is NOT the mean of group accuracies.
#   group (0,0): pred 0,0,1   -> 2/3 correct, FPR_s0 = 1/3
#   group (0,1): pred 0,1,1   -> 1/3 correct, FPR_s1 = 2/3
#   group (1,0): pred 1,1     -> 2/2 correct, TPR_s0 = 1
#   group (1,1): pred 1,0,0,0 -> 1/4 correct, TPR_s1 = 1/4
# Samples are interleaved so nothing relies on sorted input.
HAND_ROWS = [  # (y, s, pred)
    (0, 0, 0), (1, 1, 1), (0, 1, 0), (1, 0, 1),
    (0, 0, 0), (1, 1, 0), (0, 1, 1), (1, 0, 1),
    (0, 0, 1), (1, 1, 0), (0, 1, 1), (1, 1, 0),
]
HAND_Y = [r[0] for r in HAND_ROWS]
HAND_S = [r[1] for r in HAND_ROWS]
HAND_P = [r[2] for r in HAND_ROWS]


def test_hand_computed_case():
    m = fairness_metrics(HAND_Y, HAND_S, HAND_P)
    assert m["acc_0_0"] == pytest.approx(200 / 3)
    assert m["acc_0_1"] == pytest.approx(100 / 3)
    assert m["acc_1_0"] == pytest.approx(100.0)
    assert m["acc_1_1"] == pytest.approx(25.0)
    # 2 + 1 + 2 + 1 = 6 correct out of 12.
    assert m["ACC"] == pytest.approx(50.0)
    assert m["WST"] == pytest.approx(25.0)
    # Mean 225/4; deviations 125/12, -275/12, 525/12, -375/12 -> variance 507500/144/4.
    assert m["STD"] == pytest.approx(math.sqrt(507500 / 576))
    assert m["STD"] == pytest.approx(29.6829, abs=1e-4)
    assert m["TPR_s0"] == pytest.approx(100.0)
    assert m["TPR_s1"] == pytest.approx(25.0)
    assert m["FPR_s0"] == pytest.approx(100 / 3)
    assert m["FPR_s1"] == pytest.approx(200 / 3)
    # dTPR = 75, dFPR = 100/3.
    assert m["EO_code"] == pytest.approx((75 + 100 / 3) / 2)
    assert m["EO_paper"] == pytest.approx(75.0)
    # P(pred=1|s=0) = 3/5, P(pred=1|s=1) = 3/7.
    assert m["DP"] == pytest.approx(100 * (3 / 5 - 3 / 7))


def test_group_accuracies_matches_fairness_metrics_and_keys():
    accs = group_accuracies(HAND_Y, HAND_S, HAND_P)
    assert list(accs) == list(GROUPS)
    m = fairness_metrics(HAND_Y, HAND_S, HAND_P)
    for g in GROUPS:
        assert accs[g] == pytest.approx(m[f"acc_{g}"])


def test_output_keys_and_plain_floats():
    m = fairness_metrics(np.array(HAND_Y), np.array(HAND_S, dtype=bool), np.array(HAND_P, dtype=float))
    expected = {"acc_0_0", "acc_0_1", "acc_1_0", "acc_1_1", "ACC", "WST", "STD", "EO_code",
                "EO_paper", "DP", "TPR_s0", "TPR_s1", "FPR_s0", "FPR_s1"}
    assert set(m) == expected
    assert all(type(v) is float for v in m.values())
    json.dumps(m)  # must be serialisable as-is


def _random_case(seed: int, n: int = 500):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = rng.integers(0, 2, n)
    # Predictions correlated with y and biased by s, so gaps are non-trivial.
    p_pos = 0.15 + 0.6 * y + 0.2 * s * (1 - y) - 0.1 * s * y
    pred = (rng.random(n) < p_pos).astype(int)
    return y, s, pred


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_matches_fairlearn(seed):
    y, s, pred = _random_case(seed)
    m = fairness_metrics(y, s, pred)
    eo_mean = equalized_odds_difference(y, pred, sensitive_features=s, agg="mean") * 100
    eo_worst = equalized_odds_difference(y, pred, sensitive_features=s, agg="worst_case") * 100
    dp = demographic_parity_difference(y, pred, sensitive_features=s) * 100
    assert m["EO_code"] == pytest.approx(eo_mean)
    assert m["EO_paper"] == pytest.approx(eo_worst)
    assert m["DP"] == pytest.approx(dp)
    # The two EO definitions must genuinely differ on this data, else the test proves little.
    assert m["EO_code"] != pytest.approx(m["EO_paper"])

    by_group = MetricFrame(metrics=accuracy_score, y_true=y, y_pred=pred,
                           sensitive_features={"y": y, "s": s}).by_group
    for g in GROUPS:
        gy, gs = int(g[0]), int(g[2])
        assert m[f"acc_{g}"] == pytest.approx(by_group.loc[(gy, gs)] * 100)
    assert m["ACC"] == pytest.approx(accuracy_score(y, pred) * 100)


def test_std_is_population_std():
    y, s, pred = _random_case(7)
    m = fairness_metrics(y, s, pred)
    accs = np.array([m[f"acc_{g}"] for g in GROUPS])
    assert m["STD"] == pytest.approx(np.std(accs, ddof=0))
    assert m["STD"] != pytest.approx(np.std(accs, ddof=1))
    assert m["WST"] == pytest.approx(accs.min())


def _fake_seed(accs: tuple[float, float, float, float], acc: float, eo: float) -> dict[str, float]:
    """A fairness_metrics-shaped dict with chosen group accuracies."""
    a = np.array(accs)
    row = {f"acc_{g}": float(v) for g, v in zip(GROUPS, accs)}
    row.update(ACC=acc, WST=float(a.min()), STD=float(np.std(a)), EO_code=eo / 2, EO_paper=eo,
               DP=eo / 3, TPR_s0=80.0, TPR_s1=70.0, FPR_s0=10.0, FPR_s1=20.0)
    return row


def test_aggregate_paper_wst_differs_from_mean_of_wst():
    # Each seed's worst group is a different group, so averaging first lifts the minimum.
    a = _fake_seed((90, 90, 90, 60), acc=80.0, eo=10.0)
    b = _fake_seed((90, 90, 60, 90), acc=90.0, eo=20.0)
    agg = aggregate_seeds([a, b])
    assert agg["n_seeds"] == 2
    assert agg["paper"]["acc_1_0"] == pytest.approx(75.0)
    assert agg["paper"]["acc_1_1"] == pytest.approx(75.0)
    assert agg["paper"]["WST"] == pytest.approx(75.0)
    assert agg["mean"]["WST"] == pytest.approx(60.0)
    assert agg["paper"]["STD"] == pytest.approx(np.std([90, 90, 75, 75]))
    assert agg["paper"]["STD"] == pytest.approx(7.5)
    # Seed-mean keys.
    assert agg["paper"]["ACC"] == pytest.approx(85.0)
    assert agg["paper"]["EO_paper"] == pytest.approx(15.0)
    assert agg["paper"]["EO_code"] == pytest.approx(7.5)
    assert agg["paper"]["DP"] == pytest.approx(5.0)
    # Sample std (ddof=1) over seeds.
    assert agg["std"]["ACC"] == pytest.approx(math.sqrt(50))
    assert agg["std"]["acc_1_0"] == pytest.approx(np.std([90, 60], ddof=1))
    assert agg["std"]["acc_0_0"] == pytest.approx(0.0)
    assert set(agg["mean"]) == set(a) == set(agg["std"])


def test_aggregate_real_seeds_mean_std():
    rows = [fairness_metrics(*_random_case(seed)) for seed in range(3)]
    agg = aggregate_seeds(rows)
    for k in rows[0]:
        vals = [r[k] for r in rows]
        assert agg["mean"][k] == pytest.approx(np.mean(vals))
        assert agg["std"][k] == pytest.approx(np.std(vals, ddof=1))


def test_aggregate_single_seed_std_none():
    m = fairness_metrics(HAND_Y, HAND_S, HAND_P)
    agg = aggregate_seeds([m])
    assert agg["n_seeds"] == 1
    assert all(v is None for v in agg["std"].values())
    assert agg["mean"] == pytest.approx(m)
    assert agg["paper"]["WST"] == pytest.approx(m["WST"])
    assert agg["paper"]["STD"] == pytest.approx(m["STD"])
    json.dumps(agg, allow_nan=False)  # None, never NaN


def test_paper_columns_and_format():
    assert PAPER_COLUMNS == ["acc_0_0", "acc_0_1", "acc_1_0", "acc_1_1", "ACC", "WST", "EO_paper", "STD"]
    assert set(PAPER_COLUMNS) <= set(fairness_metrics(HAND_Y, HAND_S, HAND_P))
    assert format_mean_std(89.2345, 0.4071) == "89.23 ± 0.41"
    assert format_mean_std(89.2345, None) == "89.23"
    assert format_mean_std(89.2345, 0.4071, digits=1) == "89.2 ± 0.4"


@pytest.mark.parametrize(
    "y, s, pred, match",
    [
        ([0, 0, 1, 1], [0, 1, 0, 1], [0, 1, 1], "different lengths"),
        ([0, 0, 1, 2], [0, 1, 0, 1], [0, 1, 1, 0], "0/1"),
        ([0, 0, 1, 1], [0, 1, 0, -1], [0, 1, 1, 0], "0/1"),
        ([0, 0, 1, 1], [0, 1, 0, 1], [0, 0.5, 1, 0], "0/1"),
        ([], [], [], "empty"),
        ([0, 0, 1, 1], [0, 1, 0, 0], [0, 1, 1, 0], r"group \(y=1, s=1\) has no samples"),
        ([0, 1, 1, 1], [1, 0, 1, 0], [0, 1, 1, 0], r"group \(y=0, s=0\) has no samples"),
        ([[0, 0], [1, 1]], [[0, 1], [0, 1]], [[0, 1], [1, 0]], "1-D"),
    ],
)
def test_validation_errors(y, s, pred, match):
    with pytest.raises(AimfairError, match=match):
        fairness_metrics(y, s, pred)
    with pytest.raises(AimfairError, match=match):
        group_accuracies(y, s, pred)


def test_aggregate_validation_errors():
    with pytest.raises(AimfairError, match="no per-seed metrics"):
        aggregate_seeds([])
    good = fairness_metrics(HAND_Y, HAND_S, HAND_P)
    bad = {k: v for k, v in good.items() if k != "EO_paper"}
    with pytest.raises(AimfairError, match="EO_paper"):
        aggregate_seeds([good, bad])

"""Confidence intervals and paired comparisons: the bootstrap of aimfair.evaluation.uncertainty."""

import json

import numpy as np
import pandas as pd
import pytest

from aimfair.config import parse_params
from aimfair.core.errors import AimfairError
from aimfair.evaluation.metrics import aggregate_seeds, fairness_metrics
from aimfair.evaluation.uncertainty import (
    aggregate_intervals,
    aggregated,
    bootstrap,
    compare,
    metrics_from_counts,
    per_run_intervals,
)


def predictions(errors: dict[str, float], seeds=(1, 2, 3), n=800, seed=0, minority_penalty=1.0) -> pd.DataFrame:
    """Predictions of several strategies on one test set: each gets an image wrong with probability `error`
    (times 1 + minority_penalty in the groups where y differs from s)."""
    rng = np.random.default_rng(seed)
    y, s = rng.integers(0, 2, n), rng.integers(0, 2, n)
    frames = []
    for name, error in errors.items():
        for run_seed in seeds:
            wrong = rng.random(n) < error * np.where(y != s, 1 + minority_penalty, 1.0)
            frames.append(pd.DataFrame(dict(strategy=name, seed=run_seed, image_id=[f"{i:05d}" for i in range(n)],
                                            y=y, s=s, pred=np.where(wrong, 1 - y, y))))
    return pd.concat(frames, ignore_index=True)


def test_the_counts_give_the_same_metrics_as_the_predictions():
    preds = predictions({"a": 0.1, "b": 0.2})
    rep = bootstrap(preds, 200)
    for i, (name, seed) in enumerate(rep.runs):
        run = preds[(preds["strategy"] == name) & (preds["seed"] == seed)]
        expected = fairness_metrics(run["y"], run["s"], run["pred"])
        got = metrics_from_counts({g: rep.observed[g][i] for g in rep.sizes}, rep.sizes)
        assert {k: pytest.approx(expected[k]) for k in got} == {k: float(v) for k, v in got.items()}


def test_the_aggregated_value_is_the_tables_and_lies_inside_its_interval():
    preds = predictions({"a": 0.1})
    per_seed = [fairness_metrics(r["y"], r["s"], r["pred"]) for _, r in preds.groupby("seed")]
    paper = aggregate_seeds(per_seed)["paper"]
    intervals = aggregate_intervals(bootstrap(preds, 500), ["a"])["a"]
    for key in ("ACC", "WST", "EO_paper", "STD", "DP"):
        assert intervals[key]["value"] == pytest.approx(paper[key])
        assert intervals[key]["lo"] < paper[key] < intervals[key]["hi"]


def test_an_interval_narrows_as_the_test_set_grows():
    width = {}
    for n in (400, 6400):
        wst = aggregate_intervals(bootstrap(predictions({"a": 0.15}, n=n), 1000), ["a"])["a"]["WST"]
        width[n] = wst["hi"] - wst["lo"]
    assert 2.5 < width[400] / width[6400] < 6  # about sqrt(16) = 4


def test_the_per_image_interval_covers_the_true_accuracy_about_95_times_in_100():
    # 200 test sets drawn from one population whose accuracy is 85 % in every group
    covered = 0
    for draw in range(200):
        preds = predictions({"a": 0.15}, seeds=(1,), n=400, seed=draw, minority_penalty=0.0)
        row = per_run_intervals(bootstrap(preds, 200, seed=draw)).iloc[0]
        covered += row["ACC_lo"] <= 85.0 <= row["ACC_hi"]
    assert 0.88 <= covered / 200 <= 0.99


def seeds_with_training_noise(draw: int, training_sd: float, n: int, names=("a",)) -> pd.DataFrame:
    """3 seeds per strategy on one test set of n images; each seed's model gets its own error rate around 15 %
    (training noise of sd `training_sd`), the same for every strategy in expectation, and its own errors."""
    rng = np.random.default_rng(draw)
    y, s = rng.integers(0, 2, n), rng.integers(0, 2, n)
    frames = []
    for name in names:
        for seed in (1, 2, 3):
            wrong = rng.random(n) < 0.15 + rng.normal(0, training_sd)
            frames.append(pd.DataFrame(dict(strategy=name, seed=seed, image_id=[f"{i:05d}" for i in range(n)],
                                            y=y, s=s, pred=np.where(wrong, 1 - y, y))))
    return pd.concat(frames, ignore_index=True)


def test_the_interval_over_three_seeds_covers_the_expected_accuracy_when_seeds_train_differently():
    # the seeds dominate (a training sd of 3 points against 0.6 of image noise): dropping the spread between
    # seeds, or taking a percentile bootstrap over 3 seeds, covers the expected 85 % far less often
    covered = 0
    for draw in range(100):
        frame = seeds_with_training_noise(draw, 0.03, n=4000)
        acc = aggregate_intervals(bootstrap(frame, 200, seed=draw), ["a"])["a"]["ACC"]
        covered += acc["lo"] <= 85.0 <= acc["hi"]
    assert 88 <= covered <= 99


@pytest.mark.parametrize("training_sd", [0.0, 0.03])
def test_equal_strategies_differ_significantly_about_5_times_in_100(training_sd):
    # no true difference; with training_sd 0 all the noise is the test images' (the seeds' spread alone
    # would make the t test far too cautious there), with 0.03 it is mostly the seeds'
    rejected = 0
    for draw in range(200):
        frame = seeds_with_training_noise(draw, training_sd, n=400, names=("a", "b"))
        rejected += compare(bootstrap(frame, 200, seed=draw), "a", "b")["ACC"]["p"] < 0.05
    assert 3 <= rejected <= 20


def test_one_seed_gets_the_image_bootstrap_and_intervals_stay_within_0_and_100():
    preds = predictions({"perfect": 0.0, "a": 0.15}, seeds=(1,))
    rep = bootstrap(preds, 300)
    perfect = aggregate_intervals(rep, ["perfect"])["perfect"]
    assert perfect["WST"] == dict(value=100.0, lo=100.0, hi=100.0) and perfect["EO_paper"]["lo"] == 0.0
    single = per_run_intervals(rep).set_index("strategy").loc["a"]
    assert aggregate_intervals(rep, ["a"])["a"]["ACC"]["lo"] == pytest.approx(single["ACC_lo"])
    assert compare(rep, "a", "perfect")["ACC"]["p"] < 0.01


def test_a_familys_row_carries_its_chosen_variants_predictions_and_a_mean_row_none():
    from aimfair.evaluation.evaluate import _with_family_predictions

    preds = predictions({"draw0": 0.1, "draw1": 0.2}, seeds=(1, 2))
    per_seed = pd.DataFrame([dict(strategy="family", seed=1, variant="draw1"),
                             dict(strategy="family", seed=2, variant="draw0"),
                             dict(strategy="family_mean", seed=1, variant=None)])
    both = _with_family_predictions(preds, per_seed)
    family = both[both["strategy"] == "family"]
    for seed, variant in ((1, "draw1"), (2, "draw0")):
        chosen = preds[(preds["strategy"] == variant) & (preds["seed"] == seed)]
        assert family[family["seed"] == seed]["pred"].tolist() == chosen["pred"].tolist()
    assert "family_mean" not in set(both["strategy"])


def test_paired_comparisons_find_a_real_difference_and_none_where_there_is_none():
    preds = predictions({"baseline": 0.2, "better": 0.08}, n=3200)
    same = preds[preds["strategy"] == "baseline"].assign(strategy="copy")
    rep = bootstrap(pd.concat([preds, same], ignore_index=True), 1000)
    real = compare(rep, "better", "baseline")
    assert real["WST"]["lo"] > 0 and real["EO_paper"]["hi"] < 0 and real["WST"]["p"] < 0.01
    none = compare(rep, "copy", "baseline")["WST"]
    assert (none["difference"], none["lo"], none["hi"], none["p"]) == (0.0, 0.0, 0.0, 1.0)


def test_the_intervals_are_seeded_and_do_not_depend_on_the_order_of_the_predictions():
    preds = predictions({"a": 0.1, "b": 0.2})
    first = aggregate_intervals(bootstrap(preds, 300, seed=4), ["a", "b"])
    shuffled = preds.sample(frac=1.0, random_state=1)
    assert aggregate_intervals(bootstrap(shuffled, 300, seed=4), ["a", "b"]) == first
    assert aggregate_intervals(bootstrap(preds, 300, seed=5), ["a", "b"]) != first


def test_bad_comparisons_and_settings_are_clear_errors():
    preds = predictions({"a": 0.1, "b": 0.2})
    with pytest.raises(AimfairError, match="evaluate.bootstrap must be at least 100"):
        bootstrap(preds, 99)
    with pytest.raises(AimfairError, match="evaluate.bootstrap must be at least 100"):
        parse_params({"evaluate": {"bootstrap": 50}})
    fewer = preds[~((preds["strategy"] == "b") & (preds["seed"] == 3))]
    with pytest.raises(AimfairError, match=r"strategy b was run on seeds \[1, 2\], the others on \[1, 2, 3\]"):
        compare(bootstrap(fewer, 200), "a", "b")
    other_images = preds[~((preds["strategy"] == "b") & (preds["image_id"] == "00007"))]
    with pytest.raises(AimfairError, match="not every run was evaluated on the same images"):
        bootstrap(other_images, 200)
    with pytest.raises(AimfairError, match="strategy 'c' was not evaluated"):
        aggregated(bootstrap(preds, 200), "c")


def test_the_report_carries_intervals_and_comparisons(tmp_path):
    from aimfair.evaluation.evaluate import Evaluation, write_evaluation

    preds = predictions({"baseline": 0.2, "full_ft": 0.12, "aimfair": 0.08}, n=3200)
    rows = [dict(strategy=name, seed=seed, **fairness_metrics(r["y"], r["s"], r["pred"]))
            for (name, seed), r in preds.groupby(["strategy", "seed"], sort=False)]
    per_seed = pd.DataFrame(rows)
    aggregate = {name: aggregate_seeds(g.drop(columns=["strategy", "seed"]).to_dict("records"))
                 for name, g in per_seed.groupby("strategy", sort=False)}
    params = parse_params({"seeds": [1, 2, 3], "evaluate": {"bootstrap": 300}})
    files = write_evaluation(Evaluation(per_seed, preds, aggregate), params, tmp_path)
    table = files["table_md"].read_text()
    wst = json.loads(files["metrics"].read_text())["aimfair"]
    assert f"{wst['paper']['WST']:.2f} [{wst['interval']['WST'][0]:.1f}, {wst['interval']['WST'][1]:.1f}]" in table
    assert "| aimfair − baseline |" in table and "| aimfair − full_ft |" in table and "| full_ft − baseline |" in table
    assert wst["against"]["baseline"]["WST"]["lo"] > 0 and wst["against"]["baseline"]["WST"]["p"] < 0.01
    assert {"WST_lo", "WST_hi", "EO_paper_lo"} <= set(pd.read_csv(files["per_seed"]).columns)
    assert {"WST lo", "WST hi"} <= set(pd.read_csv(files["table_csv"]).columns)


def test_each_strategy_is_compared_once_with_each_reference():
    from aimfair.evaluation.evaluate import reference_pairs

    assert reference_pairs(["baseline", "full_ft", "aimfair"]) == [
        ("full_ft", "baseline"), ("aimfair", "baseline"), ("aimfair", "full_ft")]
    assert reference_pairs(["baseline", "random_selection", "aimfair"], ("aimfair", "baseline")) == [
        ("baseline", "aimfair"), ("random_selection", "aimfair"), ("random_selection", "baseline")]
    assert reference_pairs(["synthetic_only", "aimfair"]) == []  # no reference evaluated: nothing to compare

"""The ablations (aimfair.ablations): their params, arms, settings and the errors a user can meet."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from aimfair.ablations import ABLATIONS, get_ablation
from aimfair.ablations.base import AblationSetting, first_share
from aimfair.ablations.frozen_upto import FreezeUpTo
from aimfair.ablations.model_selection import (
    _eo,
    toward_oracle,
    tracking,
    tracking_summary,
    validation_jobs,
)
from aimfair.classifier.models import build_classifier
from aimfair.config import Params, parse_params
from aimfair.core.errors import AimfairError
from aimfair.core.groups import GROUPS, group_accuracies
from aimfair.csdg.generation import pool_plan
from aimfair.csdg.pool import plan_jobs
from aimfair.csdg.synthetic import draw_sets
from aimfair.data.loading import ImageSet
from aimfair.evaluation.metrics import fairness_metrics


def with_ablations(**values) -> Params:
    return parse_params({"ablations": values})


@pytest.mark.parametrize("values, message", [
    (dict(top_k=[0]), "ablations.top_k holds 0"),
    (dict(top_k=[63]), "each k must be in 1..62"),
    (dict(skew=["1/4", "2/8"]), "holds the same ratio twice"),
    (dict(amount=[0.0]), "ablations.amount holds 0.0"),
    (dict(amount=[12]), "each ratio must be in (0, 10]"),
    (dict(skew=["6/4"]), "above 1: write it as minority/majority, 2/3"),
    (dict(skew=["lots"]), "ablations.skew holds 'lots'"),
    (dict(real_fraction=[1.0]), "each share must be in (0, 1)"),
    (dict(prompts=["many"]), "'single' or a positive number"),
    (dict(prompts=["0"]), "'single' or a positive number"),
    (dict(frozen_upto=["layer9"]), "choose one of: conv1, layer1"),
    (dict(top_k=[]), "non-empty list of distinct values"),
    (dict(top_k=[45, 45]), "non-empty list of distinct values"),
    (dict(seeds=[7]), "ablations.seeds holds [7], not among seeds"),
    (dict(model_selection=dict(rules=["test_worst"])), "ablations.model_selection.rules is 'test_worst'"),
    (dict(model_selection=dict(strategies=["baseline"])), "ablations.model_selection.strategies is 'baseline'"),
    (dict(model_selection=dict(rules=[])), "model_selection.rules must be a non-empty list"),
    (dict(model_selection=dict(val_per_group=0)), "model_selection.val_per_group must be at least 1"),
])
def test_out_of_range_ablation_values_are_clear_errors(values, message):
    with pytest.raises(AimfairError, match="fix it in params.yaml|choose one of") as error:
        with_ablations(**values)
    assert message in str(error.value)


def test_the_defaults_name_every_ablation_and_the_papers_values():
    a = Params().ablations
    assert set(ABLATIONS) == {"prompts", "top_k", "amount", "skew", "real_fraction", "frozen_upto", "model_selection"}
    assert a.amount == [0.5, 1.0, 1.5, 2.0] and a.real_fraction == [0.5, 0.25, 0.1]
    assert a.skew == ["4/6", "3/7", "2/8"]  # 1:9, the real data's, is the pipeline's own


def test_first_share_keeps_each_groups_first_images_and_so_the_skew():
    y = np.array([0, 0, 1, 1, 0, 1, 0, 1, 0, 1] * 2)
    s = np.array([0, 1, 0, 1, 1, 0, 1, 0, 1, 0] * 2)
    images = ImageSet(pixels=np.arange(20, dtype=np.uint8).reshape(20, 1, 1, 1), y=y, s=s,
                      image_ids=[f"{i:02d}" for i in range(20)])
    half = first_share(images, 0.5)
    for yy, ss in ((0, 0), (0, 1), (1, 0), (1, 1)):
        members = [i for i in images.image_ids if y[int(i)] == yy and s[int(i)] == ss]
        kept = [i for i in half.image_ids if y[int(i)] == yy and s[int(i)] == ss]
        assert kept == members[:max(1, round(len(members) / 2))]
    assert list(half.pixels.ravel()) == [int(i) for i in half.image_ids]  # pixels follow their labels


def test_freezing_up_to_a_stage_freezes_it_and_everything_before_it():
    model = build_classifier("resnet18", "none")
    strategy = type("Variant", (FreezeUpTo,), dict(name="v", summary="", upto="layer2"))()
    strategy.restrict(model, setting=None)
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n.split(".")[0] for n, p in model.named_parameters() if not p.requires_grad}
    assert trainable == {"layer3", "layer4", "fc"} and frozen == {"conv1", "bn1", "layer1", "layer2"}


def test_each_ablation_reads_the_pipelines_own_value_from_stage_finetune():
    params = Params()
    rows = {name: [(a.label, a.reference) for a in get_ablation(name).arms(params, Path("."))]
            for name in ("prompts", "top_k", "skew", "frozen_upto", "real_fraction")}
    assert rows["prompts"] == [("1 plain prompt", False), ("25 contextual", False), ("50 contextual (pipeline)", True)]
    assert rows["top_k"] == [("k=40", False), ("k=45", False), ("k=50", False), ("k=55 (pipeline)", True),
                             ("k=60", False)]
    assert [label for label, _ in rows["skew"]] == ["D_S1 4:6", "D_S1 3:7", "D_S1 2:8", "D_S1 1:9 (pipeline)"]
    assert rows["frozen_upto"][0] == ("nothing frozen (full_ft)", True) and len(rows["frozen_upto"]) == 7
    assert rows["frozen_upto"][5] == ("frozen up to layer4 (linear_probe)", True)  # only fc moves: stage finetune's
    assert [label for label, ref in rows["real_fraction"] if not ref] == [
        "baseline, 50% real", "AIM-Fair, 50% real", "baseline, 25% real", "AIM-Fair, 25% real",
        "baseline, 10% real", "AIM-Fair, 10% real"]


def test_each_arm_is_compared_with_the_pipelines_own_value_and_each_cut_with_the_mask():
    params = Params()
    pairs = {name: get_ablation(name).pairs(get_ablation(name).arms(params, Path(".")))
             for name in ("prompts", "top_k", "frozen_upto", "real_fraction")}
    assert pairs["prompts"] == [("1 plain prompt", "50 contextual (pipeline)"),
                                ("25 contextual", "50 contextual (pipeline)")]
    assert ("k=60", "k=55 (pipeline)") in pairs["top_k"] and len(pairs["top_k"]) == 4
    assert pairs["frozen_upto"][0] == ("nothing frozen (full_ft)", "AIM-Fair's mask (pipeline)")
    assert len(pairs["frozen_upto"]) == 6  # every cut, full_ft and linear_probe against the mask
    assert ("baseline, 10% real", "baseline, 100% real (pipeline)") in pairs["real_fraction"]
    assert ("AIM-Fair, 10% real", "AIM-Fair, 100% real (pipeline)") in pairs["real_fraction"]


def test_more_prompts_than_the_pipeline_wrote_is_a_clear_error():
    with pytest.raises(AimfairError, match="ablations.prompts holds 80: at most prompts.n_per_group"):
        get_ablation("prompts").arms(with_ablations(prompts=["80"]), Path("."))


def test_a_k_whose_intersection_is_empty_is_named(tmp_path):
    names = [n for n, _ in build_classifier("resnet18", "none").named_parameters()]
    order = np.arange(len(names))  # the least domain-sensitive tensors are the least bias-sensitive ones
    scores = pd.DataFrame(dict(name=names, numel=1, domain=order, bias=order))
    (tmp_path / "work" / "masks" / "seed_100").mkdir(parents=True)
    scores.to_csv(tmp_path / "work" / "masks" / "seed_100" / "scores.csv", index=False)
    params = with_ablations(top_k=[10])
    with pytest.raises(AimfairError, match=r"ablations.top_k holds 10 \(seed 100\); drop it or choose another k: "
                                           r"the 10 tensors least sensitive"):
        get_ablation("top_k").prepare(params, tmp_path, [100], device=None, progress=False)


def test_a_stage_that_was_not_run_is_named(tmp_path):
    with pytest.raises(AimfairError, match="scores.csv does not exist: run the mask stage"):
        get_ablation("top_k").prepare(Params(), tmp_path, [100], device=None, progress=False)
    with pytest.raises(AimfairError, match="unknown ablation 'topk': choose from"):
        get_ablation("topk")


def test_an_ablation_setting_swaps_in_its_biased_model_and_mask(tmp_path):
    setting = AblationSetting(Params(), tmp_path, 100, device=None, progress=False,
                              biased_file=Path("elsewhere/best.safetensors"))
    with pytest.raises(AimfairError, match="no biased model at .*elsewhere/best.safetensors"):
        setting.biased_checkpoint
    plain = replace(setting, biased_file=None)
    with pytest.raises(AimfairError, match="no biased model for seed 100 at .*work/pretrain/seed_100"):
        plain.biased_checkpoint


def test_the_pipelines_own_amount_is_read_not_trained_again(tmp_path):
    (tmp_path / "work" / "splits").mkdir(parents=True)
    pd.DataFrame(dict(image_id=range(2000), y=0, s=0)).to_csv(tmp_path / "work" / "splits" / "train.csv", index=False)
    arms = get_ablation("amount").arms(Params(), tmp_path)  # 500 per group = 1x a real set of 2,000
    assert [(a.label, a.reference) for a in arms] == [("0.5× real", False), ("1× real (pipeline)", True),
                                                      ("1.5× real", False), ("2× real", False)]
    assert arms[0].setting["balanced_per_group"] == 250


def test_each_selection_rule_trains_the_strategies_again_and_the_pipelines_rule_is_read():
    ablation = get_ablation("model_selection")
    arms = ablation.arms(Params(), Path("."))
    assert [(a.label, a.reference) for a in arms[:3]] == [
        ("aimfair, real_val_acc (pipeline)", True), ("aimfair, synthetic_val_worst", False),
        ("aimfair, real_val_worst", False)]
    assert [a.series for a in arms] == ["aimfair"] * 3 + ["full_ft"] * 3 + ["linear_probe"] * 3
    trained = arms[1]
    assert trained.strategy == "ablation_model_selection-aimfair-synthetic_val_worst"
    assert trained.setting == dict(selection="synthetic_val_worst",
                                   validation_pool=Path("work/ablations/model_selection/validation_pool"))
    pairs = ablation.pairs(arms)
    assert ("aimfair, real_val_worst", "aimfair, real_val_acc (pipeline)") in pairs
    assert ("linear_probe, synthetic_val_worst", "linear_probe, real_val_worst") in pairs  # label-free vs oracle
    assert len(pairs) == 9
    params = parse_params({"finetune": {"strategies": ["baseline", "aimfair"]}})
    with pytest.raises(AimfairError, match="names 'full_ft', which finetune.strategies does not run"):
        ablation.arms(params, Path("."))


def test_an_arm_keeps_the_epoch_of_its_rule_and_monitors_its_validation_pool(tmp_path):
    pool = tmp_path / "validation_pool"
    (pool / "0_0").mkdir(parents=True)
    pixels = np.full((8, 8, 3), 200, dtype=np.uint8)
    Image.fromarray(pixels).save(pool / "0_0" / "000_0000.png")
    pd.DataFrame(dict(path=["0_0/000_0000.png"], y=[0], s=[0], group=["0_0"])).to_csv(pool / "manifest.csv",
                                                                                   index=False)
    params = parse_params({"pretrain": {"input_size": 8}})
    setting = AblationSetting(params, tmp_path, 100, device=None, progress=False, selection="real_val_worst",
                              validation_pool=Path("validation_pool"))
    setting.__dict__["val"] = "the real validation images"  # not loaded: only the synthetic set is looked at
    assert setting.select == "real_val_wst" and setting.monitors["real_val"] == "the real validation images"
    synthetic = setting.monitors["synthetic_val"]
    assert synthetic.image_ids == ["0_0/000_0000.png"] and synthetic.pixels.shape[0] == 1 and list(synthetic.s) == [0]
    plain = AblationSetting(params, tmp_path, 100, device=None, progress=False)
    plain.__dict__["val"] = "the real validation images"
    assert plain.select == "val_acc" and list(plain.monitors) == ["real_val"]


def test_the_synthetic_validation_set_is_what_a_grown_pool_adds_after_d_s1_and_d_s2():
    prompts = {g: [f"prompt {g} {i}" for i in range(7)] for g in GROUPS}
    params = parse_params({"synthetic": {"balanced_per_group": 30, "biased_size": 100}})
    jobs = validation_jobs(params, prompts, per_group=12)
    grown = replace(params, synthetic=replace(params.synthetic, val_per_group=12))
    pool = plan_jobs(prompts, pool_plan(grown), params.generate.seed)
    manifest = pd.DataFrame([dict(path=j.path, group=j.group) for j in pool])
    s = grown.synthetic
    drawn = draw_sets(manifest, s.balanced_per_group, s.biased_size, grown.data.bias_degree, s.val_per_group)
    assert [j.path for j in jobs] == list(drawn["validation"]["path"])  # the same images, the same seeds
    assert {j.seed for j in jobs} <= {j.seed for j in pool}
    assert not {j.path for j in jobs} & {p for name in ("balanced", "biased") for p in drawn[name]["path"]}


def test_eo_from_a_monitored_sets_group_accuracies_is_the_metrics_eo():
    rng = np.random.default_rng(0)
    y, s = rng.integers(0, 2, 400), rng.integers(0, 2, 400)
    pred = np.where(rng.random(400) < 0.8, y, 1 - y)
    accs = group_accuracies(y, s, pred)
    history = pd.DataFrame({f"synthetic_val_acc_{g}": [accs[g]] for g in GROUPS})
    assert _eo(history, "synthetic_val").iloc[0] == pytest.approx(fairness_metrics(y, s, pred)["EO_paper"])


def test_tracking_reads_one_history_per_strategy_and_seed_and_correlates(tmp_path):
    arms = get_ablation("model_selection").arms(Params(), Path("."))
    epochs = np.arange(1, 6)
    for arm in arms:
        if arm.reference or arm.value != "synthetic_val_worst":
            continue
        for seed in (1, 2):
            real = 60 + 5 * epochs + seed
            columns = {"epoch": epochs, "real_val_wst": real, "synthetic_val_wst": real / 2 + 10}
            for prefix, scale in (("real_val", 1), ("synthetic_val", 2)):
                columns.update({f"{prefix}_acc_0_0": 90 - 0 * epochs, f"{prefix}_acc_0_1": 90 - scale * epochs,
                                f"{prefix}_acc_1_0": 80 + 0 * epochs, f"{prefix}_acc_1_1": 80 + 0 * epochs})
            folder = tmp_path / "work" / "ablations" / "model_selection" / arm.strategy / f"seed_{seed}"
            folder.mkdir(parents=True)
            pd.DataFrame(columns).to_csv(folder / "history.csv", index=False)
    points = tracking(arms, [1, 2], tmp_path)
    assert len(points) == 3 * 2 * 5 and set(points["strategy"]) == {"aimfair", "full_ft", "linear_probe"}
    summary = tracking_summary(points)
    assert summary.loc["all", "runs"] == 6 and summary.loc["all", "epochs"] == 30
    assert summary.loc["all", "WST r (all epochs)"] == pytest.approx(1.0)  # a linear relation, whatever its slope
    assert summary.loc["aimfair", "EO Spearman (within runs)"] == pytest.approx(1.0)
    assert points["synthetic_val_EO"].tolist()[:2] == [2.0, 4.0]


def _toward_oracle_of(arms, errors):
    """toward_oracle on simulated predictions: {arm label: (error, minority penalty)} (tests/test_uncertainty)."""
    from aimfair.evaluation.evaluate import Evaluation
    from aimfair.evaluation.metrics import aggregate_seeds
    from tests.test_uncertainty import predictions

    preds = pd.concat([predictions({name: error}, n=4000, seed=0, minority_penalty=penalty)
                       for name, (error, penalty) in errors.items()], ignore_index=True)
    per_seed = pd.DataFrame([dict(strategy=name, seed=seed, **fairness_metrics(r["y"], r["s"], r["pred"]))
                             for (name, seed), r in preds.groupby(["strategy", "seed"], sort=False)])
    aggregate = {name: aggregate_seeds(g.drop(columns=["strategy", "seed"]).to_dict("records"))
                 for name, g in per_seed.groupby("strategy", sort=False)}
    params = parse_params({"seeds": [1, 2, 3], "evaluate": {"bootstrap": 300}})
    return toward_oracle(Evaluation(per_seed, preds, aggregate), arms, params), aggregate


def test_the_share_of_the_oracles_gain_is_given_only_when_the_oracle_gains():
    pipeline, free, oracle = [arm for arm in get_ablation("model_selection").arms(Params(), Path("."))
                              if arm.series == "aimfair"]
    # the oracle errs far less in the minority groups (a clear WST gain), the label-free rule half as much less
    table, aggregate = _toward_oracle_of([pipeline, free, oracle], {pipeline.label: (0.08, 1.5),
                                                                   free.label: (0.08, 0.75), oracle.label: (0.08, 0)})
    wst = table.loc[("aimfair", "WST")]
    assert wst["oracle"] > wst["label-free"] > wst["pipeline"]
    assert wst["oracle"] == pytest.approx(aggregate[oracle.label]["paper"]["WST"], abs=0.01)  # the table's value
    assert 0.3 < float(wst["share kept"]) < 0.7
    assert float(wst["oracle − pipeline"].split("[")[1].split(",")[0]) > 0  # the oracle's gain is shown
    # an oracle that chose what the pipeline's rule chose gains nothing: there is no share to give
    table, _ = _toward_oracle_of([pipeline, free, oracle], {pipeline.label: (0.08, 1.5), free.label: (0.08, 0.75),
                                                           oracle.label: (0.08, 1.5)})
    assert (table["share kept"] == "– (no gain shown)").all()

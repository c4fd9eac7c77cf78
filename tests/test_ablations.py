"""The ablations (aimfair.ablations): their params, arms, settings and the errors a user can meet."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aimfair.ablations import ABLATIONS, get_ablation
from aimfair.ablations.base import AblationSetting, first_share
from aimfair.ablations.frozen_upto import FreezeUpTo
from aimfair.classifier.models import build_classifier
from aimfair.config import Params, parse_params
from aimfair.core.errors import AimfairError
from aimfair.data.loading import ImageSet


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
])
def test_out_of_range_ablation_values_are_clear_errors(values, message):
    with pytest.raises(AimfairError, match="fix it in params.yaml|choose one of") as error:
        with_ablations(**values)
    assert message in str(error.value)


def test_the_defaults_name_every_ablation_and_the_papers_values():
    a = Params().ablations
    assert set(ABLATIONS) == {"prompts", "top_k", "amount", "skew", "real_fraction", "frozen_upto"}
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

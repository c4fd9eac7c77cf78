"""The group-robustness baselines (aimfair.strategies.robust, stage robust): their sets, loss, family and params."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from aimfair.classifier.models import build_classifier, save_checkpoint
from aimfair.classifier.objectives import GroupDRO, group_index
from aimfair.classifier.train import fit
from aimfair.config import ROBUST_STRATEGIES, TrainConfig, parse_params
from aimfair.core import paths
from aimfair.core.errors import AimfairError
from aimfair.data.loading import ImageSet
from aimfair.pipeline.robust import strategies_to_train
from aimfair.strategies.base import Setting
from aimfair.strategies.registry import FAMILIES, STRATEGIES, chosen_variant, run_dir
from aimfair.strategies.robust import balanced_index, register_jtt, upweighted_index
from aimfair.strategies.runner import run_strategy

CPU = torch.device("cpu")
SEED = 1


def _biased_images(n: int, seed: int, prefix: str) -> ImageSet:
    """Bright = 1, dark = 0, with s mostly equal to y (a 1:3 skew), so that the groups differ in size."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    s = np.where(np.arange(n) % 8 < 6, y, 1 - y)
    pixels = np.clip(np.where(y[:, None, None, None] == 1, 170, 80) + rng.normal(0, 30, (n, 3, 16, 16)),
                     0, 255).astype(np.uint8)
    return ImageSet(pixels=pixels, y=y, s=s, image_ids=[f"{prefix}{i}.png" for i in range(n)])


def _setting(root, **robust) -> Setting:
    params = parse_params({"seeds": [SEED], "robust": robust,
                           "pretrain": {"input_size": 16, "epochs": 2, "batch_size": 16, "milestones": []}})
    setting = Setting(params, root, SEED, CPU, progress=False)
    setting.__dict__.update(real_train=_biased_images(48, 0, "real"), val=_biased_images(16, 1, "val"))
    return setting


def test_the_names_params_may_hold_are_the_registrys():
    register_jtt(parse_params({}))
    assert set(ROBUST_STRATEGIES) == {"group_balanced", "group_dro"} | {"jtt"}
    assert all(name in STRATEGIES for name in ROBUST_STRATEGIES if name != "jtt") and "jtt" in FAMILIES


@pytest.mark.parametrize("robust, message", [
    (dict(strategies=["baseline", "jtt2"]), "robust.strategies is 'jtt2' (did you mean jtt?)"),
    (dict(jtt_epochs=[0]), "robust.jtt_epochs holds 0"),
    (dict(jtt_upweight=[1]), "an upweight below 2 adds no copy"),
    (dict(jtt_upweight=[]), "robust.jtt_upweight must be a non-empty list"),
    (dict(dro_step=0), "robust.dro_step is 0"),
])
def test_nonsense_robust_settings_are_clear_errors(robust, message):
    with pytest.raises(AimfairError) as error:
        parse_params({"robust": robust})
    assert message in str(error.value)


def test_stage_finetunes_strategies_are_read_from_it_and_must_be_run_there():
    params = parse_params({"robust": {"strategies": ["baseline", "jtt", "aimfair"]}})
    assert strategies_to_train(params) == ["jtt"]
    params = parse_params({"finetune": {"strategies": ["baseline", "full_ft"]},
                           "robust": {"strategies": ["baseline", "group_dro", "aimfair"]}})
    with pytest.raises(AimfairError, match="robust.strategies names 'aimfair', a strategy of stage finetune"):
        strategies_to_train(params)


def test_group_balanced_resampling_makes_every_group_as_large_as_the_largest():
    y = np.array([0] * 10 + [1] * 3 + [0] * 2 + [1] * 7)
    s = np.array([0] * 10 + [0] * 3 + [1] * 2 + [1] * 7)
    index = balanced_index(y, s, seed=0)
    groups = pd.Series(list(zip(y[index], s[index]))).value_counts()
    assert groups.eq(10).all() and len(groups) == 4
    assert set(index) == set(range(len(y)))  # every image at least once
    counts = np.bincount(index, minlength=len(y))
    assert counts[:10].tolist() == [1] * 10 and set(counts[10:13]) <= {3, 4} and set(counts[13:15]) == {5}
    assert np.array_equal(index, balanced_index(y, s, seed=0))
    assert not np.array_equal(index, balanced_index(y, s, seed=1))  # the remainder is a seeded draw


def test_jtt_repeats_each_error_upweight_times_and_every_other_image_once():
    index = upweighted_index(6, np.array([1, 4]), upweight=5)
    assert np.bincount(index).tolist() == [1, 5, 1, 1, 5, 1]


def test_group_dro_weighs_the_worst_group_up_and_keeps_an_absent_groups_weight():
    dro = GroupDRO(step=0.5)
    y, s = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 0, 0])  # no image of group (1, 1)
    logits = torch.tensor([-3.0, 2.0, 3.0, 3.0])  # group (0, 1) is wrong, the others right
    assert group_index(y, s).tolist() == [0, 1, 2, 2]
    loss = dro(logits, y, s)
    q = dro.q
    assert q.sum().item() == pytest.approx(1.0) and q.argmax().item() == 1
    assert q[3].item() < 0.25 and q[0].item() < q[1].item()  # (1, 1) kept its weight before normalising
    per_group = torch.nn.functional.binary_cross_entropy_with_logits(logits, y.float(), reduction="none")
    expected = q[0] * per_group[0] + q[1] * per_group[1] + q[2] * per_group[2:].mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    copy = GroupDRO(step=0.5)
    copy.load_state_dict(dro.state_dict())
    assert torch.equal(copy.q, dro.q)


def test_group_dro_trains_differently_from_erm_and_a_killed_run_resumes_its_weights(tmp_path, monkeypatch):
    cfg = TrainConfig(epochs=2, batch_size=16, lr=0.05, input_size=16, crop_scale=(0.8, 1.0), seed=1)
    train, val = _biased_images(48, 0, "t"), _biased_images(16, 1, "v")
    histories = {}
    for name, objective in (("erm", None), ("dro", GroupDRO(1.0))):
        torch.manual_seed(0)
        histories[name] = fit(build_classifier(), train, val, cfg, tmp_path / name, CPU, progress=False,
                              objective=objective)
    assert histories["erm"]["train_loss"].iloc[0] != histories["dro"]["train_loss"].iloc[0]
    saved = {}
    monkeypatch.setattr("aimfair.classifier.train.save_resume_state", lambda state, path: saved.update(state))
    dro = GroupDRO(1.0)
    torch.manual_seed(0)
    fit(build_classifier(), train, val, cfg, tmp_path / "again", CPU, progress=False, objective=dro,
        resume_every_s=0)
    q = saved["objective"]["q"]  # the weights after epoch 1, in the resume state
    assert q.sum().item() == pytest.approx(1.0) and not torch.allclose(q, torch.full((4,), 0.25))
    assert saved["run_id"]["objective"] == dict(objective="group_dro", step=1.0)


def test_the_robust_strategies_train_new_models_on_their_own_sets(tmp_path):
    register_jtt(parse_params({"robust": {"jtt_epochs": [1], "jtt_upweight": [3]}}))
    setting = _setting(tmp_path, jtt_epochs=[1], jtt_upweight=[3])
    balanced = STRATEGIES["group_balanced"]().training_set(setting)
    assert pd.Series(list(zip(balanced.y, balanced.s))).value_counts().nunique() == 1
    # GroupDRO draws its batches from the same group-balanced set, as its authors' --reweight_groups does
    dro_set = STRATEGIES["group_dro"]().training_set(setting)
    assert dro_set.image_ids == balanced.image_ids and np.array_equal(dro_set.pixels, balanced.pixels)
    result = run_strategy("group_dro", setting)
    record = json.loads((result.checkpoint.parent / "run.json").read_text())
    assert record["objective"] == dict(objective="group_dro", step=0.01) and record["start"].startswith("new")
    assert result.checkpoint.parent == tmp_path / paths.ROBUST / "group_dro" / f"seed_{SEED}"
    errors = STRATEGIES["jtt_identify-T1"]().errors(setting)  # trains the identification model first
    assert (tmp_path / run_dir("jtt_identify-T1", SEED) / "run.json").exists()
    jtt_set = STRATEGIES["jtt-T1_up3"]().training_set(setting)
    assert len(jtt_set) == 48 + 2 * len(errors)
    assert run_strategy("group_dro", setting).skipped  # the same settings: reused


def test_jtt_is_chosen_per_seed_by_worst_group_validation_accuracy(tmp_path):
    family = register_jtt(parse_params({"robust": {"jtt_epochs": [1], "jtt_upweight": [6, 20]}}))
    assert family.variants == ("jtt-T1_up6", "jtt-T1_up20") and family.chosen_by == "real_val_wst"
    for name, (val_acc, wst) in zip(family.variants, [(90.0, 40.0), (85.0, 70.0)]):
        out = tmp_path / run_dir(name, SEED)
        save_checkpoint(build_classifier(), out / "best.safetensors", dict(val_acc=val_acc, epoch=2))
        pd.DataFrame(dict(epoch=[1, 2], val_acc=[50.0, val_acc], real_val_wst=[99.0, wst])).to_csv(
            out / "history.csv", index=False)
    assert chosen_variant(tmp_path, "jtt", SEED) == "jtt-T1_up20"  # not the most accurate: the fairest

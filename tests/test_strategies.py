"""The strategy registry: what each strategy starts from, trains on and may change; reuse; clear errors."""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch

from aimfair.classifier.models import build_classifier, load_checkpoint, save_checkpoint
from aimfair.config import parse_params
from aimfair.core import paths
from aimfair.core.errors import AimfairError
from aimfair.data.loading import ImageSet
from aimfair.evaluation.evaluate import _family_rows, shown_names
from aimfair.pipeline.table4 import strategies_to_train
from aimfair.selective.masks import Mask, save_mask
from aimfair.strategies.base import Setting, Strategy
from aimfair.strategies.registry import (
    FAMILIES,
    STRATEGIES,
    TABLE3,
    checkpoint_path,
    chosen_variant,
    expand,
    get_strategy,
    register,
    run_dir,
)
from aimfair.strategies.runner import _code_hash, deal, run_all, run_strategy

CPU = torch.device("cpu")
SEED = 1
MASKED = ["layer3.0.conv1.weight", "layer4.1.bn2.weight", "layer4.1.bn2.bias", "fc.weight", "fc.bias"]


def _images(n: int, seed: int, prefix: str) -> ImageSet:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    pixels = np.clip(np.where(y[:, None, None, None] == 1, 170, 80) + rng.normal(0, 30, (n, 3, 16, 16)),
                     0, 255).astype(np.uint8)
    return ImageSet(pixels=pixels, y=y, s=(np.arange(n) // 2) % 2, image_ids=[f"{prefix}{i}.png" for i in range(n)])


def _params(**finetune):
    return parse_params({"seeds": [SEED], "pretrain": {"input_size": 16, "epochs": 1, "batch_size": 16, "milestones": []},
                         "finetune": dict(dict(epochs=1, batch_size=16, lr=0.01), **finetune)})


def _setting(root, params=None) -> Setting:
    setting = Setting(params or _params(), root, SEED, CPU, progress=False)
    # the image sets a real run loads from the pipeline's files, given directly (cached_property slots)
    setting.__dict__.update(real_train=_images(32, 0, "real"), val=_images(16, 1, "val"),
                            synthetic={"balanced": _images(24, 2, "syn"), "biased": _images(16, 3, "syn_b")},
                            repaired=_images(8, 4, "rep"))
    return setting


@pytest.fixture
def root(tmp_path):
    torch.manual_seed(0)
    biased = build_classifier()
    save_checkpoint(biased, tmp_path / paths.pretrain_dir(SEED) / "best.safetensors",
                    dict(arch="resnet18", input_size=16, seed=SEED))
    shapes = {n: list(p.shape) for n, p in biased.named_parameters()}
    save_mask(Mask(arch="resnet18", tensors=MASKED, shapes=shapes, top_k=55), tmp_path / paths.mask_dir(SEED))
    return tmp_path


def _weights(path):
    model = build_classifier()
    load_checkpoint(model, path)
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _changed(root, name):
    before = _weights(root / paths.pretrain_dir(SEED) / "best.safetensors")
    after = _weights(checkpoint_path(root, name, SEED))
    return [n for n in before if not torch.equal(before[n], after[n])]


def test_the_registry_holds_the_papers_table_3():
    assert TABLE3 == ("baseline", "synthetic_only", "supplementation", "repairing", "linear_probe", "full_ft",
                      "aimfair")
    assert all(STRATEGIES[name].summary for name in TABLE3)


def test_the_names_params_may_hold_are_the_registrys():
    """config.py holds the names (reading params imports no torch); the registry holds the classes."""
    from aimfair import config
    from aimfair.strategies import table3, table4

    assert config.TABLE3_STRATEGIES == TABLE3 == tuple(cls.name for cls in table3.TABLE3)
    assert config.TABLE4_STRATEGIES == tuple(cls.name for cls in table4.STRATEGIES)
    assert config.TABLE4_FAMILIES == {f.name: f.variants for f in table4.FAMILIES} == {
        name: f.variants for name, f in FAMILIES.items() if name != "jtt"}  # jtt's come from params (stage robust)
    assert all(name in STRATEGIES for name in config.TABLE3_STRATEGIES + config.TABLE4_STRATEGIES)


def test_an_unknown_strategy_is_a_clear_error():
    with pytest.raises(AimfairError, match=r"finetune.strategies is 'aimfiar' \(did you mean aimfair\?\); choose one of"):
        _params(strategies=["baseline", "aimfiar"])
    with pytest.raises(AimfairError, match=r"unknown strategy 'magic': choose from baseline, synthetic_only"):
        get_strategy("magic")


def test_the_baseline_is_the_biased_model_itself(root):
    result = run_strategy("baseline", _setting(root))
    assert result.checkpoint == root / paths.pretrain_dir(SEED) / "best.safetensors"
    assert not (root / paths.FINETUNE).exists()


def test_linear_probing_moves_only_the_final_layer(root):
    result = run_strategy("linear_probe", _setting(root))
    assert _changed(root, "linear_probe") == ["fc.weight", "fc.bias"]
    assert (result.trainable_tensors, result.trainable_entries) == (2, 513)


def test_aimfair_moves_only_the_masked_tensors_and_full_fine_tuning_moves_all(root):
    setting = _setting(root)
    aimfair = run_strategy("aimfair", setting)
    assert _changed(root, "aimfair") == MASKED
    assert aimfair.trainable_tensors == len(MASKED)
    full = run_strategy("full_ft", setting)
    assert len(_changed(root, "full_ft")) == 62 and full.trainable_tensors == 62


def test_strategies_from_scratch_start_from_the_biased_models_initial_weights_and_train_on_their_set(root, monkeypatch):
    import aimfair.strategies.runner as strategies

    seen = {}

    def fake_fit(model, train, val, cfg, out, device, meta, progress, entry_masks, fingerprint, monitors, select, objective):
        seen[meta["strategy"]] = (next(model.parameters()).detach().clone(), train, cfg)
        save_checkpoint(model, out / "best.safetensors", meta)

    monkeypatch.setattr(strategies, "fit", fake_fit)
    setting = _setting(root)
    for name in ("synthetic_only", "supplementation", "repairing"):
        run_strategy(name, setting)
    torch.manual_seed(SEED)  # the pretrain stage seeds with the seed, then builds the model
    initial = next(build_classifier().parameters()).detach()
    assert all(torch.equal(weights, initial) for weights, _, _ in seen.values())
    sizes = {name: len(train) for name, (_, train, _) in seen.items()}
    assert sizes == {"synthetic_only": 24, "supplementation": 32 + 24, "repairing": 32 + 8}
    assert seen["supplementation"][1].image_ids[:1] == ["real0.png"] and seen["repairing"][1].image_ids[-1] == "rep7.png"
    # a new model trains with the pre-training settings, a fine-tuned one with the fine-tuning settings
    assert seen["synthetic_only"][2].epochs == 1 and seen["synthetic_only"][2].lr == setting.params.pretrain.lr
    assert setting.params.finetune.train_config(setting.params.pretrain, SEED).lr == 0.01


def test_with_a_step_budget_new_models_make_the_biased_models_number_of_steps(root, monkeypatch):
    import aimfair.strategies.runner as strategies

    seen = {}
    monkeypatch.setattr(strategies, "fit", lambda model, train, val, cfg, out, *args, **kwargs: seen.update(
        {out.parent.name: cfg}) or save_checkpoint(model, out / "best.safetensors", {}))
    params = parse_params({"seeds": [SEED], "pretrain": {"input_size": 16, "epochs": 4, "batch_size": 8,
                                                         "milestones": [2]},
                           "finetune": {"epochs": 3, "new_model_budget": "steps"}})
    setting = _setting(root, params)  # 32 real images: the biased model made 4 epochs x 4 steps
    for name in ("synthetic_only", "supplementation", "repairing", "full_ft"):
        run_strategy(name, setting)
    epochs = {name: (cfg.epochs, cfg.milestones) for name, cfg in seen.items()}
    assert epochs == {"synthetic_only": (5, [3]),  # 24 images: 5 epochs x 3 steps
                      "supplementation": (2, [1]),  # 56 images: 2 x 7
                      "repairing": (3, [2]),  # 40 images: 3 x 5
                      "full_ft": (3, [])}  # a fine-tuning run keeps section finetune's epochs


def test_a_finished_run_is_reused_and_a_changed_setting_retrains(root):
    first = run_strategy("linear_probe", _setting(root))
    assert not first.skipped
    record = json.loads((root / run_dir("linear_probe", SEED) / "run.json").read_text())
    assert record["strategy"] == "linear_probe" and record["config"]["lr"] == 0.01
    again = run_strategy("linear_probe", _setting(root))
    assert again.skipped and again.checkpoint == first.checkpoint
    changed = run_strategy("linear_probe", _setting(root, _params(lr=0.02)))
    assert not changed.skipped
    regenerated = _setting(root, _params(lr=0.02))  # the pool regenerated: same file names, other pixels
    balanced = regenerated.synthetic["balanced"]
    regenerated.synthetic["balanced"] = ImageSet(255 - balanced.pixels, balanced.y, balanced.s, balanced.image_ids)
    assert not run_strategy("linear_probe", regenerated).skipped


@pytest.mark.parametrize("damage", ["truncated", "replaced", "deleted sidecar", "garbled record"])
def test_a_finished_run_whose_files_changed_is_trained_again_not_reused(root, capsys, damage):
    first = run_strategy("linear_probe", _setting(root))
    out = first.checkpoint.parent
    record = json.loads((out / "run.json").read_text())
    assert record["outputs"]["best.safetensors"]["size"] == first.checkpoint.stat().st_size
    if damage == "truncated":
        first.checkpoint.write_bytes(first.checkpoint.read_bytes()[:1000])
    elif damage == "replaced":
        save_checkpoint(build_classifier(), first.checkpoint, {})
    elif damage == "deleted sidecar":
        (out / "best.json").unlink()
    else:
        (out / "run.json").write_text('{"strategy": "linear_pr')
    capsys.readouterr()
    again = run_strategy("linear_probe", _setting(root))
    assert not again.skipped
    if damage != "garbled record":
        assert "is not the one its run record names" in capsys.readouterr().err
    assert run_strategy("linear_probe", _setting(root)).skipped  # whole again
    load_checkpoint(build_classifier(), again.checkpoint)


def test_a_killed_run_does_not_resume_from_another_start(root):
    out = root / run_dir("full_ft", SEED)
    out.mkdir(parents=True)
    (out / "previous_identity.json").write_text('{"start": "another biased model"}')
    (out / "resume.pt").write_bytes(b"the state of a run from another biased model")
    result = run_strategy("full_ft", _setting(root))  # would fail to load that resume state
    assert not result.skipped and not (out / "resume.pt").exists() and (out / "run.json").exists()
    assert not (out / "previous_identity.json").exists()


def test_run_all_covers_every_strategy_and_seed(root, monkeypatch):
    import aimfair.strategies.runner as strategies

    monkeypatch.setattr(strategies, "Setting", lambda params, root, seed, device, progress: _setting(root, params))
    runs = run_all(_params(strategies=["baseline", "linear_probe", "aimfair"]), root, CPU, progress=False)
    assert list(runs["strategy"]) == ["baseline", "linear_probe", "aimfair"] and set(runs["seed"]) == {SEED}
    assert runs.loc[runs["strategy"] == "aimfair", "trainable_tensors"].item() == len(MASKED)


def test_a_nan_loss_names_the_run_and_keeps_nothing_half_done(root):
    with pytest.raises(AimfairError, match=r"strategy full_ft, seed 1: loss became (nan|inf) .*lower the learning rate"):
        run_strategy("full_ft", _setting(root, _params(lr=1e12, epochs=2)))
    assert not (root / run_dir("full_ft", SEED) / "run.json").exists()  # not marked done


def test_a_missing_mask_or_biased_model_is_a_clear_error(tmp_path):
    with pytest.raises(AimfairError, match="no biased model for seed 1 .*run the pretrain stage"):
        run_strategy("full_ft", _setting(tmp_path))
    torch.manual_seed(0)
    save_checkpoint(build_classifier(), tmp_path / paths.pretrain_dir(SEED) / "best.safetensors",
                    dict(arch="resnet18", input_size=16))
    with pytest.raises(AimfairError, match="mask.json does not exist: run the mask stage"):
        run_strategy("aimfair", _setting(tmp_path))


# ---------------------------------------------------------------- Table 4: partial fine-tuning baselines


def _trainable_after_restrict(name: str, setting) -> list[str]:
    model = build_classifier()
    get_strategy(name).restrict(model, setting)
    return [n for n, p in model.named_parameters() if p.requires_grad]


def test_table_4_registers_its_strategies_and_families_beside_table_3():
    assert list(FAMILIES)[:3] == ["random_selection", "subtuning_update_one", "subtuning_freeze_one"]
    assert set(FAMILIES) <= {"random_selection", "subtuning_update_one", "subtuning_freeze_one", "jtt"}  # + stage robust's
    assert FAMILIES["subtuning_freeze_one"].variants == tuple(f"subtuning_freeze_one-layer{i}" for i in range(1, 5))
    assert FAMILIES["random_selection"].report_mean and len(FAMILIES["random_selection"].variants) == 3
    assert expand(["aimfair", "subtuning_update_one"]) == ["aimfair"] + list(FAMILIES["subtuning_update_one"].variants)
    assert all(STRATEGIES[n].summary for n in expand(list(FAMILIES)) + ["aimfair_cosine"])


def test_random_selection_draws_as_many_tensors_as_the_mask_the_same_on_every_run(root):
    setting = _setting(root)
    draws = [_trainable_after_restrict(name, setting) for name in FAMILIES["random_selection"].variants]
    assert all(len(d) == len(MASKED) for d in draws)
    assert len({tuple(d) for d in draws}) == 3  # a different draw per variant
    assert _trainable_after_restrict(FAMILIES["random_selection"].variants[0], setting) == draws[0]


def test_subtuning_updates_one_block_with_the_final_layer_or_freezes_one_block(root):
    setting = _setting(root)
    names = [n for n, _ in build_classifier().named_parameters()]
    layer2 = [n for n in names if n.startswith("layer2.")]
    assert _trainable_after_restrict("subtuning_update_one-layer2", setting) == layer2 + ["fc.weight", "fc.bias"]
    assert _trainable_after_restrict("subtuning_freeze_one-layer2", setting) == [n for n in names if n not in layer2]
    # a real run: frozen blocks keep their weights; the run lives apart from stage finetune's
    result = run_strategy("subtuning_freeze_one-layer1", setting)
    assert paths.PARTIAL in result.checkpoint.relative_to(root).parents
    changed = _changed(root, "subtuning_freeze_one-layer1")
    assert changed and not any(n.startswith("layer1.") for n in changed)


def test_aimfair_cosine_trains_the_cosine_mask_and_says_when_it_is_missing(root):
    setting = _setting(root)
    with pytest.raises(AimfairError, match=r"cosine/mask.json does not exist: run the mask stage first"):
        _trainable_after_restrict("aimfair_cosine", setting)
    shapes = {n: list(p.shape) for n, p in build_classifier().named_parameters()}
    cosine = ["layer1.0.conv1.weight", "fc.bias"]
    save_mask(Mask(arch="resnet18", tensors=cosine, shapes=shapes, rule="cosine", top_k=55),
              root / paths.cosine_mask_dir(SEED))
    assert _trainable_after_restrict("aimfair_cosine", setting) == cosine


def test_a_family_is_its_variant_with_the_best_validation_accuracy(root):
    variants = FAMILIES["subtuning_update_one"].variants
    for name, val_acc in zip(variants, [71.0, 80.5, 80.5, 64.0]):  # layer2 and layer3 tie: the first wins
        save_checkpoint(build_classifier(), root / run_dir(name, SEED) / "best.safetensors",
                        dict(val_acc=val_acc, input_size=16))
    assert chosen_variant(root, "subtuning_update_one", SEED) == "subtuning_update_one-layer2"
    assert checkpoint_path(root, "subtuning_update_one", SEED) == \
        root / run_dir("subtuning_update_one-layer2", SEED) / "best.safetensors"
    with pytest.raises(AimfairError, match=r"no model of strategy subtuning_freeze_one-layer1 for seed 1"):
        chosen_variant(root, "subtuning_freeze_one", SEED)


def test_family_rows_pick_the_chosen_variant_and_average_the_draws(root):
    draws = FAMILIES["random_selection"].variants
    for name, val_acc in zip(draws, [60.0, 90.0, 75.0]):
        save_checkpoint(build_classifier(), root / run_dir(name, SEED) / "best.safetensors",
                        dict(val_acc=val_acc, input_size=16))
    per_seed = pd.DataFrame([dict(strategy=n, seed=SEED, ACC=acc, WST=wst)
                             for n, acc, wst in zip(draws, [80.0, 85.0, 90.0], [50.0, 70.0, 60.0])])
    rows = _family_rows(per_seed, FAMILIES["random_selection"], root, ["ACC", "WST"])
    records = rows.to_dict("records")
    assert records[0] == dict(ACC=85.0, WST=70.0, strategy="random_selection", seed=SEED, variant=draws[1])
    assert {k: records[1][k] for k in ("ACC", "WST", "strategy", "seed")} == \
        dict(ACC=85.0, WST=60.0, strategy="random_selection_mean", seed=SEED)
    assert shown_names(["baseline", "random_selection", "aimfair"]) == [
        "baseline", "random_selection", "random_selection_mean", "aimfair"]


def test_adding_strategies_changes_no_existing_runs_code_hash():
    before = {name: _code_hash(get_strategy(name)) for name in TABLE3}

    @register
    class Extra(Strategy):
        name, summary = "extra_for_this_test", "a strategy registered after the others"

    try:
        assert {name: _code_hash(get_strategy(name)) for name in TABLE3} == before
    finally:
        del STRATEGIES["extra_for_this_test"]
    variants = [v for f in FAMILIES.values() for v in f.variants]
    hashes = [_code_hash(get_strategy(v)) for v in variants]
    assert len(set(hashes)) == len(variants)  # each draw and block is its own run
    assert hashes == [_code_hash(get_strategy(v)) for v in variants]  # and the same every time


@pytest.mark.parametrize("processes", [1, 2, 3, 5])
def test_dealing_gives_every_run_to_exactly_one_process(processes):
    runs = [(seed, name) for seed in (100, 200, 300) for name in TABLE3]
    shares = [deal(runs, rank, processes) for rank in range(processes)]
    assert sorted(run for share in shares for run in share) == sorted(runs)
    assert max(map(len, shares)) - min(map(len, shares)) <= 1  # balanced


def test_table_4_names_are_checked_where_they_are_set():
    with pytest.raises(AimfairError, match=r"finetune.strategies is 'random_selection'; choose one of: baseline"):
        _params(strategies=["baseline", "random_selection"])
    with pytest.raises(AimfairError, match=r"unknown strategy 'random_selection' \(a family: run its variants "
                                           r"random_selection-draw_1"):
        get_strategy("random_selection")
    with pytest.raises(AimfairError, match=r"table4.strategies is 'subtuning_update'.*did you mean"):
        parse_params({"table4": {"strategies": ["subtuning_update"]}})
    params = parse_params({"finetune": {"strategies": ["baseline", "aimfair"]},
                           "table4": {"strategies": ["baseline", "aimfair", "aimfair_cosine", "random_selection"]}})
    assert strategies_to_train(params) == ["aimfair_cosine", "random_selection"]
    with pytest.raises(AimfairError, match=r"table4.strategies names 'linear_probe', a strategy of stage finetune "
                                           r"that finetune.strategies does not run: add it there"):
        strategies_to_train(dataclasses.replace(params, table4=dataclasses.replace(
            params.table4, strategies=["baseline", "linear_probe"])))


def test_the_selection_rule_picks_the_epoch_and_another_rule_trains_again(root):
    from aimfair.classifier.models import read_sidecar

    by_accuracy = run_strategy("full_ft", _setting(root))
    history = pd.read_csv(by_accuracy.checkpoint.parent / "history.csv")
    assert {"real_val_wst", "real_val_acc_0_0"} <= set(history.columns)  # the real validation set, per group
    assert "synthetic_val_wst" not in history  # no synthetic validation set unless asked
    oracle = _setting(root, _params(selection="real_val_worst"))
    again = run_strategy("full_ft", oracle)
    assert not again.skipped  # a run kept by another rule is not this one's
    sidecar = read_sidecar(again.checkpoint)
    history = pd.read_csv(again.checkpoint.parent / "history.csv")
    assert sidecar["selected_by"] == "real_val_wst"
    assert sidecar["selected_value"] == history["real_val_wst"].max()
    assert sidecar["epoch"] == int(history.loc[history["real_val_wst"].idxmax(), "epoch"])


def test_the_synthetic_validation_set_is_scored_when_asked_for(root):
    params = parse_params({"seeds": [SEED],
                           "pretrain": {"input_size": 16, "epochs": 1, "batch_size": 16, "milestones": []},
                           "finetune": {"epochs": 2, "batch_size": 16, "lr": 0.01, "selection": "synthetic_val_worst"},
                           "synthetic": {"val_per_group": 4}})
    setting = _setting(root, params)
    setting.__dict__["synthetic"] = dict(setting.synthetic, validation=_images(16, 5, "syn_v"))
    result = run_strategy("full_ft", setting)
    history = pd.read_csv(result.checkpoint.parent / "history.csv")
    assert history["synthetic_val_wst"].notna().all() and history["real_val_wst"].notna().all()

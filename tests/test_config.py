"""params.yaml validation: unknown keys and wrong types are one-line errors that name the key."""

import dataclasses
from pathlib import Path

import pytest
import yaml

from aimfair.cli import main
from aimfair.config import (
    OPTIONAL_SECTIONS,
    DataParams,
    PretrainParams,
    TrainConfig,
    WorldConfig,
    load_params,
    parse_params,
    to_dict,
)
from aimfair.core.errors import AimfairError

ROOT = Path(__file__).resolve().parents[1]


def _plain(value):
    """Tuples as lists, recursively, to compare with what YAML reads."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def test_the_committed_params_file_is_valid_and_read_in_full():
    params = load_params(ROOT / "params.yaml")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    as_dict = _plain(to_dict(params))
    # every value written in the file arrives, section by section (nested tinyfaces included)
    for section, values in raw.items():
        if isinstance(values, dict):
            for key, value in values.items():
                if isinstance(value, dict):
                    for sub, subvalue in value.items():
                        assert as_dict[section][key][sub] == subvalue, f"{section}.{key}.{sub}"
                else:
                    assert as_dict[section][key] == value, f"{section}.{key}"
        else:
            assert as_dict[section] == values, section
    assert isinstance(params.data.tinyfaces, WorldConfig)
    assert isinstance(params.data.tinyfaces.smile_amplitude, tuple)
    assert params.pretrain.train_config(params.seeds[0]).seed == params.seeds[0]
    assert params.generator.training().steps == params.generator.steps
    assert params.generator.model_config().resolution == params.generator.resolution


def test_the_pretrain_section_becomes_the_training_config():
    p = parse_params({"pretrain": {"epochs": 4, "lr": 0.5, "milestones": [1, 3], "crop_scale": [0.2, 0.9],
                                   "input_size": 48, "batch_size": 8, "momentum": 0.5, "weight_decay": 0,
                                   "gamma": 0.5}}).pretrain
    cfg = p.train_config(seed=9)
    assert cfg == TrainConfig(epochs=4, batch_size=8, lr=0.5, momentum=0.5, weight_decay=0.0, milestones=[1, 3],
                              gamma=0.5, input_size=48, crop_scale=(0.2, 0.9), seed=9)
    assert cfg.milestones is not p.milestones  # the training config owns its list


def test_a_step_budget_scales_a_new_models_epochs_and_milestones_to_its_set():
    p = parse_params({"pretrain": {"epochs": 12, "milestones": [8]}, "finetune": {"new_model_budget": "steps"}})
    configs = {n: p.finetune.new_model_config(p.pretrain, 1, 3000, n) for n in (2000, 3000, 5000, 5400, 100000)}
    assert {n: (c.epochs, c.milestones) for n, c in configs.items()} == {
        2000: (18, [12]), 3000: (12, [8]), 5000: (7, [5]), 5400: (7, [4]), 100000: (1, [])}
    for n in (2000, 5000, 5400):  # within one epoch of the biased model's 12 x 24 steps of 128 images
        assert abs(configs[n].epochs * -(-n // 128) - 12 * 24) <= -(-n // 128)
    assert all(c.lr == p.pretrain.lr and c.seed == 1 for c in configs.values())
    by_epochs = parse_params({"pretrain": {"epochs": 12, "milestones": [8]}})
    assert by_epochs.finetune.new_model_config(by_epochs.pretrain, 1, 3000, 5000) == by_epochs.pretrain.train_config(1)


def test_precision_auto_is_resolved_for_the_device_before_a_run(monkeypatch):
    from aimfair.data import loading
    p = parse_params({"pretrain": {"precision": "auto", "device": "cpu"}}).pretrain
    monkeypatch.setattr(loading.torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert p.train_config(seed=1).precision == "bfloat16"
    assert parse_params({}).finetune.train_config(p, seed=1).precision == "bfloat16"  # fine-tuning follows
    monkeypatch.setattr(loading.torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert p.train_config(seed=1).precision == "float32"
    assert parse_params({"pretrain": {"precision": "bfloat16"}}).pretrain.train_config(1).precision == "bfloat16"
    assert PretrainParams().precision == "float32"  # the paper's settings train in full precision


def test_missing_keys_take_the_defaults():
    params = parse_params({"pretrain": {"epochs": 3}})
    assert params.pretrain == dataclasses.replace(PretrainParams(), epochs=3)
    assert params.data == DataParams() and params.data.tinyfaces == WorldConfig()
    assert params.seeds == [100, 200, 300]
    assert parse_params({"data": None}).data == DataParams()  # an empty section is all defaults
    assert parse_params({"data": {"tinyfaces": {"seed": 5}}}).data.tinyfaces == WorldConfig(seed=5)


def test_an_empty_or_partial_file_is_refused_naming_what_it_lacks(tmp_path):
    """The code's defaults are the paper's, the shipped file's are the built-in world's: a file must say which."""
    (tmp_path / "params.yaml").write_text("# nothing set\n")
    with pytest.raises(AimfairError, match=r"params\.yaml is empty: start from the repository's params\.yaml"):
        load_params(tmp_path / "params.yaml")
    shipped = yaml.safe_load((ROOT / "params.yaml").read_text())
    del shipped["finetune"], shipped["repair"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(shipped))
    with pytest.raises(AimfairError, match=r"lacks the section\(s\) finetune, repair: copy them"):
        load_params(tmp_path / "params.yaml")
    del shipped["table4"], shipped["ablations"]  # the opt-in sections may be left out
    shipped["finetune"], shipped["repair"] = {}, {}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(shipped))
    assert load_params(tmp_path / "params.yaml").table4 == load_params(ROOT / "params.yaml").table4


def test_the_optional_sections_default_to_the_shipped_file():
    shipped = load_params(ROOT / "params.yaml")
    defaults = parse_params({})
    for section in OPTIONAL_SECTIONS:
        assert getattr(defaults, section) == getattr(shipped, section), section


def test_a_yaml_mistake_names_its_line_and_column(tmp_path):
    (tmp_path / "params.yaml").write_text("data:\n  n_train: 3\n   bad: 1\n")
    with pytest.raises(AimfairError, match=r"is not valid YAML at line 3, column 7: mapping values are not allowed"):
        load_params(tmp_path / "params.yaml")


@pytest.mark.parametrize("data, key", [({"seeds": [-5]}, "seeds holds -5"), ({"seeds": [2**40]}, "seeds holds"),
                                       ({"data": {"split_seed": -1}}, "data.split_seed holds -1"),
                                       ({"generate": {"seed": 2**32}}, "generate.seed holds"),
                                       ({"data": {"tinyfaces": {"seed": -2}}}, "data.tinyfaces.seed holds -2")])
def test_seeds_outside_numpys_range_are_refused(data, key):
    with pytest.raises(AimfairError, match=rf"{key}.*: a seed must be an integer from 0 to 2\*\*32 - 1"):
        parse_params(data)


def test_a_bias_degree_is_checked_when_params_load():
    with pytest.raises(AimfairError, match=r"data\.bias_degree: bias degree 'abc' is not a positive fraction"):
        parse_params({"data": {"bias_degree": "abc"}})
    with pytest.raises(AimfairError, match=r"data\.bias_degree: bias degree '9' is above 1: .* 1/9"):
        parse_params({"data": {"bias_degree": "9"}})


def test_values_are_converted_to_the_schema_types():
    params = parse_params({"pretrain": {"lr": 1, "crop_scale": [1, 1]}, "data": {"bias_degree": 1}})
    assert params.pretrain.lr == 1.0 and isinstance(params.pretrain.lr, float)
    assert params.pretrain.crop_scale == (1.0, 1.0) and isinstance(params.pretrain.crop_scale, tuple)
    assert params.data.bias_degree == "1" and isinstance(params.data.bias_degree, str)
    assert parse_params({"data": {"tinyfaces": {"partition": [0.6, 0.2, 0.2]}}}).data.tinyfaces.partition == \
        (0.6, 0.2, 0.2)


@pytest.mark.parametrize("data, key, hint", [
    ({"sedes": [1]}, "sedes", "seeds"),
    ({"data": {"n_trian": 5}}, "data.n_trian", "n_train"),
    ({"pretrain": {"learning_rat": 5}}, "pretrain.learning_rat", None),
    ({"pretrain": {"epoch": 5}}, "pretrain.epoch", "epochs"),
    ({"data": {"tinyfaces": {"smile_amp": [1, 2]}}}, "data.tinyfaces.smile_amp", "smile_amplitude"),
])
def test_unknown_keys_are_named_with_a_suggestion(data, key, hint):
    with pytest.raises(AimfairError, match=f"unknown key {key} in params") as error:
        parse_params(data)
    if hint:
        assert f"did you mean {hint}?" in str(error.value)
    assert "valid keys here:" in str(error.value)


@pytest.mark.parametrize("data, key", [
    ({"data": {"n_train": "4k"}}, "data.n_train must be an integer, got '4k'"),
    ({"data": {"n_train": 4000.5}}, "data.n_train must be an integer"),
    ({"pretrain": {"lr": "fast"}}, "pretrain.lr must be a number, got 'fast'"),
    ({"pretrain": {"lr": True}}, "pretrain.lr must be a number"),
    ({"pretrain": {"milestones": 8}}, "pretrain.milestones must be a list of integers, got 8"),
    ({"pretrain": {"milestones": [8.5]}}, r"pretrain.milestones\[0\] must be an integer"),
    ({"pretrain": {"epochs": True}}, "pretrain.epochs must be an integer, got True"),
    ({"data": {"tinyfaces": {"n_images": False}}}, "data.tinyfaces.n_images must be an integer"),
    ({"pretrain": {"crop_scale": [0.5]}}, "pretrain.crop_scale must be a list of numbers of length 2"),
    ({"pretrain": {"crop_scale": [0.1, 0.5, 1.0]}}, "pretrain.crop_scale must be a list of numbers of length 2"),
    ({"pretrain": {"crop_scale": 0.5}}, "pretrain.crop_scale must be a list of numbers of length 2"),
    ({"data": {"tinyfaces": {"partition": [0.7, 0.3]}}}, "data.tinyfaces.partition must be a list of numbers of length 3"),
    ({"data": {"tinyfaces": {"smile_amplitude": [1, "x"]}}}, r"data.tinyfaces.smile_amplitude\[1\] must be a number"),
    ({"data": {"dataset": ["celeba"]}}, "data.dataset must be a string"),
    ({"data": {"dataset": True}}, "data.dataset must be a string"),
    ({"seeds": [1, "two"]}, r"seeds\[1\] must be an integer"),
    ({"seeds": 100}, "seeds must be a list of integers"),
    ({"data": 5}, "data must be a mapping"),
    ({"data": {"tinyfaces": "big"}}, "data.tinyfaces must be a mapping"),
])
def test_wrong_types_are_named(data, key):
    with pytest.raises(AimfairError, match=key):
        parse_params(data)


def test_bad_files(tmp_path):
    with pytest.raises(AimfairError, match=r"params file .*absent\.yaml does not exist"):
        load_params(tmp_path / "absent.yaml")
    (tmp_path / "broken.yaml").write_text("data: [unclosed\n")
    with pytest.raises(AimfairError, match=r"broken\.yaml is not valid YAML"):
        load_params(tmp_path / "broken.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(AimfairError, match=r"^the params file must be a mapping"):
        load_params(tmp_path / "list.yaml")


@pytest.mark.parametrize("content, message", [
    (yaml.safe_dump({"pretrain": {"lr": "fast"}}), "pretrain.lr must be a number"),
    (yaml.safe_dump({"data": {"tinyfaces": {"smile_amp": [1, 2]}}}), "unknown key data.tinyfaces.smile_amp"),
    ("data: [unclosed\n", "is not valid YAML"),
    (None, "does not exist"),
], ids=["wrong-type", "unknown-key", "invalid-yaml", "missing-file"])
def test_cli_reports_a_bad_params_file_in_one_line(tmp_path, capsys, content, message):
    path = tmp_path / "params.yaml"
    if content is not None:
        path.write_text(content)
    assert main(["data", "--params", str(path)]) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert err.startswith("aimfair: error: ") and message in err, err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err and captured.out == ""
    assert not (tmp_path / "work").exists()  # nothing was rendered


@pytest.mark.parametrize("data, message", [
    ({"data": {"dataset": "celebA"}}, r"data.dataset is 'celebA' \(did you mean celeba\?\)"),
    ({"data": {"bad_images": "ignore"}}, "data.bad_images is 'ignore'"),
    ({"data": {"n_train": 0}}, "data.n_train must be positive"),
    ({"pretrain": {"device": "gpu"}}, "pretrain.device must be auto, cpu, mps, cuda or cuda:N"),
    ({"pretrain": {"epochs": 0}}, "pretrain.epochs must be positive"),
    ({"pretrain": {"crop_scale": [1.5, 0.2]}}, "pretrain.crop_scale must be"),
    ({"pretrain": {"milestones": [8, 4]}}, "pretrain.milestones must be increasing"),
    ({"pretrain": {"pretrained": "imagenet21k"}}, "pretrain.pretrained is 'imagenet21k'"),
    ({"pretrain": {"precision": "fp16"}}, "pretrain.precision is 'fp16'"),
    ({"finetune": {"new_model_budget": "updates"}}, "finetune.new_model_budget is 'updates'"),
    ({"evaluate": {"split": "train"}}, "evaluate.split is 'train'"),
    ({"seeds": []}, "seeds must be a non-empty list"),
    ({"seeds": [1, 1]}, "seeds must be a non-empty list of distinct"),
    ({"data": {"tinyfaces": {"n_images": 3}}}, "data.tinyfaces: n_images must be at least 8"),
    ({"generator": {"resolution": 30}}, "generator.resolution must be a multiple of 4"),
    ({"generator": {"cond_dropout": 0}}, "generator.cond_dropout must be in"),
    ({"generator": {"batch_size": 100, "corpus_size": 50}}, "generator.batch_size must not exceed corpus_size"),
    ({"synthetic": {"biased_skew": "nine"}}, "synthetic.biased_skew: bias degree 'nine' is not a positive"),
    ({"synthetic": {"balanced_per_group": 0}}, "synthetic.balanced_per_group must be positive"),
    ({"generate": {"preset": "fastest"}}, r"generate.preset is 'fastest' \(did you mean fast\?\)"),
    ({"generate": {"guidance": 0.5}}, "generate.guidance must be 0 .* or at least 1"),
    ({"generate": {"device": "gpu"}}, "generate.device must be auto, cpu"),
    ({"fidelity": {"per_group": 5}}, "fidelity.per_group must be at least 20"),
])
def test_values_out_of_range_are_named(data, message):
    with pytest.raises(AimfairError, match=message):
        parse_params(data)


def test_numbers_that_yaml_reads_as_text_are_accepted():
    assert parse_params(yaml.safe_load("pretrain:\n  lr: 1e-3\n")).pretrain.lr == 0.001


def test_an_absent_cuda_device_is_a_clear_error(monkeypatch):
    import torch

    from aimfair.core.device import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(AimfairError, match="'cuda' is not available here.*device: auto or cpu"):
        resolve_device("cuda")
    assert resolve_device("auto").type in ("cpu", "mps")


def test_top_k_is_checked_against_the_architecture_when_params_load():
    with pytest.raises(AimfairError, match=r"selection\.top_k is 1000, more than the 62 parameter tensors of resnet18"):
        parse_params({"selection": {"top_k": 1000}})
    assert parse_params({"selection": {"top_k": 62}}).selection.top_k == 62


def test_resnet18_has_the_tensor_count_config_assumes():
    from aimfair.classifier.models import build_classifier
    from aimfair.config import RESNET18_TENSORS

    assert len(list(build_classifier("resnet18").named_parameters())) == RESNET18_TENSORS


def test_an_unknown_selection_rule_and_one_without_its_validation_set_are_refused():
    with pytest.raises(AimfairError, match="finetune.selection.*real_val_acc, synthetic_val_worst, real_val_worst"):
        parse_params({"finetune": {"selection": "val_loss"}})
    with pytest.raises(AimfairError, match="synthetic_val_worst, which needs a synthetic validation set: set "
                                           "synthetic.val_per_group"):
        parse_params({"finetune": {"selection": "synthetic_val_worst"}})
    assert parse_params({"finetune": {"selection": "synthetic_val_worst"},
                         "synthetic": {"val_per_group": 100}}).finetune.selection == "synthetic_val_worst"

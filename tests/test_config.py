"""params.yaml validation: unknown keys and wrong types are one-line errors that name the key."""

from pathlib import Path

import pytest
import yaml

from aimfair.cli import main
from aimfair.config import PretrainParams, load_params, parse_params
from aimfair.errors import AimfairError

ROOT = Path(__file__).resolve().parents[1]


def test_the_committed_params_file_is_valid():
    params = load_params(ROOT / "params.yaml")
    assert params.data.dataset == "tinyfaces" and params.seeds
    assert params.pretrain.train_config(params.seeds[0]).seed == params.seeds[0]


def test_missing_keys_take_the_defaults():
    params = parse_params({"pretrain": {"epochs": 3}})
    assert params.pretrain.epochs == 3 and params.pretrain.lr == PretrainParams().lr
    assert params.data.tinyfaces.n_images > 0


@pytest.mark.parametrize("data, key, hint", [
    ({"sedes": [1]}, "sedes", "seeds"),
    ({"data": {"n_trian": 5}}, "data.n_trian", "n_train"),
    ({"data": {"tinyfaces": {"smile_amp": [1, 2]}}}, "data.tinyfaces.smile_amp", "smile_amplitude"),
])
def test_unknown_keys_are_named_with_a_suggestion(data, key, hint):
    with pytest.raises(AimfairError, match=f"unknown key {key} .*did you mean {hint}"):
        parse_params(data)


@pytest.mark.parametrize("data, key", [
    ({"data": {"n_train": "4k"}}, "data.n_train must be an integer"),
    ({"pretrain": {"lr": "fast"}}, "pretrain.lr must be a number"),
    ({"pretrain": {"milestones": 8}}, "pretrain.milestones must be a list"),
    ({"pretrain": {"epochs": True}}, "pretrain.epochs must be an integer"),
    ({"pretrain": {"crop_scale": [0.5]}}, "pretrain.crop_scale must be a list of numbers of length 2"),
    ({"seeds": [1, "two"]}, r"seeds\[1\] must be an integer"),
    ({"data": 5}, "data must be a mapping"),
])
def test_wrong_types_are_named(data, key):
    with pytest.raises(AimfairError, match=key):
        parse_params(data)


def test_bad_files(tmp_path):
    with pytest.raises(AimfairError, match="does not exist"):
        load_params(tmp_path / "absent.yaml")
    (tmp_path / "broken.yaml").write_text("data: [unclosed\n")
    with pytest.raises(AimfairError, match="not valid YAML"):
        load_params(tmp_path / "broken.yaml")


def test_cli_reports_a_bad_params_file_in_one_line(tmp_path, capsys):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"pretrain": {"lr": "fast"}}))
    assert main(["data", "--params", str(tmp_path / "params.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("aimfair: error: pretrain.lr must be a number") and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err

"""The real-data CPU settings (settings/dvc.yaml) end to end at toy size, through `dvc repro` as a user runs it, in
a fresh clone: CelebA and UTKFace fixture files in their official formats (rendered faces standing in for the
photos), no Stable Diffusion. Each setting trains the built-in generator on its own dataset's images."""

import json
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.builders import run_ok, toy_settings_repo

pytestmark = pytest.mark.slow

SETTINGS = ["celeba_cpu", "utkface_cpu"]
TOY = {
    "seeds": [100],
    "data": {"n_train": 40, "bias_degree": "1/3"},
    "generator": {"pool_per_group": 16, "resolution": 16, "steps": 2, "warmup": 1, "batch_size": 8, "threads": 1},
    "synthetic": {"balanced_per_group": 4, "biased_size": 16},
    "generate": {"steps": 2, "batch_size": 8, "device": "cpu"},
    "fidelity": {"per_group": 20, "epochs": 1},
    "pretrain": {"input_size": 16, "epochs": 1, "milestones": [1], "batch_size": 16, "threads": 1, "device": "cpu"},
    "finetune": {"epochs": 1, "batch_size": 8},
    "repair": {"steps": 2},
}


@pytest.fixture(scope="module")
def settings_repo(tmp_path_factory) -> tuple[Path, dict]:
    if shutil.which("git") is None:
        pytest.skip("git is needed to make a repository copy")
    # 900 faces: enough left over beside the splits for a generator pool
    repo, env = toy_settings_repo(tmp_path_factory.mktemp("settings") / "aimfair", "settings", SETTINGS, TOY, 900)
    return repo, env


def test_check_finds_every_input_of_a_cpu_setting_in_place(settings_repo):
    repo, env = settings_repo
    for setting in SETTINGS:
        out = run_ok([sys.executable, "-m", "aimfair", "check"], repo / "settings" / setting, env).stdout
        assert out.startswith("ready:"), out


def test_dvc_repro_runs_both_cpu_settings_end_to_end_on_their_own_generators(settings_repo):
    repo, env = settings_repo
    result = run_ok([sys.executable, "-m", "dvc", "repro", "settings/dvc.yaml"], repo, env)
    for setting in SETTINGS:
        for stage in ("data", "prompts", "generator", "generator_samples", "generate", "repair", "mask", "finetune",
                      "evaluate"):
            assert f"Running stage 'settings/dvc.yaml:{stage}@{setting}'" in result.stdout
    for setting, dataset in (("celeba_cpu", "celeba"), ("utkface_cpu", "utkface")):
        folder = repo / "settings" / setting
        meta = json.loads((folder / "work" / "generator" / "model" / "config.json").read_text())
        assert meta["dataset"] == dataset and meta["corpus"] == "dataset"
        manifest = pd.read_csv(folder / "work" / "pool" / "manifest.csv")
        assert manifest["model"].str.contains("builtin").all() and len(manifest) == 20
        metrics = json.loads((folder / "reports" / "metrics.json").read_text())
        assert "aimfair" in metrics and "prompt_fidelity" in metrics
        table = (folder / "reports" / "table.md").read_text()
        # a 2-step generator draws noise: the report must say so at its top, not pass it off as a result
        assert table.startswith("> **WARNING: PROMPT FIDELITY BELOW 80 %"), table[:300]
        assert (folder / "reports" / "figures" / "generator" / "real_vs_generated.png").exists()
    assert "PROMPT FIDELITY BELOW 80 %" in result.stderr + result.stdout  # on the console, where people look
    assert not (repo / "work").exists()  # nothing leaks into the default pipeline's folders
    status = run_ok([sys.executable, "-m", "dvc", "status", "settings/dvc.yaml"], repo, env).stdout
    assert "changed" not in status and "modified" not in status, status

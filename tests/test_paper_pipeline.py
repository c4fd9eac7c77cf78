"""The paper-settings pipeline (paper/dvc.yaml) end to end on the CPU at toy size, through `dvc repro` as a user
runs it, in a fresh clone: CelebA and UTKFace fixture files in their official formats made here (rendered faces
under CelebA's file layout, and the same faces renamed to UTKFace's age_gender_race_datetime.jpg.chip.jpg), a
tiny random Stable Diffusion folder where the real weights go, and stand-in ImageNet weights in a torch cache."""

import json
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from torchvision.models import resnet18

from aimfair.classifier.models import imagenet_weights_path
from tests.builders import run_ok, save_tiny_sd, toy_settings_repo

pytestmark = pytest.mark.slow

SETTINGS = ["celeba_smiling_male", "utkface_female_white"]  # one per dataset format
TOY = {
    "seeds": [100],
    "data": {"n_train": 40, "bias_degree": "1/3"},
    "synthetic": {"balanced_per_group": 4, "biased_size": 16},
    "generate": {"steps": 2, "resolution": 16, "batch_size": 8, "device": "cpu"},
    "fidelity": {"per_group": 20, "epochs": 1},
    "pretrain": {"input_size": 16, "epochs": 1, "milestones": [1], "batch_size": 16, "threads": 1, "device": "cpu"},
    "finetune": {"epochs": 1, "batch_size": 8},
    "repair": {"steps": 2},
}


@pytest.fixture(scope="module")
def paper_repo(tmp_path_factory) -> tuple[Path, dict]:
    if shutil.which("git") is None:
        pytest.skip("git is needed to make a repository copy")
    repo, env = toy_settings_repo(tmp_path_factory.mktemp("paper") / "aimfair", "paper", SETTINGS, TOY)
    save_tiny_sd(repo / "models" / "stable-diffusion-2-1-base")
    env["TORCH_HOME"] = str(repo.parent / "torch")  # stand-in ImageNet weights, where torchvision keeps them
    weights = Path(env["TORCH_HOME"]) / "hub" / imagenet_weights_path().relative_to(torch.hub.get_dir())
    weights.parent.mkdir(parents=True)
    torch.save(resnet18().state_dict(), weights)
    return repo, env


def test_check_finds_every_input_of_a_setting_in_place(paper_repo):
    repo, env = paper_repo
    for setting in SETTINGS:
        out = run_ok([sys.executable, "-m", "aimfair", "check"], repo / "paper" / setting, env).stdout
        assert out.startswith("ready:"), out


def test_dvc_repro_runs_the_paper_settings_end_to_end(paper_repo):
    repo, env = paper_repo
    out = run_ok([sys.executable, "-m", "dvc", "repro", "paper/dvc.yaml"], repo, env).stdout
    for setting in SETTINGS:
        for stage in ("data", "prompts", "generate", "repair", "mask", "finetune", "evaluate"):
            assert f"Running stage 'paper/dvc.yaml:{stage}@{setting}'" in out
        assert f"Running stage 'paper/dvc.yaml:pretrain@{setting}-100'" in out
    expected = {"celeba_smiling_male": "celeba Smiling/Male bias 1/3", "utkface_female_white": "utkface Female/White bias 1/3"}
    for setting, name in expected.items():
        folder = repo / "paper" / setting
        metrics = json.loads((folder / "reports" / "metrics.json").read_text())
        assert set(metrics.pop("prompt_fidelity")) >= {"lowest_both", "threshold", "below_threshold", "warning"}
        assert list(metrics) == ["baseline", "synthetic_only", "supplementation", "repairing", "linear_probe",
                                 "full_ft", "aimfair"]
        assert all(m["setting"] == name and m["n_seeds"] == 1 for m in metrics.values())
        # the pool came from the Stable Diffusion folder, at the asked size, and the biased model from ImageNet's
        manifest = pd.read_csv(folder / "work" / "pool" / "manifest.csv")
        assert manifest["model"].str.contains("stable-diffusion-2-1-base").all() and len(manifest) == 20
        sidecar = json.loads((folder / "work" / "pretrain" / "seed_100" / "best.json").read_text())
        assert sidecar["pretrained"] == "imagenet" and sidecar["dataset"] == name.split()[0]
        split = json.loads((folder / "work" / "splits" / "split.json").read_text())
        assert split["group_counts"]["train"] == {"0_0": 5, "0_1": 15, "1_0": 15, "1_1": 5}
        for nb in (folder / "outputs" / "notebooks").glob("*.ipynb"):
            assert not json.loads(nb.read_text())["metadata"]["papermill"]["exception"], nb
    assert not (repo / "work").exists()  # nothing of the paper settings leaks into the default pipeline's folders
    status = run_ok([sys.executable, "-m", "dvc", "status", "paper/dvc.yaml"], repo, env).stdout
    assert "changed" not in status and "modified" not in status, status

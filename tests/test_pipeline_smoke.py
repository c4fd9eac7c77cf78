"""The whole default pipeline at toy size, through `dvc repro` and papermill exactly as a user runs it,
in a temporary copy of the repository (a fresh clone: no data/, no DVC remote, no outputs)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.builders import fresh_clone, merge, run_ok

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

TOY = {
    "seeds": [1, 2],
    "data": {"n_train": 80, "tinyfaces": {"n_images": 400, "image_size": 32}},
    "synthetic": {"balanced_per_group": 6, "biased_size": 20},
    "generate": {"steps": 3, "batch_size": 16},
    "fidelity": {"per_group": 20, "epochs": 1},
    "pretrain": {"input_size": 16, "epochs": 2, "milestones": [1], "batch_size": 32, "threads": 1},
    "finetune": {"epochs": 1, "batch_size": 16},
    "ablations": {"prompts": ["single", "2"], "top_k": [50, 60], "amount": [0.5, 1.0], "skew": ["3/7"],
                  "real_fraction": [0.5], "frozen_upto": ["layer3", "layer4"],
                  "model_selection": {"strategies": ["aimfair", "linear_probe"], "val_per_group": 3}},
}
ABLATION_ROWS = {  # the rows of each ablation's table at the toy settings above
    "prompts": ["1 plain prompt", "2 contextual", "50 contextual (pipeline)"],
    "top_k": ["k=50", "k=55 (pipeline)", "k=60"],
    "amount": ["0.3× real (pipeline)", "0.5× real", "1× real"],
    "skew": ["D_S1 3:7", "D_S1 1:9 (pipeline)"],
    "real_fraction": ["baseline, 100% real (pipeline)", "AIM-Fair, 100% real (pipeline)", "baseline, 50% real",
                      "AIM-Fair, 50% real"],
    "frozen_upto": ["nothing frozen (full_ft)", "frozen up to layer3", "frozen up to layer4 (linear_probe)",
                    "AIM-Fair's mask (pipeline)"],
}


@pytest.fixture(scope="module")
def toy_repo(tmp_path_factory) -> tuple[Path, dict]:
    if shutil.which("git") is None:
        pytest.skip("git is needed to make a repository copy")
    repo, env = fresh_clone(tmp_path_factory.mktemp("clone") / "aimfair")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    (repo / "params.yaml").write_text(yaml.safe_dump(merge(params, TOY), sort_keys=False))
    return repo, env


def test_a_fresh_clone_has_the_trained_generator_up_to_date(toy_repo):
    repo, env = toy_repo
    assert (repo / "models" / "tinyfaces_t2i" / "model.safetensors").exists()  # committed, a few MB
    status = run_ok([sys.executable, "-m", "dvc", "status", "generator"], repo, env).stdout
    assert "up to date" in status, status


def test_dvc_repro_runs_every_stage_and_writes_the_report(toy_repo):
    repo, env = toy_repo
    assert not (repo / "data").exists(), "the default pipeline must not need data/"
    out = run_ok([sys.executable, "-m", "dvc", "repro"], repo, env).stdout
    assert "Running stage 'generator'" not in out  # 13 minutes saved: the checkpoint is committed

    prompts = json.loads((repo / "work" / "prompts" / "prompts.json").read_text())
    assert sorted(prompts["groups"]) == ["0_0", "0_1", "1_0", "1_1"]
    assert all(len(v) == 50 for v in prompts["groups"].values())
    for name in ("00_data.ipynb", "01_prompts.ipynb", "02_generator.ipynb", "03_generate.ipynb",
                 "04_pretrain_seed1.ipynb", "04_pretrain_seed2.ipynb", "05_mask.ipynb", "06_finetune.ipynb",
                 "07_evaluate.ipynb"):
        nb = json.loads((repo / "outputs" / "notebooks" / name).read_text())
        assert not nb["metadata"]["papermill"]["exception"], name
    for seed in (1, 2):
        sidecar = json.loads((repo / "work/pretrain" / f"seed_{seed}" / "best.json").read_text())
        assert sidecar["seed"] == seed and 1 <= sidecar["epoch"] <= 2
    metrics = json.loads((repo / "reports" / "metrics.json").read_text())["baseline"]
    assert metrics["n_seeds"] == 2
    paper = metrics["paper"]
    assert paper["WST"] == min(paper[f"acc_{g}"] for g in ("0_0", "0_1", "1_0", "1_1"))
    assert 0 <= paper["ACC"] <= 100 and metrics["std"]["ACC"] is not None
    table = (repo / "reports" / "table.md").read_text()
    strategies = ("baseline", "synthetic_only", "supplementation", "repairing", "linear_probe", "full_ft", "aimfair")
    assert all(f"| {name} |" in table for name in strategies) and "WST" in table and "seeds improved" in table
    all_metrics = json.loads((repo / "reports" / "metrics.json").read_text())
    fidelity = all_metrics.pop("prompt_fidelity")  # the pool's fidelity, said beside the strategies
    assert fidelity["threshold"] == 80 and (fidelity["warning"] is None) == (fidelity["lowest_both"] >= 80)
    assert table.startswith("> **WARNING: PROMPT FIDELITY") == (fidelity["warning"] is not None)
    assert list(all_metrics) == list(strategies) and all(m["n_seeds"] == 2 for m in all_metrics.values())
    per_seed = pd.read_csv(repo / "reports" / "per_seed.csv")
    assert len(per_seed) == 2 * len(strategies)
    for seed in (1, 2):
        mask = json.loads((repo / "work" / "masks" / f"seed_{seed}" / "mask.json").read_text())
        assert mask["n_tensors"] == 62 and 0 < mask["n_selected"] <= 55
        for name in strategies[1:]:
            assert (repo / "work" / "finetune" / name / f"seed_{seed}" / "run.json").exists()
    # repairing fills the minority groups (4 each) up to 36 with edited majority images
    repaired = pd.read_csv(repo / "work" / "repaired" / "manifest.csv")
    assert repaired["group"].value_counts().to_dict() == {"0_0": 32, "1_1": 32}
    for figure in ("data/group_counts.png", "data/train_samples.png", "data/styles.png",
                   "evaluate/group_accuracy.png", "evaluate/confusion_by_group.png", "evaluate/pretrain_curves.png",
                   "evaluate/accuracy_vs_fairness.png", "evaluate/strategy_groups.png", "mask/scores_seed1.png",
                   "finetune/val_curves.png", "finetune/repaired_pairs.png"):
        assert (repo / "reports" / "figures" / figure).stat().st_size > 1000
    split = json.loads((repo / "work" / "splits" / "split.json").read_text())
    assert split["group_counts"]["train"] == {"0_0": 4, "0_1": 36, "1_0": 36, "1_1": 4}
    # the pool: 6 balanced per group, D_S1 of 20 at 1/9 needs 9 from each majority group
    manifest = pd.read_csv(repo / "work" / "pool" / "manifest.csv")
    assert manifest["group"].value_counts().to_dict() == {"0_1": 9, "1_0": 9, "0_0": 6, "1_1": 6}
    assert all((repo / "work" / "pool" / p).exists() for p in manifest["path"])
    fidelity = json.loads((repo / "reports" / "fidelity.json").read_text())
    assert sorted(fidelity["per_group"]) == ["0_0", "0_1", "1_0", "1_1"]
    for figure in ("generator/samples.png", "generator/single_vs_contextual.png", "generate/pool_samples.png",
                   "generate/fidelity.png"):
        assert (repo / "reports" / "figures" / figure).stat().st_size > 1000


def test_pipeline_is_up_to_date_afterwards_and_metrics_show(toy_repo):
    repo, env = toy_repo
    # data.dvc is "not in cache" in a fresh clone without a remote: the pipeline itself must be clean
    status = run_ok([sys.executable, "-m", "dvc", "status", "dvc.yaml"], repo, env).stdout
    assert "changed" not in status and "modified" not in status, status
    shown = run_ok([sys.executable, "-m", "dvc", "metrics", "show"], repo, env).stdout
    assert "baseline.paper.WST" in shown and "lowest_both" in shown


CLI_STAGES = ("world", "data", "prompts", "generate", "repair", "pretrain", "mask", "finetune", "evaluate")


def _stage_files(repo: Path) -> dict[str, bytes]:
    """What the stages compute: every file under work/ (but the decode cache and lock files) and the reports'
    data (figures are drawn by the notebooks only)."""
    files = [p for p in (repo / "work").rglob("*") if p.is_file() and not {"cache", ".locks"} & set(p.parts)]
    files += [p for p in (repo / "reports").glob("*") if p.is_file()]
    return {str(p.relative_to(repo)): p.read_bytes() for p in files}


def test_the_cli_writes_what_the_notebooks_write(toy_repo, tmp_path):
    """Each notebook calls the stage function that its CLI command calls: the same files, byte for byte."""
    repo, _ = toy_repo
    cli_repo, env = fresh_clone(tmp_path / "aimfair")
    shutil.copy2(repo / "params.yaml", cli_repo / "params.yaml")
    for stage in CLI_STAGES:
        run_ok([sys.executable, "-m", "aimfair", stage], cli_repo, env)
    by_notebooks, by_cli = _stage_files(repo), _stage_files(cli_repo)
    assert sorted(by_cli) == sorted(by_notebooks)
    differ = [name for name in by_cli if by_cli[name] != by_notebooks[name]]
    assert not differ, differ
    assert "reports/fidelity.json" in by_cli  # the generate command reads the pool with the oracle too


def test_table4_and_the_ablations_run_on_top_of_the_pipeline(toy_repo):
    repo, env = toy_repo
    for seed in (1, 2):
        cosine = json.loads((repo / "work" / "masks" / f"seed_{seed}" / "cosine" / "mask.json").read_text())
        assert cosine["rule"] == "cosine" and 0 < cosine["n_selected"] <= 55
    out = run_ok([sys.executable, "-m", "dvc", "repro", "experiments/dvc.yaml"], repo, env).stdout
    assert "Running stage 'experiments/dvc.yaml:table4'" in out and "Running stage 'finetune'" not in out
    assert all(f"Running stage 'experiments/dvc.yaml:ablation@{name}'" in out for name in ABLATION_ROWS)
    assert "Running stage 'experiments/dvc.yaml:model_selection'" in out
    assert "Running stage 'experiments/dvc.yaml:paper_figures'" in out
    beside = (repo / "reports" / "paper" / "beside_paper.md").read_text()
    assert "| aimfair |" in beside and "| k=60 |" in beside and "not run" not in beside
    assert (repo / "reports" / "figures" / "paper" / "table3.png").stat().st_size > 1000
    nb = json.loads((repo / "outputs" / "notebooks" / "08_table4.ipynb").read_text())
    assert not nb["metadata"]["papermill"]["exception"]
    table = (repo / "reports" / "table4" / "table.md").read_text()
    rows = ("baseline", "full_ft", "aimfair", "random_selection", "random_selection_mean", "subtuning_update_one",
            "subtuning_freeze_one", "aimfair_cosine", "subtuning_freeze_one-layer4", "random_selection-draw_3")
    assert all(f"| {name} |" in table for name in rows)
    per_seed = pd.read_csv(repo / "reports" / "table4" / "per_seed.csv")
    chosen = per_seed[per_seed["strategy"] == "subtuning_update_one"]
    assert len(chosen) == 2 and chosen["variant"].str.startswith("subtuning_update_one-layer").all()
    # 12 runs per seed (3 draws, 4 + 4 blocks, the cosine mask) trained by this stage, in its own folder
    assert len(list((repo / "work" / "partial").glob("*/seed_*/run.json"))) == 2 * 12
    for figure in ("table4/variants.png", "table4/accuracy_vs_fairness.png"):
        assert (repo / "reports" / "figures" / figure).stat().st_size > 1000
    for name, rows in ABLATION_ROWS.items():
        nb = json.loads((repo / "outputs" / "notebooks" / f"09_ablation_{name}.ipynb").read_text())
        assert not nb["metadata"]["papermill"]["exception"], name
        table = (repo / "reports" / "ablations" / name / "table.md").read_text()
        assert all(f"| {row} |" in table for row in rows), (name, table)
        assert json.loads((repo / "reports" / "ablations" / name / "metrics.json").read_text()).keys() == {
            *rows, "prompt_fidelity"}
        assert (repo / "reports" / "figures" / "ablations" / f"{name}.png").stat().st_size > 1000
    # one run per trained row and seed, in the ablation's own folder (real_fraction: its biased models too)
    trained = {name: len(list((repo / "work" / "ablations" / name).glob("*/seed_*/run.json"))) for name in ABLATION_ROWS}
    assert trained == dict(prompts=4, top_k=4, amount=4, skew=2, real_fraction=4, frozen_upto=2)
    pool = pd.read_csv(repo / "work" / "ablations" / "prompts" / "single" / "pool" / "manifest.csv")
    assert pool.groupby("group")["prompt"].nunique().eq(1).all() and pool["prompt"].str.startswith("Portrait").all()
    status = run_ok([sys.executable, "-m", "dvc", "status", "experiments/dvc.yaml", "dvc.yaml"], repo, env).stdout
    assert "changed" not in status and "modified" not in status, status


def test_the_model_selection_stage_trains_each_rule_on_a_validation_set_of_its_own(toy_repo):
    repo, env = toy_repo  # after the test above, which ran experiments/dvc.yaml
    nb = json.loads((repo / "outputs" / "notebooks" / "11_model_selection.ipynb").read_text())
    assert not nb["metadata"]["papermill"]["exception"]
    folder = repo / "reports" / "ablations" / "model_selection"
    table = (folder / "table.md").read_text()
    rows = [f"{name}, {rule}" for name in ("aimfair", "linear_probe")
            for rule in ("real_val_acc (pipeline)", "synthetic_val_worst", "real_val_worst")]
    assert all(f"| {row} |" in table for row in rows), table
    assert "| aimfair, synthetic_val_worst − aimfair, real_val_worst |" in table  # label-free against the oracle
    work = repo / "work" / "ablations" / "model_selection"
    assert len(list(work.glob("*/seed_*/run.json"))) == 2 * 2 * 2  # 2 strategies x 2 rules x 2 seeds
    validation = pd.read_csv(work / "validation_pool" / "manifest.csv")
    assert validation.groupby("group").size().eq(3).all()
    drawn = set(pd.read_csv(repo / "work" / "pool" / "manifest.csv")["path"])  # D_S1 and D_S2 come from it
    assert not drawn & set(validation["path"])
    for arm in ("aimfair-synthetic_val_worst", "linear_probe-real_val_worst"):
        record = json.loads((work / f"ablation_model_selection-{arm}" / "seed_1" / "run.json").read_text())
        assert record["select"] == ("synthetic_val_wst" if "synthetic" in arm else "real_val_wst")
    tracking = pd.read_csv(folder / "tracking.csv")
    assert len(tracking) == 2 * 2 * 1 and tracking["synthetic_val_WST"].between(0, 100).all()  # 1 epoch each
    assert "share kept" in (folder / "tracking.md").read_text()
    assert (repo / "reports" / "figures" / "ablations" / "model_selection_tracking.png").stat().st_size > 1000


def test_two_processes_train_the_same_models_as_one(toy_repo):
    repo, env = toy_repo
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    runs = [repo / "work" / "finetune" / name / f"seed_{seed}" for name in ("synthetic_only", "full_ft", "aimfair")
            for seed in (1, 2)]
    serial = {run: (run / "best.safetensors").read_bytes() for run in runs}
    for run in runs:
        shutil.rmtree(run)
    out = run_ok([torchrun, "--nproc_per_node", "2", "-m", "aimfair", "finetune"], repo, env).stdout
    assert out.count("trained in") == len(runs)  # each retrained once, by one of the two processes
    assert all((run / "best.safetensors").read_bytes() == serial[run] for run in runs)
    status = run_ok([sys.executable, "-m", "dvc", "status", "dvc.yaml"], repo, env).stdout
    assert "changed" not in status and "modified" not in status, status  # the very same outputs


def test_a_new_seed_reruns_only_that_seed_and_evaluation(toy_repo):
    repo, env = toy_repo
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["seeds"] = [1, 2, 3]
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    earlier_run = repo / "work" / "finetune" / "aimfair" / "seed_1" / "best.safetensors"
    earlier = earlier_run.stat().st_mtime_ns
    out = run_ok([sys.executable, "-m", "dvc", "repro"], repo, env).stdout
    assert "Running stage 'pretrain@3'" in out and "Running stage 'evaluate'" in out
    assert "Running stage 'pretrain@1'" not in out and "Running stage 'data'" not in out
    # the finetune stage reruns, but reuses the runs of the seeds it already has
    assert earlier_run.stat().st_mtime_ns == earlier
    assert (repo / "work" / "finetune" / "aimfair" / "seed_3" / "run.json").exists()
    assert json.loads((repo / "reports" / "metrics.json").read_text())["baseline"]["n_seeds"] == 3


def test_the_same_pipeline_runs_on_a_celeba_format_dataset_under_data(toy_repo):
    repo, env = toy_repo
    celeba = repo / "data" / "celeba"
    shutil.copytree(repo / "work" / "tinyfaces", celeba)  # CelebA's own file format
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"].update(dataset="celeba", root="data/celeba", target="Young", sensitive="Male", bias_degree="1/3")
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # the studio-trained generator is refused for a dataset it was not trained on, with the fixes named
    refused = subprocess.run([sys.executable, "-m", "dvc", "repro", "dvc.yaml"], cwd=repo, env=env,
                             capture_output=True, text=True, timeout=900)
    said = refused.stdout + refused.stderr
    assert refused.returncode != 0 and "generator.corpus: dataset" in said and "Stable Diffusion" in said, said[-2000:]
    assert "Traceback" not in said
    # these "CelebA" files are tinyfaces renders, which the studio model did learn: the explicit opt-out fits
    params["generate"]["allow_foreign_generator"] = True
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run_ok([sys.executable, "-m", "dvc", "repro", "dvc.yaml"], repo, env)
    metrics = json.loads((repo / "reports" / "metrics.json").read_text())["baseline"]
    assert metrics["setting"] == "celeba Young/Male bias 1/3" and metrics["n_seeds"] == 3
    split = json.loads((repo / "work" / "splits" / "split.json").read_text())
    assert split["params"]["root"] == "data/celeba" and sum(split["group_counts"]["train"].values()) == 80


def test_a_user_mistake_stops_the_stage_with_one_line_and_no_traceback(toy_repo):
    repo, env = toy_repo
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["n_train"] = 100000  # more than any group can supply
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = subprocess.run([sys.executable, "-m", "dvc", "repro", "data"], cwd=repo, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    errors = [line for line in output.splitlines() if line.startswith("aimfair: error:")]
    assert len(errors) == 1 and "n_train" in errors[0] and "available/needed" in errors[0], output[-2000:]
    assert "Traceback" not in output

"""The repository's own contracts: environment files agree, notebooks are committed clean and
parameterised with literals, and every notebook the pipeline runs exists."""

import ast
import json
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    for sep in "=<>!~[; ":
        requirement = requirement.split(sep)[0]
    return requirement.lower()


def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"]) | set(project["optional-dependencies"]["dev"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert sorted(pip_section) == sorted(wanted), "environment.yml and pyproject.toml disagree"


def _notebooks() -> list[Path]:
    found = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert found, "no notebooks found"
    return found


def test_notebooks_are_committed_without_outputs():
    for path in _notebooks():
        nb = json.loads(path.read_text())
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert not cell.get("outputs"), f"{path.name} has outputs: clear them before committing"
                assert cell.get("execution_count") is None, f"{path.name} has execution counts"


def test_notebooks_open_with_a_narrative_and_have_a_literal_parameters_cell():
    for path in _notebooks():
        cells = json.loads(path.read_text())["cells"]
        intro = "".join(cells[0]["source"])
        assert cells[0]["cell_type"] == "markdown"
        for heading in ("What you will learn", "Inputs", "Outputs", "Runtime"):
            assert heading in intro, f"{path.name}: the opening cell lacks '{heading}'"
        tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, f"{path.name}: needs exactly one cell tagged 'parameters'"
        for node in ast.parse("".join(tagged[0]["source"])).body:
            assert isinstance(node, ast.Assign), f"{path.name}: parameters cell may only assign"
            ast.literal_eval(node.value)  # raises if a value is not a literal


def test_numbered_notebooks_match_the_pipeline():
    stages = {}
    for pipeline in ("dvc.yaml", "experiments/dvc.yaml"):  # the default pipeline and the opt-in one
        stages.update(yaml.safe_load((ROOT / pipeline).read_text())["stages"])
    commands = " ".join(str(s.get("cmd", s.get("do", {}).get("cmd", ""))) for s in stages.values())
    for path in _notebooks():
        assert path.name[:2].isdigit(), f"{path.name} is not numbered"
        assert f"notebooks/{path.name}" in commands, f"{path.name} is not run by any stage of a dvc.yaml"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make repro" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_readme_shows_the_committed_results_of_every_strategy():
    import csv

    with open(ROOT / "reports" / "table.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["method"] for r in rows} >= {"baseline", "full_ft", "aimfair"}
    readme = (ROOT / "README.md").read_text()
    for row in rows:  # each summary metric with its interval, as reports/table.md prints it
        shown = [f"{float(row[c]):.2f} [{float(row[c + ' lo']):.1f}, {float(row[c + ' hi']):.1f}]"
                 for c in ("ACC", "WST", "EO", "STD")]
        assert " | ".join(shown) in readme, f"README's results table is stale for {row['method']}: {shown}"


def test_readme_shows_the_committed_results_of_table_4():
    import csv

    with open(ROOT / "reports" / "table4" / "table.csv") as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    readme = (ROOT / "docs" / "guide.md").read_text()  # the README's detail lives there
    section = readme[readme.index("## Partial fine-tuning: the paper's Table 4"):]
    for name in ("full_ft", "random_selection", "random_selection_mean", "subtuning_update_one",
                 "subtuning_freeze_one", "aimfair_cosine", "aimfair"):
        shown = " | ".join(f"{float(rows[name][c]):.2f}" for c in ("ACC", "WST", "EO", "STD"))
        line = next((line for line in section.splitlines() if line.startswith((f"| {name} ", f"| **{name}**"))), "")
        assert shown in line, f"README's Table 4 row of {name} is stale: {shown}"




def test_the_papers_numbers_in_docs_are_those_printed_beside_ours():
    """docs/paper.md restates the paper's Table 3 and other settings: the same numbers as aimfair/paper/numbers.py."""
    from aimfair.paper.numbers import OTHER_SETTINGS, SMILING_MALE

    doc = (ROOT / "docs" / "paper.md").read_text()
    for name, row in SMILING_MALE.items():
        assert " | ".join(f"{v:.2f}" for v in row.values()) + " |" in doc, f"docs/paper.md lacks {name}: {row}"
    for setting, rows in OTHER_SETTINGS.items():
        for name, row in rows.items():
            assert " / ".join(f"{v:.2f}" for v in row.values()) in doc, f"docs/paper.md lacks {setting} {name}"

PAPER_STAGES = ("data", "prompts", "generate", "repair", "pretrain", "mask", "finetune", "evaluate")


def test_the_paper_pipeline_has_the_default_pipelines_stages_dependencies_and_params():
    main = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    paper = yaml.safe_load((ROOT / "paper" / "dvc.yaml").read_text())["stages"]
    assert tuple(paper) == PAPER_STAGES
    moved = {"${data.root}": "../../data/${item.dataset}", "models/tinyfaces_t2i": "../../models/stable-diffusion-2-1-base"}
    for name in PAPER_STAGES:
        ours, theirs = main[name].get("do", main[name]), paper[name].get("do", paper[name])
        expected = [moved.get(d, "../../" + d if d.startswith(("aimfair", "notebooks")) else d) for d in ours["deps"]
                    if not (name == "pretrain" and d == "${data.root}")]  # pretrain: work/splits stands for it
        assert theirs["deps"] == expected, f"paper/dvc.yaml stage {name}: its deps drifted from dvc.yaml's"
        assert theirs["params"] == ours["params"], f"paper/dvc.yaml stage {name}: its params drifted from dvc.yaml's"


def assert_lists_every_key(params_file: Path, tracked: set[str]) -> None:
    """DVC refuses a stage whose params file lacks one of its keys: every tracked key must be written out."""
    data = yaml.safe_load(params_file.read_text())
    for key in tracked:
        value = data
        for part in key.split("."):
            assert part in value, f"{params_file.relative_to(ROOT)} lacks {key}, which its dvc.yaml tracks"
            value = value[part]


SETTINGS_STAGES = ("data", "prompts", "generator", "generator_samples", "generate", "repair", "pretrain", "mask",
                   "finetune", "evaluate")


def test_the_cpu_settings_pipeline_has_the_default_pipelines_dependencies_and_params():
    main = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    ours = yaml.safe_load((ROOT / "settings" / "dvc.yaml").read_text())
    assert tuple(ours["stages"]) == SETTINGS_STAGES
    moved = {"${data.root}": "../../data/${item.dataset}", "models/tinyfaces_t2i": "work/generator/model"}
    for name in SETTINGS_STAGES:
        if name == "generator":  # trained on the dataset here, on the world's renders there
            continue
        stage, theirs = ours["stages"][name].get("do", ours["stages"][name]), main[name].get("do", main[name])
        expected = [moved.get(d, "../../" + d if d.startswith(("aimfair", "notebooks")) else d) for d in theirs["deps"]
                    if not (name == "pretrain" and d == "${data.root}")]
        if name == "generator_samples":  # it also shows real photos of the pool beside generated faces
            assert set(expected) <= set(stage["deps"]) and set(theirs["params"]) <= set(stage["params"])
        else:
            assert stage["deps"] == expected, f"settings/dvc.yaml stage {name}: its deps drifted from dvc.yaml's"
            assert stage["params"] == theirs["params"], f"settings/dvc.yaml stage {name}: params drifted"
    tracked = {p for stage in ours["stages"].values() for p in stage.get("do", stage)["params"]}
    settings = ours["vars"][0]["settings"]
    assert sorted(p.parent.name for p in (ROOT / "settings").glob("*/params.yaml")) == sorted(settings)
    from aimfair.config import load_params

    for setting, spec in settings.items():
        assert_lists_every_key(ROOT / "settings" / setting / "params.yaml", tracked)
        p = load_params(ROOT / "settings" / setting / "params.yaml")
        assert p.data.dataset == spec["dataset"] and p.data.root == f"../../data/{spec['dataset']}"
        assert p.generator.corpus == "dataset" and p.generate.model == "builtin" and p.pretrain.pretrained == "none"
        assert p.pretrain.input_size == 32 and p.seeds == ours["vars"][0]["seeds"]


def test_every_paper_setting_lists_what_its_stages_track_and_the_papers_protocol():
    from aimfair.config import load_params

    pipeline = yaml.safe_load((ROOT / "paper" / "dvc.yaml").read_text())
    settings, seeds = pipeline["vars"][0]["settings"], pipeline["vars"][0]["seeds"]
    assert seeds == list(range(100, 1001, 100)) and sorted(p.parent.name for p in (ROOT / "paper").glob("*/params.yaml")) == sorted(settings)
    tracked = {p for stage in pipeline["stages"].values() for p in stage.get("do", stage)["params"]}
    for setting in settings:
        assert_lists_every_key(ROOT / "paper" / setting / "params.yaml", tracked)
        p = load_params(ROOT / "paper" / setting / "params.yaml")
        dataset, target, sensitive = setting.split("_")
        assert (p.data.dataset, p.data.target.lower(), p.data.sensitive.lower()) == (dataset, target, sensitive)
        assert settings[setting] == {"dataset": dataset}
        assert p.seeds == seeds and p.data.root == f"../../data/{dataset}" and p.data.bias_degree == "1/9"
        assert (p.pretrain.pretrained, p.pretrain.input_size, p.pretrain.epochs, p.pretrain.milestones) == (
            "imagenet", 224, 15, [10])
        assert p.pretrain.precision == "float32"  # the authors' full precision, not the default world's auto
        assert p.finetune.new_model_budget == "epochs"  # new models train pretrain.epochs over their own set
        assert (p.finetune.epochs, p.finetune.lr, p.selection.top_k, p.generate.preset) == (10, 0.06, 55, "paper")
        assert p.synthetic.balanced_per_group == 5000 and p.synthetic.biased_size == p.data.n_train


def test_readme_shows_the_committed_results_of_every_ablation():
    import csv

    readme = (ROOT / "docs" / "guide.md").read_text()  # the README's detail lives there
    section = readme[readme.index("## Ablations (opt-in)"):readme.index("## Parallel runs")]
    for name in ("prompts", "top_k", "amount", "skew", "real_fraction", "frozen_upto"):
        with open(ROOT / "reports" / "ablations" / name / "table.csv") as f:
            for row in csv.DictReader(f):
                shown = " | ".join(f"{float(row[c]):.2f}" for c in ("ACC", "WST", "EO"))
                line = next((line for line in section.splitlines() if line.startswith(f"| {name} | {row['method']} |")), "")
                assert shown in line, f"README's {name} row {row['method']!r} is stale: {shown}"


def test_the_docs_show_the_committed_results_of_the_robust_baselines():
    import csv

    with open(ROOT / "reports" / "robust" / "table.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["method"] for r in rows} >= {"baseline", "group_balanced", "group_dro", "jtt", "aimfair"}
    guide = (ROOT / "docs" / "guide.md").read_text()
    section = guide[guide.index("## Group-robustness baselines (opt-in)"):guide.index("## Parallel runs")]
    robust = (ROOT / "docs" / "robust.md").read_text()
    for row in rows:
        plain = " | ".join(f"{float(row[c]):.2f}" for c in ("ACC", "WST", "EO"))
        line = next((line for line in section.splitlines() if line.startswith(f"| {row['method']} ")), "")
        assert plain in line, f"the guide's robust row {row['method']!r} is stale: {plain}"
        shown = " | ".join(f"{float(row[c]):.2f} [{float(row[c + ' lo']):.1f}, {float(row[c + ' hi']):.1f}]"
                           for c in ("ACC", "WST", "EO"))
        assert shown in robust, f"docs/robust.md's row {row['method']!r} is stale: {shown}"


def test_the_committed_gpu_time_estimate_is_current_and_shown_in_paper_readme(tmp_path):
    """docs/paper_gpu_time.json is what paper_gpu_time.py computes now from the paper params and the
    committed throughput measurements, and paper/README's hours are that file's."""
    import subprocess
    import sys

    fresh = tmp_path / "estimate.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "paper_gpu_time.py"), "--json", str(fresh)],
                   check=True, capture_output=True, cwd=ROOT)
    committed = json.loads((ROOT / "docs" / "paper_gpu_time.json").read_text())
    assert json.loads(fresh.read_text()) == committed, "rerun benchmarks/paper_gpu_time.py --json docs/paper_gpu_time.json"
    table = (ROOT / "paper" / "README.md").read_text()
    for setting, row in (("celeba_smiling_male", "| each CelebA setting |"), ("utkface_female_white", "| UTKFace")):
        w = committed["settings"][setting]
        line = next(line for line in table.splitlines() if line.startswith(row))
        for hours in (w["generation_hours"], w["training_hours"], w["total_hours"]):
            assert f"| {hours:.1f} h |" in line, f"paper/README's {setting} hours are stale: {hours:.1f}"


def test_every_test_docs_reliability_cites_exists():
    """docs/reliability.md names, for each case, the test that makes it happen: each must be there."""
    text = (ROOT / "docs" / "reliability.md").read_text()
    cited, last_file = [], None
    for cell in [c.strip() for line in text.splitlines() if line.startswith("|") for c in line.split("|")]:
        for ref in cell.replace("`", "").split(", "):
            if "::" in ref:
                last_file, name = ref.split("::")
                cited.append((last_file, name))
            elif ref.startswith("test_") and last_file and "." not in ref:
                cited.append((last_file, ref))
    assert len(cited) >= 40
    for file, name in cited:
        source = (ROOT / "tests" / file).read_text()
        assert f"def {name}(" in source, f"docs/reliability.md cites {file}::{name}, which does not exist"

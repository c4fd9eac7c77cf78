"""The package's shape: import contracts (pyproject.toml, [tool.importlinter]), params that load without torch,
and DVC stages whose code dependencies are complete by construction: every aimfair module a stage's command
imports, directly or not, is listed in its deps."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PIPELINES = ["dvc.yaml", "experiments/dvc.yaml", "settings/dvc.yaml", "paper/dvc.yaml"]


def test_the_import_contracts_hold():
    lint_imports = Path(sys.executable).with_name("lint-imports")  # import-linter's command, beside this python
    result = subprocess.run([str(lint_imports), "--no-cache", "--config", str(ROOT / "pyproject.toml")], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    assert f"Contracts: {len(contracts)} kept, 0 broken." in result.stdout


def test_reading_params_imports_no_torch_and_nothing_above_core():
    code = ("import sys; from aimfair.config import load_params; load_params('params.yaml'); "
            "print([m for m in sys.modules if m.startswith(('aimfair', 'torch', 'numpy', 'pandas'))])")
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert sorted(eval(loaded)) == ["aimfair", "aimfair.config", "aimfair.core", "aimfair.core.errors"]


# ----------------------------------------------------------------------------- DVC dependencies


def _graph() -> grimp.ImportGraph:
    return grimp.build_graph("aimfair", cache_dir=None)


def _command_imports(command: str) -> set[str]:
    """The aimfair modules that the CLI command `command` runs: its stage's module aimfair.pipeline.<command>,
    and whatever the command's function in cli.py imports (cli.py imports each stage lazily)."""
    tree = ast.parse((ROOT / "aimfair" / "cli.py").read_text())
    wanted = {f"_{command}", f"_add_{command}"}
    functions = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name in wanted]
    modules = {node.module for f in functions for node in ast.walk(f)
               if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("aimfair")}
    if (ROOT / "aimfair" / "pipeline" / f"{command}.py").exists():
        modules.add(f"aimfair.pipeline.{command}")
    assert modules, f"cli.py has no stage command {command!r}"
    return modules


def _notebook_imports(notebook: Path) -> set[str]:
    cells = json.loads(notebook.read_text())["cells"]
    source = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    source = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
    modules = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("aimfair"):
            modules.add(node.module)
            modules |= {f"{node.module}.{a.name}" for a in node.names}  # `from aimfair.paper import figures`
        elif isinstance(node, ast.Import):
            modules |= {a.name for a in node.names if a.name.startswith("aimfair")}
    return modules


def _entry_modules(cmd: str, graph: grimp.ImportGraph) -> set[str]:
    """What a stage's command runs: a notebook through aimfair.notebooks, or a CLI command's stage function.
    cli.py itself only parses arguments and calls them, so it is not a dependency."""
    words = cmd.split()
    assert words[0] == "aimfair", cmd
    if words[1] == "notebook":
        notebook = ROOT / "notebooks" / Path(words[2]).name
        entry = {"aimfair.notebooks"} | _notebook_imports(notebook)
    else:
        entry = _command_imports(words[1].replace("-", "_"))
    return {m for m in entry if m in graph.modules}


def _module_file(module: str) -> str:
    path = Path(*module.split("."))
    return f"{path}.py" if (ROOT / f"{path}.py").exists() else f"{path}/__init__.py"


def _has_code(module: str) -> bool:
    """A package's __init__.py that holds only its docstring runs nothing worth depending on."""
    tree = ast.parse((ROOT / _module_file(module)).read_text())
    return any(not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)) for node in tree.body)


def stage_code(cmd: str, graph: grimp.ImportGraph) -> set[str]:
    """Every aimfair source file a stage's command runs, directly or through imports."""
    modules = set()
    for module in _entry_modules(cmd, graph):
        modules |= {module} | graph.find_upstream_modules(module)
    files = {_module_file(m) for m in modules if _has_code(m)}
    if "aimfair/csdg/prompts/llm.py" in files:
        files.add("aimfair/csdg/prompts/templates")  # the packaged instruction templates it reads
    return files


def _stages(pipeline: str):
    for name, stage in yaml.safe_load((ROOT / pipeline).read_text())["stages"].items():
        body = stage.get("do", stage)
        yield name, body["cmd"], body.get("deps", [])


def _covered(file: str, deps: list[str]) -> bool:
    listed = [dep.replace("../", "").rstrip("/") for dep in deps]
    return any(file == dep or file.startswith(dep + "/") for dep in listed)


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_every_stage_depends_on_all_the_code_it_runs(pipeline):
    graph = _graph()
    missing = {}
    for name, cmd, deps in _stages(pipeline):
        lacking = sorted(f for f in stage_code(cmd, graph) if not _covered(f, deps))
        if lacking:
            missing[name] = lacking
    assert not missing, f"{pipeline}: stages lack code they import; add these deps: {missing}"


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_no_stage_depends_on_code_it_does_not_run(pipeline):
    graph = _graph()
    stray = {}
    for name, cmd, deps in _stages(pipeline):
        code = stage_code(cmd, graph)
        listed = [d for d in deps if d.replace("../", "").startswith("aimfair/")]
        extra = [d for d in listed if not any(_covered(f, [d]) for f in code)]
        if extra:
            stray[name] = extra
    assert not stray, f"{pipeline}: stages list code they never import (a needless rerun): {stray}"


def test_the_stage_code_follows_function_level_imports():
    """The generate stage loads Stable Diffusion lazily; its deps must still hold sd.py."""
    graph = _graph()
    cmd = "aimfair notebook notebooks/03_generate.ipynb outputs/notebooks/03_generate.ipynb"
    code = stage_code(cmd, graph)
    assert {"aimfair/csdg/generators/sd.py", "aimfair/csdg/fidelity.py", "aimfair/config.py",
            "aimfair/notebooks.py"} <= code
    assert "aimfair/cli.py" not in code and "aimfair/strategies/runner.py" not in code


def test_the_committed_generator_matches_its_code():
    """The built-in model is committed and its stage imports nine source files: an edit of one of them that
    is not recorded would make every fresh clone retrain it (15 minutes, and a new model changes every result)."""
    status = subprocess.run([sys.executable, "-m", "dvc", "status", "generator"], cwd=ROOT, capture_output=True,
                            text=True)
    assert "up to date" in status.stdout, (
        f"{status.stdout}{status.stderr}\nthe generator stage's code changed: if the change computes nothing new "
        "(a comment, a moved function), record it with `dvc commit -f generator`; else retrain with "
        "`dvc repro generator` and commit the new model")

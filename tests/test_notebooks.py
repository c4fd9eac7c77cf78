"""aimfair notebook: the cells' output reaches the console as plain lines, without the kernel's noise."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
import pytest

from aimfair.core.errors import AimfairError
from aimfair.notebooks import _PlainLines, run_notebook

CELL = """\
import sys
from tqdm.auto import tqdm  # what diffusers and huggingface_hub use: it wants ipywidgets inside a kernel
print("epoch 1/1: loss 0.25")
for _ in tqdm(range(3), desc="steps", mininterval=0):
    pass
print("a line on stderr", file=sys.stderr)
"""


def write_notebook(path: Path, *sources: str) -> Path:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, path)
    return path


@pytest.fixture(autouse=True)
def venv_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """papermill starts the python3 kernel with the first python on PATH: ours, as the Makefile arranges."""
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")


def test_the_cells_output_reaches_the_console_without_noise(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    before = os.environ.get("PYTHONWARNINGS")
    run_notebook(write_notebook(tmp_path / "in.ipynb", CELL), tmp_path / "out" / "out.ipynb")
    out, err = capfd.readouterr()
    assert "epoch 1/1: loss 0.25\n" in out
    assert "a line on stderr\n" in err
    assert "steps: 100%" in err and "\r" not in err  # the bar as text lines, not widgets or carriage returns
    for noise in ("without encryption", "TqdmWarning", "IProgress", "Executing Cell", "Input Notebook"):
        assert noise not in out + err, noise
    assert os.environ.get("PYTHONWARNINGS") == before  # the kernel's setting does not leak into ours
    assert (tmp_path / "out" / "out.ipynb").is_file()


def test_without_log_output_the_console_stays_silent(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    run_notebook(write_notebook(tmp_path / "in.ipynb", CELL), tmp_path / "out.ipynb", log_output=False)
    out, err = capfd.readouterr()
    assert "epoch 1/1" not in out and "a line on stderr" not in err and "without encryption" not in err


def test_a_user_mistake_in_a_cell_is_one_line(tmp_path: Path) -> None:
    source = "from aimfair.core.errors import AimfairError\nraise AimfairError('data.root is wrong: fix it')"
    with pytest.raises(AimfairError, match=r"^data.root is wrong: fix it \(raised in in.ipynb; see "):
        run_notebook(write_notebook(tmp_path / "in.ipynb", source), tmp_path / "out.ipynb")


def test_carriage_returns_become_lines_and_cleared_bars_vanish(capsys: pytest.CaptureFixture) -> None:
    lines = _PlainLines("stderr")
    lines.write("\rsteps:  50%|#####     | 1/2\rsteps: 100%|##########| 2/2")
    lines.write("\r" + " " * 40 + "\r")  # what a leave=False bar writes when it closes
    lines.write("done\r\n")
    assert capsys.readouterr().err == "steps:  50%|#####     | 1/2\nsteps: 100%|##########| 2/2\ndone\n"

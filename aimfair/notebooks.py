"""Run a numbered notebook with papermill, as every DVC stage does.

A thin wrapper around papermill.execute_notebook that creates the output folder, streams the cells'
output to the log, and turns an AimfairError raised inside the notebook (a user mistake: a bad param, a
missing file) into one line instead of a kernel traceback. The executed notebook is kept either way.

The console shows what the cells print, line by line (a cell's stdout on stdout, its stderr on stderr, a
progress bar's refreshes as lines), and nothing of papermill's own bookkeeping. The kernel talks to us over
CurveZMQ-encrypted TCP where pyzmq supports it (so ipykernel has no "without encryption" warning to give),
and tqdm.auto, used by libraries the notebooks import, falls back to its text bar without warning that
ipywidgets is absent.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aimfair.core.errors import AimfairError

# tqdm.auto warns this in a kernel without ipywidgets, then uses its plain text bar anyway: that bar is what we want
_NO_WIDGETS_WARNING = "ignore:IProgress not found"


class _PlainLines:
    """A writable file for a cell's stream output that passes it on as whole lines to sys.stdout or sys.stderr.

    A progress bar redraws itself with carriage returns; in a log each redraw should be a line of its own.
    The stream is looked up at each write, so whatever sys.stdout is then (a capture, a redirect) receives it.
    """

    def __init__(self, stream: str) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        # blank lines are what a finished bar leaves behind when it clears itself
        getattr(sys, self.stream).write("".join(line + "\n" for line in lines if line.strip()))
        return len(text)

    def flush(self) -> None:
        getattr(sys, self.stream).flush()


@contextlib.contextmanager
def _quiet_kernel_environment() -> Iterator[None]:
    """The kernel inherits our environment: while it starts, tell its Python to ignore tqdm's widget warning."""
    before = os.environ.get("PYTHONWARNINGS")
    os.environ["PYTHONWARNINGS"] = ",".join(filter(None, (before, _NO_WIDGETS_WARNING)))
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PYTHONWARNINGS", None)
        else:
            os.environ["PYTHONWARNINGS"] = before


def _kernel_config() -> Any:
    """Encrypt the kernel's connection when pyzmq can: ipykernel warns on every start over plain TCP."""
    import zmq
    from jupyter_client.manager import KernelManager
    from traitlets.config import Config

    if not zmq.has("curve") or "transport_encryption" not in KernelManager.class_trait_names():
        return Config()  # an older jupyter_client: the warning stays, nothing breaks
    # "auto": keys are provisioned only for kernelspecs that declare curve support, as ipykernel's does
    return Config({"KernelManager": {"transport_encryption": "auto"}})


def run_notebook(notebook: str | os.PathLike, output: str | os.PathLike, parameters: dict[str, Any] | None = None,
                 log_output: bool = True) -> Path:
    """Execute `notebook` into `output` with papermill, injecting `parameters`; with `log_output`, what the cells
    print reaches our stdout and stderr as it happens."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    notebook, output = Path(notebook), Path(output)
    if not notebook.exists():
        raise AimfairError(f"notebook {notebook} does not exist: run from the repository root")
    output.parent.mkdir(parents=True, exist_ok=True)
    # the kernel inherits this: progress bars refresh every 30 s, as every refresh is a line in the log
    os.environ.setdefault("TQDM_MININTERVAL", "30")
    # papermill's own log_output sends the cells' output through its logger, which has no handler (nothing shows)
    # and adds "Executing Cell" lines: its stdout_file/stderr_file receive the cells' output alone
    streams = {"stdout_file": _PlainLines("stdout"), "stderr_file": _PlainLines("stderr")} if log_output else {}
    try:
        with _quiet_kernel_environment():
            papermill.execute_notebook(str(notebook), str(output), parameters=parameters or {}, log_output=False,
                                       progress_bar=False, config=_kernel_config(), **streams)
    except PapermillExecutionError as error:
        if error.ename == "AimfairError":
            raise AimfairError(f"{error.evalue} (raised in {notebook.name}; see {output})") from None
        raise
    return output

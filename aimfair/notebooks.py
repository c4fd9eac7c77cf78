"""Run a numbered notebook with papermill, as every DVC stage does.

A thin wrapper around papermill.execute_notebook that creates the output folder, streams the cells'
output to the log, and turns an AimfairError raised inside the notebook (a user mistake: a bad param, a
missing file) into one line instead of a kernel traceback. The executed notebook is kept either way.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from aimfair.errors import AimfairError


def run_notebook(notebook: str | os.PathLike, output: str | os.PathLike, parameters: dict[str, Any] | None = None,
                 log_output: bool = True) -> Path:
    """Execute `notebook` into `output` with papermill, injecting `parameters`."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    notebook, output = Path(notebook), Path(output)
    if not notebook.exists():
        raise AimfairError(f"notebook {notebook} does not exist: run from the repository root")
    output.parent.mkdir(parents=True, exist_ok=True)
    # the kernel inherits this: progress bars refresh every 30 s, as every refresh is a line in the log
    os.environ.setdefault("TQDM_MININTERVAL", "30")
    try:
        papermill.execute_notebook(str(notebook), str(output), parameters=parameters or {}, log_output=log_output,
                                   progress_bar=False)
    except PapermillExecutionError as error:
        if error.ename == "AimfairError":
            raise AimfairError(f"{error.evalue} (raised in {notebook.name}; see {output})") from None
        raise
    return output

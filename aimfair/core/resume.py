"""Resume states of long training runs (resume.pt): written atomically, read without running any code.

torch.load with weights_only=False unpickles whatever the file names, so a file planted in work/ would run
code when a run resumes. Here a resume state is read with weights_only=True: tensors, numbers, strings and
containers only (and collections.Counter, which MultiStepLR keeps its milestones in). A state that does not
read back (damaged, truncated, or holding anything else) is set aside with a notice, and the run starts over:
a resume state only saves time.
"""

from __future__ import annotations

import collections
import os
import pickle
from pathlib import Path
from typing import Any

import torch

from aimfair.core import io
from aimfair.core.errors import notice

_ALLOWED = [collections.Counter]


def save_resume_state(state: dict[str, Any], path: str | os.PathLike) -> None:
    """Write `state` to `path` in one step (a reader never sees half a file)."""
    with io.atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_resume_state(path: str | os.PathLike) -> dict[str, Any] | None:
    """The state in `path`, or None when there is none or it cannot be read safely (then it is removed)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        with torch.serialization.safe_globals(_ALLOWED):
            state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise ValueError(f"a {type(state).__name__}, not a mapping")
        return state
    except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError, OSError, AttributeError, KeyError) as e:
        reason = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        notice(f"ignoring the resume state {path} ({reason}): the run starts over")
        path.unlink(missing_ok=True)
        return None

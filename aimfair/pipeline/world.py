"""The built-in world: render tinyfaces into work/tinyfaces in CelebA's format (a DVC stage of its own).

DVC stages cannot be conditional, so the stage exists whatever `data.dataset` is; for a real dataset it
renders nothing and leaves a note in its output folder instead of spending 17-43 s on faces nobody reads.
"""

from __future__ import annotations

from pathlib import Path

from aimfair.config import Params
from aimfair.core import io, paths
from aimfair.data.tinyfaces import write_world

SKIPPED = "SKIPPED.txt"


def run_world(params: Params, root: Path, progress: bool = True) -> Path:
    """Render the world described by `data.tinyfaces` (only when it is the dataset); returns its folder."""
    out = root / paths.TINYFACES
    if params.data.dataset != "tinyfaces":
        io.write_text(out / SKIPPED, f"data.dataset is {params.data.dataset}: the built-in world is not rendered\n")
        return out
    (out / SKIPPED).unlink(missing_ok=True)
    return write_world(out, params.data.tinyfaces, progress=progress)

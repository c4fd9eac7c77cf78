"""The built-in world: render tinyfaces into work/tinyfaces in CelebA's format (a DVC stage of its own).

It runs whatever `data.dataset` is, so that the pipeline's outputs do not depend on a switch (DVC stages
cannot be conditional); it takes about 17 s and is cached by DVC like any other stage.
"""

from __future__ import annotations

from pathlib import Path

from aimfair import paths
from aimfair.config import Params
from aimfair.data.tinyfaces import write_world


def run_world(params: Params, root: Path, progress: bool = True) -> Path:
    """Render the world described by `data.tinyfaces`; returns its folder."""
    return write_world(root / paths.TINYFACES, params.data.tinyfaces, progress=progress)

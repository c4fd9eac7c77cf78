"""aimfair: AIM-Fair (CVPR 2025) as a Jupyter-first, DVC-driven research pipeline."""

__version__ = "0.1.0"

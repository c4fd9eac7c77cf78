"""(target, protected) group bookkeeping shared by every stage.

y is the target label, s the protected attribute, both 0/1; a group's key is "{y}_{s}".
"""

import numpy as np

GROUPS: tuple[str, ...] = ("0_0", "0_1", "1_0", "1_1")


def group_key(y: int, s: int) -> str:
    """The key of group (y, s), e.g. group_key(1, 0) == "1_0"."""
    return f"{int(y)}_{int(s)}"


def parse_group_key(key: str) -> tuple[int, int]:
    """Inverse of group_key: "1_0" -> (1, 0)."""
    y, s = key.split("_")
    return int(y), int(s)


def group_accuracies(y: np.ndarray, s: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Accuracy in percent within each (y, s) group of 0/1 arrays; NaN for a group without images."""
    out = {}
    for key in GROUPS:
        gy, gs = parse_group_key(key)
        mask = (y == gy) & (s == gs)
        out[key] = float(np.mean(pred[mask] == y[mask]) * 100.0) if mask.any() else float("nan")
    return out

"""(target, protected) group bookkeeping shared by every stage.

y is the target label, s the protected attribute, both 0/1; a group's key is "{y}_{s}".
"""

GROUPS: tuple[str, ...] = ("0_0", "0_1", "1_0", "1_1")


def group_key(y: int, s: int) -> str:
    """The key of group (y, s), e.g. group_key(1, 0) == "1_0"."""
    return f"{int(y)}_{int(s)}"


def parse_group_key(key: str) -> tuple[int, int]:
    """Inverse of group_key: "1_0" -> (1, 0)."""
    y, s = key.split("_")
    return int(y), int(s)

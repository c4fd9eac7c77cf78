"""The `file` backend: prompts written or edited by hand, a list per group, in JSON or YAML.

    {"0_0": ["Portrait face photo of a woman not smiling, wearing glasses.", ...], "0_1": [...], ...}

The prompts then go through the same validation as any backend's (aimfair.csdg.prompts.validate).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from aimfair.core.errors import AimfairError
from aimfair.core.groups import GROUPS

# YAML 1.1 reads unquoted group keys as numbers: 0_0 -> 0, 0_1 -> 1 (octal), 1_0 -> 10, 1_1 -> 11
_YAML_NUMBERS = {0: "0_0", 1: "0_1", 10: "1_0", 11: "1_1"}


def read_prompts_file(path: str | os.PathLike) -> dict[str, list]:
    """The prompts per group in a JSON (.json) or YAML file; every group must be there, and nothing else."""
    path = Path(path)
    if not path.is_file():
        raise AimfairError(f"prompts file {path} does not exist: write it ({{\"0_0\": [...], \"0_1\": [...], ...}}) "
                           "or fix prompts.file in params.yaml")
    text = path.read_text(encoding="utf-8")
    kind = "JSON" if path.suffix.lower() == ".json" else "YAML"
    try:
        data = json.loads(text) if kind == "JSON" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise AimfairError(f"prompts file {path} is not valid {kind}: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise AimfairError(f"prompts file {path} must map each group ({', '.join(GROUPS)}) to a list of prompts, "
                           f"got {type(data).__name__}")
    groups: dict[str, list] = {}
    for key, prompts in data.items():
        group = _YAML_NUMBERS.get(key, str(key)) if isinstance(key, int) and not isinstance(key, bool) else str(key)
        if group not in GROUPS:
            raise AimfairError(f"prompts file {path} has an unknown group {key!r}: the groups are "
                               f"{', '.join(GROUPS)} (key '{{y}}_{{s}}')")
        if not isinstance(prompts, list):
            raise AimfairError(f"group {group} in prompts file {path} must be a list of prompts, "
                               f"got {type(prompts).__name__}")
        groups[group] = prompts
    missing = [g for g in GROUPS if g not in groups]
    if missing:
        raise AimfairError(f"prompts file {path} has no prompts for group(s) {', '.join(missing)}: add a list of "
                           "prompts for every group (key '{y}_{s}': y the target value, s the protected value)")
    return {g: groups[g] for g in GROUPS}

"""Every strategy by name: Table 3's and Table 4's, listed explicitly (as DomainBed lists its algorithms), the
families of Table 4, and the ablations' variants, which register themselves when an ablation builds its arms.

The names a params file may hold are also in aimfair.config (TABLE3_STRATEGIES, TABLE4_STRATEGIES), so that
reading params.yaml imports no torch; tests/test_strategies.py keeps both lists equal.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from aimfair.core import paths
from aimfair.core.errors import AimfairError
from aimfair.strategies import table3, table4
from aimfair.strategies.base import Family, Strategy

STRATEGIES: dict[str, type[Strategy]] = {cls.name: cls for cls in (*table3.TABLE3, *table4.STRATEGIES)}
FAMILIES: dict[str, Family] = {}  # filled below
TABLE3 = tuple(cls.name for cls in table3.TABLE3)  # the strategies of stage finetune; the others run in experiments/


def to_train_beside_finetune(names: list[str], finetune_strategies: list[str], key: str) -> list[str]:
    """Of the strategies `names` (params key `key`) of an opt-in stage, those it trains itself: the others are
    stage finetune's, read from it, so each that trains must be in finetune.strategies."""
    missing = [name for name in names if name in TABLE3 and STRATEGIES[name].trains and name not in finetune_strategies]
    if missing:
        raise AimfairError(f"{key} names {missing[0]!r}, a strategy of stage finetune that finetune.strategies does "
                           f"not run: add it there (dvc repro trains it) or remove it from {key}")
    return [name for name in names if name not in TABLE3]


def register(cls: type[Strategy]) -> type[Strategy]:
    """Add a strategy made at run time (an ablation's arm) under its name."""
    if cls.name in FAMILIES or STRATEGIES.get(cls.name, cls) is not cls:
        raise AimfairError(f"strategy name {cls.name!r} is taken")
    STRATEGIES[cls.name] = cls
    return cls


def known_names() -> tuple[str, ...]:
    """Every name a list of strategies may hold: registered strategies and families."""
    return tuple(STRATEGIES) + tuple(FAMILIES)


def expand(names: list[str]) -> list[str]:
    """The strategies to run for `names`: a family stands for its variants."""
    out: list[str] = []
    for name in names:
        for strategy in FAMILIES[name].variants if name in FAMILIES else [name]:
            if strategy not in out:
                out.append(strategy)
    return out


def get_strategy(name: str) -> Strategy:
    """An instance of the registered strategy `name`."""
    if name not in STRATEGIES:
        hint = f" (a family: run its variants {', '.join(FAMILIES[name].variants)})" if name in FAMILIES else ""
        raise AimfairError(f"unknown strategy {name!r}{hint}: choose from {', '.join(known_names())}")
    return STRATEGIES[name]()


def run_dir(name: str, seed: int) -> Path:
    """Folder of one strategy's model for one seed, under the strategy's own runs folder."""
    if name not in STRATEGIES:
        get_strategy(name)  # the error that names the choices
    return STRATEGIES[name].runs_folder / name / f"seed_{seed}"


def validation_score(root: Path, name: str, seed: int, column: str = "val_acc") -> float:
    """A trained strategy's `column` of history.csv at the epoch it kept (val_acc: overall accuracy on real
    validation images; real_val_wst: their worst group's accuracy)."""
    out = root / run_dir(name, seed)
    sidecar = out / "best.json"
    if not sidecar.exists():
        raise AimfairError(f"no model of strategy {name} for seed {seed} at {out}: train it first")
    kept = json.loads(sidecar.read_text())
    if column == "val_acc":
        return float(kept["val_acc"])
    history = pd.read_csv(out / "history.csv")
    if column not in history:
        raise AimfairError(f"the run of {name} for seed {seed} in {out} has no {column} in its history: train it again")
    return float(history.loc[history["epoch"] == kept["epoch"], column].iloc[0])


def chosen_variant(root: Path, family: str, seed: int) -> str:
    """The family's variant with the best `chosen_by` for `seed` (the first of equals)."""
    variants, column = FAMILIES[family].variants, FAMILIES[family].chosen_by
    scores = [validation_score(root, v, seed, column) for v in variants]
    return variants[scores.index(max(scores))]


def register_family(family: Family) -> Family:
    """Add a family made at run time (a grid of hyper-parameters from params) under its name."""
    unknown = [v for v in family.variants if v not in STRATEGIES]
    if unknown or family.name in STRATEGIES:
        raise AimfairError(f"family {family.name!r}: its variants must be registered strategies and its name must "
                           f"not be one ({unknown or family.name})")
    FAMILIES[family.name] = family
    return family


def checkpoint_path(root: Path, name: str, seed: int) -> Path:
    """Where the model of strategy `name` for `seed` is (the baseline's is the biased model itself; a
    family's is its chosen variant's)."""
    if name in FAMILIES:
        name = chosen_variant(root, name, seed)
    if not get_strategy(name).trains:
        return root / paths.pretrain_dir(seed) / "best.safetensors"
    return root / run_dir(name, seed) / "best.safetensors"


for _family in table4.FAMILIES:
    register_family(_family)

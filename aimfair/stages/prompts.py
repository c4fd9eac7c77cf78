"""Stage 01_prompts: contextual prompts per group (CSDG), validated, with their diversity."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from aimfair import io, paths
from aimfair.config import Params
from aimfair.prompts.diversity import diversity
from aimfair.prompts.grammar import grammar_prompts
from aimfair.prompts.validate import check_prompts


@dataclass
class PromptSet:
    """The valid prompts per group, the rejected ones with reasons, and the diversity per group."""

    prompts: dict[str, list[str]]
    rejected: pd.DataFrame  # group, prompt, reason
    diversity: pd.DataFrame


def run_prompts(params: Params, root: Path) -> PromptSet:
    """Write work/prompts/prompts.json (+ rejected.csv, diversity.csv) for the setting in params."""
    p, d = params.prompts, params.data
    n = 1 if p.mode == "single" else p.n_per_group
    drafted = grammar_prompts(d.dataset, d.target, d.sensitive, n, seed=p.seed, mode=p.mode)
    checked = check_prompts(drafted, d.target, d.sensitive, n)
    result = PromptSet(prompts={g: v[:n] for g, v in checked.valid.items()},
                       rejected=pd.DataFrame(checked.rejected, columns=["group", "prompt", "reason"]),
                       diversity=diversity({g: v[:n] for g, v in checked.valid.items()}))
    out = root / paths.PROMPTS
    io.write_json(out / "prompts.json", dict(dataset=d.dataset, target=d.target, sensitive=d.sensitive,
                                             backend=p.backend, mode=p.mode, seed=p.seed, groups=result.prompts))
    io.write_csv(out / "rejected.csv", result.rejected)
    io.write_csv(out / "diversity.csv", result.diversity)
    return result

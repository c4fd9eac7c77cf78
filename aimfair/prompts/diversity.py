"""How varied a group's prompts are: distinct words and mean pairwise word-set (Jaccard) distance.

A lexical measure needing no model; the MiniLM-embedding distance of issue 3 is to follow.
"""

from __future__ import annotations

import itertools
import re

import pandas as pd

from aimfair.groups import GROUPS


def _words(prompt: str) -> set[str]:
    return set(re.findall(r"[a-z]+(?:-[a-z]+)?", prompt.lower()))


def diversity(prompts: dict[str, list[str]]) -> pd.DataFrame:
    """One row per group: prompts, distinct words, mean pairwise Jaccard distance of the word sets."""
    rows = []
    for group in GROUPS:
        sets = [_words(p) for p in prompts[group]]
        pairs = list(itertools.combinations(sets, 2))
        distance = sum(1 - len(a & b) / len(a | b) for a, b in pairs) / len(pairs) if pairs else 0.0
        rows.append(dict(group=group, prompts=len(sets), distinct_words=len(set().union(*sets)),
                         mean_jaccard_distance=round(distance, 4)))
    return pd.DataFrame(rows)

"""How varied a group's prompts are: distinct words, mean pairwise word-set (Jaccard) distance, and mean
pairwise cosine distance of their MiniLM sentence embeddings (the measure the report shows; it sees that "grinning"
and "smiling" say nearly the same, which word sets cannot)."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pandas as pd

from aimfair.core.groups import GROUPS


def _words(prompt: str) -> set[str]:
    return set(re.findall(r"[a-z]+(?:-[a-z]+)?", prompt.lower()))


def mean_cosine_distance(vectors: np.ndarray) -> float:
    """Mean cosine distance over all pairs of unit vectors; 0 for fewer than two.

    The sum over pairs i != j of v_i . v_j is |sum v|^2 - n (each |v_i|^2 is 1), so no n x n matrix.
    """
    n = len(vectors)
    if n < 2:
        return 0.0
    total = vectors.astype(np.float64).sum(axis=0)
    return max(0.0, float(1 - (total @ total - n) / (n * (n - 1))))  # rounding can dip below 0


def diversity(prompts: dict[str, list[str]], embeddings: bool = True) -> pd.DataFrame:
    """One row per group: prompts, distinct words, mean pairwise Jaccard distance of the word sets and
    (with `embeddings`) mean pairwise cosine distance of the MiniLM sentence embeddings."""
    if embeddings:
        from aimfair.csdg.text import sentence_embeddings

        everything = [p for g in GROUPS for p in prompts[g]]
        vectors = sentence_embeddings(everything) if everything else np.zeros((0, 384), np.float32)
        bounds = np.cumsum([0] + [len(prompts[g]) for g in GROUPS])  # one call for all groups: faster
    rows = []
    for i, group in enumerate(GROUPS):
        sets = [_words(p) for p in prompts[group]]
        pairs = list(itertools.combinations(sets, 2))
        distance = sum(1 - len(a & b) / len(a | b) for a, b in pairs) / len(pairs) if pairs else 0.0
        row = dict(group=group, prompts=len(sets), distinct_words=len(set().union(*sets)),
                   mean_jaccard_distance=round(distance, 4))
        if embeddings:
            row["mean_embedding_distance"] = round(mean_cosine_distance(vectors[bounds[i]:bounds[i + 1]]), 4)
        rows.append(row)
    return pd.DataFrame(rows)

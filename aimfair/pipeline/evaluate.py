"""Stage 07_evaluate: every strategy's fairness metrics per seed, aggregated over seeds; tables, metrics JSON."""

from __future__ import annotations

from pathlib import Path

from aimfair.config import Params
from aimfair.evaluation.evaluate import Evaluation, evaluate_strategies


def run_evaluate(params: Params, root: Path, progress: bool = True,
                 strategies: list[str] | None = None) -> Evaluation:
    """Evaluate every strategy (default: params.finetune.strategies) for every seed on evaluate.split.

    A family is evaluated as all its variants, then gets rows of its own (aimfair.evaluation.evaluate).
    """
    return evaluate_strategies(params, root, strategies or params.finetune.strategies, progress)



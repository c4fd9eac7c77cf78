"""The paper's ablations on the pipeline's setting, one knob each (experiments/dvc.yaml, stages ablation@<name>).

| ablation        | knob (params.yaml: ablations.<name>)              | what is trained per value and seed          |
|-----------------|---------------------------------------------------|---------------------------------------------|
| `prompts`       | one plain prompt, or the first n contextual ones  | a new model on synthetic data only (a pool  |
|                 | per group                                         | generated from those prompts)               |
| `top_k`         | k of the two rankings intersected                 | AIM-Fair with that mask                     |
| `amount`        | D_S2's size as a multiple of the real set's       | AIM-Fair on that much balanced data         |
| `skew`          | D_S1's minority:majority for the mask             | AIM-Fair with that mask                     |
| `real_fraction` | share of the real training set                    | the biased model, its mask and AIM-Fair     |
| `frozen_upto`   | the stages frozen from the input side             | the biased model fine-tuned above them      |
| `model_selection` | the rule that picks a fine-tuning run's epoch   | AIM-Fair, full_ft and linear_probe          |
|                 | (finetune.selection; its own stage, notebook 11)  | under that rule                             |

The pipeline's own value of each knob is read from stage finetune. `run_ablation(name, params, root)` does
the rest (aimfair.ablations.run).
"""

import importlib

from aimfair.ablations.base import ABLATIONS
from aimfair.ablations.run import AblationResult, get_ablation, run_ablation

for _module in ("prompts", "top_k", "amount", "skew", "real_fraction", "frozen_upto",
                "model_selection"):  # each registers itself
    importlib.import_module(f"aimfair.ablations.{_module}")

__all__ = ["ABLATIONS", "AblationResult", "get_ablation", "run_ablation"]

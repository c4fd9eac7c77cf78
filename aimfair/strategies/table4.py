"""The partial fine-tuning baselines of the paper's Table 4 (listed in aimfair.strategies.registry).

Each one fine-tunes the seed's biased model on the balanced synthetic set D_S2 with the fine-tuning settings
(section finetune), as `full_ft` and `aimfair` do; only the choice of trainable tensors differs:

| family                | variants (one run each per seed)       | trainable                                  |
|-----------------------|----------------------------------------|--------------------------------------------|
| random_selection      | draw_1, draw_2, draw_3                 | as many random tensors as AIM-Fair's mask  |
| subtuning_update_one  | layer1 ... layer4                      | one ResNet block and the final layer       |
| subtuning_freeze_one  | layer1 ... layer4                      | all but one ResNet block                   |
| aimfair_cosine        | (one run)                              | the mask from cosine distances (Table 4)   |

A family's result for a seed is its variant with the best overall validation accuracy on real data (no
group labels), as Sub-Tuning chooses its block; random_selection also reports the mean over its draws.
"Block" means one of ResNet-18's four stages (`layer1` ... `layer4`, two residual blocks each), the unit
Sub-Tuning (Kaplun et al., 2023) scans over.
"""

from __future__ import annotations

import numpy as np
from torch import nn

from aimfair.core import paths
from aimfair.selective.masks import Mask, freeze_except, load_mask
from aimfair.strategies.base import Family, Setting, Strategy
from aimfair.strategies.table3 import AimFair

BLOCKS = ("layer1", "layer2", "layer3", "layer4")
RANDOM_DRAWS = 3


def _tensors_of(model: nn.Module, block: str) -> list[str]:
    return [name for name, _ in model.named_parameters() if name.startswith(block + ".")]


class PartialStrategy(Strategy):
    """Runs under work/partial/: stage table4's output, apart from stage finetune's."""

    runs_folder = paths.PARTIAL


class RandomSelection(PartialStrategy):
    """As many tensors as the seed's AIM-Fair mask, drawn at random (a different draw per variant)."""

    draw: int

    def restrict(self, model: nn.Module, setting: Setting) -> None:
        n = len(setting.mask(model).tensors)
        names = [name for name, _ in model.named_parameters()]
        rng = np.random.default_rng([setting.seed, self.draw])  # the same tensors on every machine
        freeze_except(model, [names[i] for i in sorted(rng.choice(len(names), size=n, replace=False))])


class SubTuningUpdateOne(PartialStrategy):
    """Only one ResNet block (and the final layer) fine-tuned."""

    block: str

    def restrict(self, model: nn.Module, setting: Setting) -> None:
        freeze_except(model, _tensors_of(model, self.block) + ["fc.weight", "fc.bias"])


class SubTuningFreezeOne(PartialStrategy):
    """Everything fine-tuned except one ResNet block."""

    block: str

    def restrict(self, model: nn.Module, setting: Setting) -> None:
        frozen = set(_tensors_of(model, self.block))
        freeze_except(model, [name for name, _ in model.named_parameters() if name not in frozen])


class AimFairCosine(AimFair):
    name = "aimfair_cosine"
    runs_folder = paths.PARTIAL
    summary = "AIM-Fair with the mask from cosine distances of the gradients (Table 4)"

    def mask(self, model: nn.Module, setting: Setting) -> Mask:
        path = setting.root / paths.cosine_mask_dir(setting.seed) / "mask.json"  # written by stage mask
        return load_mask(path, model, setting.params.pretrain.arch)


def _variant(base: type[Strategy], family: str, tag: str, summary: str, **attributes) -> type[Strategy]:
    """The variant `<family>-<tag>` of a family: a subclass of `base` with the given attributes."""
    return type(f"{base.__name__}_{tag}", (base,), dict(name=f"{family}-{tag}", summary=summary, **attributes))


RANDOM_VARIANTS = [_variant(RandomSelection, "random_selection", f"draw_{d}", f"random tensors, draw {d}", draw=d)
                   for d in range(1, RANDOM_DRAWS + 1)]
UPDATE_ONE_VARIANTS = [_variant(SubTuningUpdateOne, "subtuning_update_one", b, f"only {b} and fc", block=b)
                       for b in BLOCKS]
FREEZE_ONE_VARIANTS = [_variant(SubTuningFreezeOne, "subtuning_freeze_one", b, f"all but {b}", block=b)
                       for b in BLOCKS]
STRATEGIES = [AimFairCosine, *RANDOM_VARIANTS, *UPDATE_ONE_VARIANTS, *FREEZE_ONE_VARIANTS]


def _names(variants: list[type[Strategy]]) -> tuple[str, ...]:
    return tuple(cls.name for cls in variants)


FAMILIES = [
    Family("random_selection", "as many random tensors as AIM-Fair's mask; best of the draws by validation accuracy",
           _names(RANDOM_VARIANTS), report_mean=True),
    Family("subtuning_update_one", "Sub-Tuning: one ResNet block and the final layer, the block chosen by validation "
           "accuracy", _names(UPDATE_ONE_VARIANTS)),
    Family("subtuning_freeze_one", "Sub-Tuning: all but one ResNet block, the block chosen by validation accuracy",
           _names(FREEZE_ONE_VARIANTS)),
]

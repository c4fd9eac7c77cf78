"""The partial fine-tuning baselines of the paper's Table 4, registered into aimfair.strategies.

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

from aimfair import paths
from aimfair.selection import Mask, freeze_except, load_mask
from aimfair.strategies import FAMILIES, AimFair, Setting, Strategy, register, register_family

BLOCKS = ("layer1", "layer2", "layer3", "layer4")
RANDOM_DRAWS = 3


def _tensors_of(model: nn.Module, block: str) -> list[str]:
    return [name for name, _ in model.named_parameters() if name.startswith(block + ".")]


class RandomSelection(Strategy):
    """As many tensors as the seed's AIM-Fair mask, drawn at random (a different draw per variant)."""

    draw: int

    def restrict(self, model: nn.Module, setting: Setting) -> None:
        n = len(setting.mask(model).tensors)
        names = [name for name, _ in model.named_parameters()]
        rng = np.random.default_rng([setting.seed, self.draw])  # the same tensors on every machine
        freeze_except(model, [names[i] for i in sorted(rng.choice(len(names), size=n, replace=False))])


class SubTuningUpdateOne(Strategy):
    """Only one ResNet block (and the final layer) fine-tuned."""

    block: str

    def restrict(self, model: nn.Module, setting: Setting) -> None:
        freeze_except(model, _tensors_of(model, self.block) + ["fc.weight", "fc.bias"])


class SubTuningFreezeOne(Strategy):
    """Everything fine-tuned except one ResNet block."""

    block: str

    def restrict(self, model: nn.Module, setting: Setting) -> None:
        frozen = set(_tensors_of(model, self.block))
        freeze_except(model, [name for name, _ in model.named_parameters() if name not in frozen])


@register
class AimFairCosine(AimFair):
    name = "aimfair_cosine"
    summary = "AIM-Fair with the mask from cosine distances of the gradients (Table 4)"

    def mask(self, model: nn.Module, setting: Setting) -> Mask:
        path = setting.root / paths.cosine_mask_dir(setting.seed) / "mask.json"  # written by stage mask
        return load_mask(path, model, setting.params.pretrain.arch)


def _variant(base: type[Strategy], name: str, summary: str, **attributes) -> str:
    """Register the variant `name` of a family: a subclass of `base` with the given attributes."""
    register(type(f"{base.__name__}_{name.rsplit('-', 1)[1]}", (base,), dict(name=name, summary=summary, **attributes)))
    return name


register_family("random_selection", "as many random tensors as AIM-Fair's mask; best of the draws by "
                "validation accuracy", [
                    _variant(RandomSelection, f"random_selection-draw_{d}", f"random tensors, draw {d}", draw=d)
                    for d in range(1, RANDOM_DRAWS + 1)], report_mean=True)
register_family("subtuning_update_one", "Sub-Tuning: one ResNet block and the final layer, the block chosen by "
                "validation accuracy", [
                    _variant(SubTuningUpdateOne, f"subtuning_update_one-{b}", f"only {b} and fc", block=b)
                    for b in BLOCKS])
register_family("subtuning_freeze_one", "Sub-Tuning: all but one ResNet block, the block chosen by validation "
                "accuracy", [
                    _variant(SubTuningFreezeOne, f"subtuning_freeze_one-{b}", f"all but {b}", block=b)
                    for b in BLOCKS])

for _name in ("aimfair_cosine",) + tuple(v for f in ("random_selection", "subtuning_update_one", "subtuning_freeze_one")
                                         for v in FAMILIES[f].variants):
    paths.place_runs(_name, paths.PARTIAL)  # stage table4's output, apart from stage finetune's

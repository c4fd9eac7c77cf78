"""The training strategies of the paper's Table 3, one small class each (as DomainBed's algorithms).

| name            | starts from  | trains on                     | trainable             |
|-----------------|--------------|-------------------------------|-----------------------|
| baseline        | biased model | (nothing: evaluated as is)    | -                     |
| synthetic_only  | new model    | D_S2 (balanced synthetic)     | all                   |
| supplementation | new model    | D_R + D_S2                    | all                   |
| repairing       | new model    | D_R + edited real images      | all                   |
| linear_probe    | biased model | D_S2                          | the final layer       |
| full_ft         | biased model | D_S2                          | all                   |
| aimfair         | biased model | D_S2                          | the selective mask    |
"""

from __future__ import annotations

import torch
from torch import nn

from aimfair.data.loading import ImageSet, concat_image_sets
from aimfair.selective.masks import Mask, freeze_except
from aimfair.strategies.base import Setting, Strategy


class Baseline(Strategy):
    name, summary, trains = "baseline", "the biased model as it is", False


class SyntheticOnly(Strategy):
    name, summary, from_biased = "synthetic_only", "a new model trained on balanced synthetic data only", False


class Supplementation(Strategy):
    name, summary, from_biased = "supplementation", "a new model trained on real + balanced synthetic data", False

    def training_set(self, setting: Setting) -> ImageSet:
        return concat_image_sets(setting.real_train, setting.synthetic["balanced"])


class Repairing(Strategy):
    name, summary, from_biased = "repairing", "a new model trained on real data balanced with edited real images", False

    def training_set(self, setting: Setting) -> ImageSet:
        return concat_image_sets(setting.real_train, setting.repaired)


class LinearProbe(Strategy):
    name, summary = "linear_probe", "the biased model's final layer fine-tuned on balanced synthetic data"

    def restrict(self, model: nn.Module, setting: Setting) -> None:
        freeze_except(model, ["fc.weight", "fc.bias"])


class FullFineTuning(Strategy):
    name, summary = "full_ft", "every parameter of the biased model fine-tuned on balanced synthetic data"


class AimFair(Strategy):
    name, summary = "aimfair", "only the selected parameters of the biased model fine-tuned on balanced synthetic data"

    def mask(self, model: nn.Module, setting: Setting) -> Mask:
        return setting.mask(model)

    def restrict(self, model: nn.Module, setting: Setting) -> dict[str, torch.Tensor] | None:
        mask = self.mask(model, setting)
        freeze_except(model, mask.tensors)
        return mask.elements


TABLE3 = (Baseline, SyntheticOnly, Supplementation, Repairing, LinearProbe, FullFineTuning, AimFair)  # the table's order

"""Layer-wise freezing: fine-tune the biased model with its first stages frozen, from the input side."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from aimfair.ablations.base import Ablation, Arm, register_ablation
from aimfair.config import ABLATION_FREEZE_POINTS, Params
from aimfair.selective.masks import freeze_except
from aimfair.strategies.base import Setting, Strategy

_STAGE_PREFIXES = {"conv1": ("conv1.", "bn1."), "layer1": ("layer1.",), "layer2": ("layer2.",),
                   "layer3": ("layer3.",), "layer4": ("layer4.",)}  # "conv1": the stem, convolution and its norm


class FreezeUpTo(Strategy):
    """Everything from the input up to and including stage `upto` frozen; the rest (always fc) fine-tuned."""

    upto: str

    def restrict(self, model: nn.Module, setting: Setting) -> None:
        frozen = tuple(p for point in ABLATION_FREEZE_POINTS[:ABLATION_FREEZE_POINTS.index(self.upto) + 1]
                       for p in _STAGE_PREFIXES[point])
        freeze_except(model, [name for name, _ in model.named_parameters() if not name.startswith(frozen)])


@register_ablation
class FrozenUpTo(Ablation):
    name = "frozen_upto"
    title = "Layer-wise freezing: the first stages of the biased model frozen, the rest fine-tuned"
    knob = "frozen from the input up to"
    paper_direction = ("the paper's per-layer figure: which layers are updated matters, and no fixed cut matches "
                       "the selective mask")

    def arms(self, params: Params, root: Path) -> list[Arm]:
        arms = [Arm("nothing frozen (full_ft)", "none", "full_ft", series="frozen up to", reference=True)]
        for point in ABLATION_FREEZE_POINTS:
            if point == "layer4" and point in params.ablations.frozen_upto and "linear_probe" in params.finetune.strategies:
                # only fc moves: linear probing, the same run, which stage finetune has
                arms.append(Arm("frozen up to layer4 (linear_probe)", point, "linear_probe", series="frozen up to",
                                reference=True))
            elif point in params.ablations.frozen_upto:
                arms.append(Arm(f"frozen up to {point}", point,
                                self.variant(FreezeUpTo, point, f"fine-tuned with the stages up to {point} frozen",
                                             upto=point), series="frozen up to"))
        arms.append(Arm("AIM-Fair's mask (pipeline)", "mask", "aimfair", reference=True))
        return arms

    def pairs(self, arms: list[Arm]) -> list[tuple[str, str]]:
        """Every fixed cut against AIM-Fair's mask: the paper's question is whether any of them matches it."""
        mask = next(arm.label for arm in arms if arm.value == "mask")
        return [(arm.label, mask) for arm in arms if arm.label != mask]

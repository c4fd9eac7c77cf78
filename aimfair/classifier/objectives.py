"""Training objectives other than plain ERM, for fit(objective=...).

GroupDRO (Sagawa et al., 2020, their online algorithm): the loss of a batch is the weighted sum of its groups'
mean losses, sum_g q_g L_g. Before each step the weights move towards the groups that do worst,
q_g <- q_g exp(eta L_g), then q is normalised; a group absent from the batch keeps its weight. It needs the
training images' group labels (y, s).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from aimfair.core.groups import GROUPS


def group_index(y: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """The position of each image's (y, s) group in GROUPS ("0_0", "0_1", "1_0", "1_1")."""
    return 2 * y.long() + s.long()


class GroupDRO:
    """The GroupDRO loss with its group weights q, which a resumed run restores (state_dict)."""

    def __init__(self, step: float) -> None:
        self.step = step
        self.q = torch.full((len(GROUPS),), 1.0 / len(GROUPS))

    def describe(self) -> dict:
        """What makes this objective what it is, for run records (a resumed run must use the same)."""
        return dict(objective="group_dro", step=self.step)

    def __call__(self, logits: torch.Tensor, y: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        losses = F.binary_cross_entropy_with_logits(logits, y.float(), reduction="none")
        index = group_index(y, s)
        counts = torch.zeros(len(GROUPS), device=logits.device).index_add_(0, index, torch.ones_like(losses))
        sums = torch.zeros(len(GROUPS), device=logits.device).index_add_(0, index, losses)
        group_loss = sums / counts.clamp(min=1)
        q = self.q.to(logits.device) * torch.exp(self.step * group_loss.detach() * (counts > 0))
        self.q = (q / q.sum()).cpu()
        return (self.q.to(logits.device) * group_loss).sum()

    def state_dict(self) -> dict:
        return dict(q=self.q.clone())

    def load_state_dict(self, state: dict) -> None:
        self.q = state["q"].clone().float()

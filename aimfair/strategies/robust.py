"""Group-robustness baselines on the real training set D_R (experiments/dvc.yaml, stage robust).

Each one trains a new model on the real images only, from the same initial weights as the seed's biased model,
with section pretrain's settings and (finetune.new_model_budget "steps") the biased model's number of SGD steps,
so that it differs from the biased model (ERM) only in how it weighs the real images:

| name             | group labels of D_R | how                                                                   |
|------------------|---------------------|-----------------------------------------------------------------------|
| `group_balanced` | yes                 | every group repeated up to the largest group's size (resampling)      |
| `group_dro`      | yes                 | GroupDRO (Sagawa et al., 2020): the worst groups' losses weigh more,  |
|                  |                     | on group-balanced batches as its authors run it                       |
| `jtt`            | no (only to tune)   | JTT (Liu et al., 2021): ERM for T epochs, then its errors λ_up times  |

JTT is a family: one variant per (T, λ_up) of section robust, registered by `register_jtt(params)`. Per seed the
variant with the best worst-group accuracy on the real validation images is reported, as JTT's authors tune
it; that needs the validation set's group labels, not the training set's.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from aimfair.classifier.models import build_classifier, load_checkpoint
from aimfair.classifier.objectives import GroupDRO
from aimfair.classifier.train import predict_proba
from aimfair.config import Params, TrainConfig
from aimfair.core import paths
from aimfair.core.groups import GROUPS, parse_group_key
from aimfair.data.loading import ImageSet
from aimfair.strategies.base import Family, Setting, Strategy
from aimfair.strategies.registry import STRATEGIES, register, register_family


def subset(images: ImageSet, index: np.ndarray) -> ImageSet:
    """The images at `index`, in that order (an index may repeat: that image is then seen more often)."""
    return ImageSet(pixels=images.pixels[index], y=images.y[index], s=images.s[index],
                    image_ids=[images.image_ids[i] for i in index])


def balanced_index(y: np.ndarray, s: np.ndarray, seed: int) -> np.ndarray:
    """Every image once, and each group's images again until the group is as large as the largest one: whole
    copies, then a seeded draw without replacement for the rest. Sorted, so the order is the set's."""
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero((y == gy) & (s == gs)) for gy, gs in map(parse_group_key, GROUPS)]
    largest = max(len(m) for m in members)
    index = []
    for m in members:
        if len(m) == 0:
            continue
        copies, rest = divmod(largest, len(m))
        index += [np.tile(m, copies), rng.choice(m, size=rest, replace=False)]
    return np.sort(np.concatenate(index))


def upweighted_index(n: int, errors: np.ndarray, upweight: int) -> np.ndarray:
    """Every image once and each of `errors` (indices) upweight - 1 times more: JTT's retraining set."""
    return np.sort(np.concatenate([np.arange(n), np.repeat(errors, upweight - 1)]))


class RobustStrategy(Strategy):
    """A new model on D_R; runs under work/robust/, stage robust's output."""

    from_biased = False
    runs_folder = paths.ROBUST

    def training_set(self, setting: Setting) -> ImageSet:
        return setting.real_train


class GroupBalanced(RobustStrategy):
    name, summary = "group_balanced", "a new model on the real images, each group resampled to the largest's size"

    def training_set(self, setting: Setting) -> ImageSet:
        real = setting.real_train
        return subset(real, balanced_index(real.y, real.s, setting.seed))


class GroupDro(GroupBalanced):
    """GroupDRO as its authors run it: the GroupDRO loss on group_balanced's set, so that every group is
    equally frequent in the batches (their `--reweight_groups`). On the natural skew the loss alone gives each
    minority image many times a majority image's weight in a few images per batch, and training does not
    get past chance (docs/robust.md)."""

    name, summary = "group_dro", "a new model on the real images, each group resampled, with the GroupDRO loss"

    def objective(self, setting: Setting) -> GroupDRO:
        return GroupDRO(setting.params.robust.dro_step)


class JttIdentification(RobustStrategy):
    """JTT's first model: ERM on D_R for `epochs` epochs (section pretrain's learning rate, no decay)."""

    epochs: int

    def config(self, setting: Setting) -> TrainConfig:
        cfg = setting.params.pretrain.train_config(setting.seed)
        return dataclasses.replace(cfg, epochs=self.epochs, milestones=[])

    def errors(self, setting: Setting) -> np.ndarray:
        """The indices of D_R that this model gets wrong (trained first when it is not)."""
        from aimfair.strategies.runner import run_locked  # the runner imports the strategies: import it late

        result = run_locked(self.name, setting)
        model = build_classifier(setting.params.pretrain.arch, "none")
        load_checkpoint(model, result.checkpoint)
        real = setting.real_train
        predicted = predict_proba(model, real, setting.device, precision=self.config(setting).precision) >= 0.5
        return np.flatnonzero(predicted != real.y.astype(bool))


class Jtt(RobustStrategy):
    """JTT's final model: a new model on D_R with the identification model's errors `upweight` times."""

    identification: str  # the registered JttIdentification that finds the errors
    upweight: int

    def training_set(self, setting: Setting) -> ImageSet:
        errors = STRATEGIES[self.identification]().errors(setting)
        real = setting.real_train
        return subset(real, upweighted_index(len(real), errors, self.upweight))


def register_jtt(params: Params) -> Family:
    """The JTT family for section robust's grid: its identification runs and variants, registered once."""
    variants = []
    for epochs in params.robust.jtt_epochs:
        identification = f"jtt_identify-T{epochs}"
        if identification not in STRATEGIES:
            register(type(f"JttIdentification_T{epochs}", (JttIdentification,),
                          dict(name=identification, epochs=epochs,
                               summary=f"JTT: ERM on the real images for {epochs} epoch(s), to find its errors")))
        for upweight in params.robust.jtt_upweight:
            name = f"jtt-T{epochs}_up{upweight}"
            if name not in STRATEGIES:
                register(type(f"Jtt_T{epochs}_up{upweight}", (Jtt,),
                              dict(name=name, identification=identification, upweight=upweight,
                                   summary=f"JTT: the errors of {epochs} epoch(s) of ERM {upweight} times")))
            variants.append(name)
    return register_family(Family("jtt", "JTT: ERM's training errors upweighted; (T, λ_up) chosen per seed by "
                                  "worst-group accuracy on the real validation images", tuple(variants),
                                  chosen_by="real_val_wst"))


ROBUST = (GroupBalanced, GroupDro)  # jtt's classes come from register_jtt
for _cls in ROBUST:
    register(_cls)

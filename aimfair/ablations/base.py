"""What every ablation shares: arms (one per value of the knob), their settings, training, evaluation, reports.

An ablation turns one knob of the pipeline's setting. Each value is an *arm*: a registered strategy (a renamed
copy of synthetic_only, aimfair, ...) whose runs live in work/ablations/<ablation>/, trained for each seed
with an AblationSetting that swaps in the arm's mask, biased model, pool, set sizes or share of real data.
The pipeline's own value is read from stage finetune (a *reference* arm), not trained again. Runs go through
strategies.run_strategy, so a rerun reuses every run whose settings and data are unchanged.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from aimfair.config import Params
from aimfair.core import paths
from aimfair.core.errors import AimfairError
from aimfair.core.groups import GROUPS, parse_group_key
from aimfair.csdg.pool import read_manifest
from aimfair.csdg.synthetic import as_image_set, draw_sets, usable_pool
from aimfair.data.images import load_images
from aimfair.data.loading import ImageSet
from aimfair.selective.masks import Mask, load_mask
from aimfair.strategies.base import SELECTION_COLUMNS, Setting, Strategy
from aimfair.strategies.registry import STRATEGIES, register


def first_share(images: ImageSet, fraction: float) -> ImageSet:
    """The first `fraction` of each group's images, in split order (as the biased split is filled): the skew
    of the set is kept."""
    keep = np.zeros(len(images), dtype=bool)
    for y, s in map(parse_group_key, GROUPS):
        members = np.flatnonzero((images.y == y) & (images.s == s))
        keep[members[:max(1, round(fraction * len(members)))]] = True
    index = np.flatnonzero(keep)
    return ImageSet(pixels=images.pixels[index], y=images.y[index], s=images.s[index],
                    image_ids=[images.image_ids[i] for i in index])


@dataclass
class AblationSetting(Setting):
    """A seed's setting with one knob turned: each field, when set, replaces what the pipeline uses."""

    mask_file: Path | None = None  # the selective mask (relative to the root)
    biased_file: Path | None = None  # the biased model to fine-tune (relative to the root)
    pool: Path | None = None  # the pool that D_S2 and D_S1 are drawn from (relative to the root)
    balanced_per_group: int = 0  # D_S2's images per group; 0 = synthetic.balanced_per_group
    biased_skew: str = ""  # D_S1's skew; "" = the pipeline's
    real_fraction: float = 1.0  # D_R: this share of each group of the real training split
    selection: str = ""  # the rule by which a fine-tuning run picks its epoch; "" = finetune.selection
    validation_pool: Path | None = None  # a pool whose images are the synthetic validation set (relative to the root)

    @property
    def biased_checkpoint(self) -> Path:
        if self.biased_file is None:
            return super().biased_checkpoint
        path = self.root / self.biased_file
        if not path.exists():
            raise AimfairError(f"no biased model at {path}: the ablation trains it first; run the stage again")
        return path

    @cached_property
    def real_train(self) -> ImageSet:
        images = load_images(self.params, self.root, "train", self.size, self.progress)
        return first_share(images, self.real_fraction) if self.real_fraction < 1 else images

    @cached_property
    def synthetic(self) -> dict[str, ImageSet]:
        s, folder = self.params.synthetic, self.root / (self.pool or paths.POOL)
        manifest = usable_pool(self.params, self.root) if self.pool is None else read_manifest(folder)
        sets = draw_sets(manifest, self.balanced_per_group or s.balanced_per_group, s.biased_size,
                         self.biased_skew or s.biased_skew or self.params.data.bias_degree)
        return {name: as_image_set(folder, rows, self.size, self.root / paths.CACHE, self.progress)
                for name, rows in sets.items()}

    @cached_property
    def monitors(self) -> dict[str, ImageSet]:
        """The pipeline's, or the real validation images and the validation pool's images."""
        if self.validation_pool is None:
            return super().monitors
        folder = self.root / self.validation_pool
        return {"real_val": self.val, "synthetic_val": as_image_set(folder, read_manifest(folder), self.size,
                                                                    self.root / paths.CACHE, self.progress)}

    @property
    def select(self) -> str:
        return SELECTION_COLUMNS[self.selection] if self.selection else super().select

    def mask(self, model: torch.nn.Module) -> Mask:
        if self.mask_file is None:
            return super().mask(model)
        return load_mask(self.root / self.mask_file, model, self.params.pretrain.arch)


@dataclass(frozen=True)
class Arm:
    """One row of an ablation's table: a value of the knob, for one kind of model."""

    label: str  # the table's row name, e.g. "k=45"
    value: str  # the knob's value on the figure's axis, e.g. "45"
    strategy: str  # the registered strategy that trains it (or stage finetune's, for a reference arm)
    series: str = "AIM-Fair"  # the figure's line
    reference: bool = False  # the pipeline's own value: stage finetune's model, not trained here
    setting: dict = field(default_factory=dict)  # AblationSetting fields; a callable value is called with the seed

    def setting_for(self, params: Params, root: Path, seed: int, device: torch.device,
                    progress: bool) -> AblationSetting:
        fields = {k: v(seed) if callable(v) else v for k, v in self.setting.items()}
        return AblationSetting(params, root, seed, device, progress, **fields)


class Ablation:
    """One knob. Subclasses name it, list its arms and prepare what the arms need (masks, pools, models)."""

    name: ClassVar[str]
    title: ClassVar[str]
    knob: ClassVar[str]  # the figure's x axis
    paper_direction: ClassVar[str]  # what the paper found, in words

    def arms(self, params: Params, root: Path) -> list[Arm]:
        raise NotImplementedError

    def prepare(self, params: Params, root: Path, seeds: list[int], device: torch.device, progress: bool) -> None:
        """Make what the arms read before any is trained; the default needs nothing."""

    def pairs(self, arms: list[Arm]) -> list[tuple[str, str]]:
        """The table's paired comparisons, (arm, reference arm) by label: by default every arm against the
        pipeline's own value of its series (the first reference arm of that series)."""
        references: dict[str, str] = {}
        for arm in arms:
            if arm.reference:
                references.setdefault(arm.series, arm.label)
        return [(arm.label, references[arm.series]) for arm in arms
                if arm.series in references and arm.label != references[arm.series]]

    @property
    def folder(self) -> Path:
        return paths.ABLATIONS / self.name

    def variant(self, base: type[Strategy], tag: str, summary: str, **attributes) -> str:
        """Register (once) the strategy `ablation_<name>-<tag>`, a copy of `base` whose runs live in this
        ablation's folder; returns its name."""
        name = f"ablation_{self.name}-{tag}"
        if name not in STRATEGIES:
            register(type(f"{base.__name__}_{self.name}_{tag}".replace(".", "_"), (base,),
                          dict(name=name, summary=summary, runs_folder=self.folder, **attributes)))
        return name


ABLATIONS: dict[str, type[Ablation]] = {}


def register_ablation(cls: type[Ablation]) -> type[Ablation]:
    ABLATIONS[cls.name] = cls
    return cls


def values_key(value: float) -> str:
    """A number as a short, folder-safe tag: 0.5 -> "0.5", 1.0 -> "1"."""
    return f"{value:g}"


def replace_seeds(params: Params, seeds: list[int]) -> Params:
    """`params` for the ablation's seeds (a table's header counts them)."""
    return dataclasses.replace(params, seeds=list(seeds))

"""What every strategy is made of: the seed's Setting (what it may draw on) and the Strategy interface.

Every strategy answers the same three questions for a seed:
  * where does the model start: the seed's biased model, or a new one with the same initial weights as it;
  * which images does it train on (real, balanced synthetic, both, or real plus repaired);
  * which parameters may move (all, the last layer, or the selective mask).
aimfair.strategies.runner does the rest, identically for all. A Family groups several runs of one idea.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from aimfair.classifier.objectives import GroupDRO
from aimfair.config import Params, TrainConfig
from aimfair.core import paths
from aimfair.core.errors import AimfairError
from aimfair.csdg.repair import repaired_images
from aimfair.csdg.synthetic import synthetic_image_sets
from aimfair.data.images import load_images
from aimfair.data.loading import ImageSet
from aimfair.selective.masks import Mask, load_mask

# finetune.selection -> the column of fit's history whose best epoch a run keeps (Setting.monitors' names)
SELECTION_COLUMNS = {"real_val_acc": "val_acc", "real_val_worst": "real_val_wst",
                     "synthetic_val_worst": "synthetic_val_wst"}


@dataclass
class Setting:
    """What a strategy may draw on for one seed. Image sets load on first use, then stay in memory."""

    params: Params
    root: Path
    seed: int
    device: torch.device
    progress: bool = True

    @property
    def size(self) -> int:
        return self.params.pretrain.input_size

    @property
    def biased_checkpoint(self) -> Path:
        path = self.root / paths.pretrain_dir(self.seed) / "best.safetensors"
        if not path.exists():
            raise AimfairError(f"no biased model for seed {self.seed} at {path}: run the pretrain stage first")
        return path

    @cached_property
    def real_train(self) -> ImageSet:  # D_R
        return load_images(self.params, self.root, "train", self.size, self.progress)

    @cached_property
    def val(self) -> ImageSet:
        return load_images(self.params, self.root, "val", self.size, self.progress)

    @cached_property
    def synthetic(self) -> dict[str, ImageSet]:  # {"balanced": D_S2, "biased": D_S1} (+ "validation")
        return synthetic_image_sets(self.params, self.root, self.size, self.progress)

    @cached_property
    def monitors(self) -> dict[str, ImageSet]:
        """What a fine-tuning run scores per group after every epoch: the real validation images, and the
        balanced synthetic validation set when synthetic.val_per_group asks for one."""
        sets = {"real_val": self.val}
        if self.params.synthetic.val_per_group:
            sets["synthetic_val"] = self.synthetic["validation"]
        return sets

    @property
    def select(self) -> str:
        """The history column whose best epoch a fine-tuning run keeps (finetune.selection)."""
        return SELECTION_COLUMNS[self.params.finetune.selection]

    @cached_property
    def repaired(self) -> ImageSet:
        return repaired_images(self.root, self.size, self.progress)

    def mask(self, model: nn.Module) -> Mask:
        return load_mask(self.root / paths.mask_dir(self.seed) / "mask.json", model, self.params.pretrain.arch)


class Strategy:
    """A way to obtain a (hopefully fairer) classifier; subclasses set the class attributes and override."""

    name: ClassVar[str]
    summary: ClassVar[str]
    trains: ClassVar[bool] = True
    from_biased: ClassVar[bool] = True  # start from the seed's biased model (else: a new one, same init)
    runs_folder: ClassVar[Path] = paths.FINETUNE  # its runs: <runs_folder>/<name>/seed_<seed>/ (one DVC stage's output)

    def training_set(self, setting: Setting) -> ImageSet:
        return setting.synthetic["balanced"]

    def restrict(self, model: nn.Module, setting: Setting) -> dict[str, torch.Tensor] | None:
        """Freeze what must not move; return entry masks ({name: bool tensor}) when only parts of tensors
        may. The default trains everything."""
        return None

    def objective(self, setting: Setting) -> GroupDRO | None:
        """The training loss, when it is not the mean BCE (ERM)."""
        return None

    def config(self, setting: Setting) -> TrainConfig:
        p = setting.params
        if self.from_biased:
            return p.finetune.train_config(p.pretrain, setting.seed)
        return p.finetune.new_model_config(p.pretrain, setting.seed, len(setting.real_train),
                                           len(self.training_set(setting)))


@dataclass(frozen=True)
class Family:
    """Several runs per seed of one idea (random draws, one run per block, a grid of hyper-parameters), reported
    as the run with the best `chosen_by` on the real validation images (by default overall accuracy, which needs
    no group labels), and with `report_mean`, their mean too."""

    name: str
    summary: str
    variants: tuple[str, ...]  # registered strategy names
    report_mean: bool = False
    chosen_by: str = "val_acc"  # a column of the runs' history.csv, at the epoch each run kept

    @property
    def mean_name(self) -> str:
        return f"{self.name}_mean"

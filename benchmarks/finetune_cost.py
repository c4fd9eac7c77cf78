"""What selective mask generation and selective fine-tuning cost, on the default pipeline's own files.

* mask generation (three gradient passes: D_R, D_S1, D_S2, always in float32) as the mask stage runs it
  (stages.mask.set_gradients: the convolutions of layer3's 2x2 and layer4's 1x1 maps as matrix products,
  aimfair.classifier.small_maps) and as it ran before (models.SmallMapConv2d, as training runs), against one training
  epoch over the three sets together (the issue's budget: no more than that), in the pipeline's training
  precision and in float32;
* what aimfair.classifier.small_maps would gain training: the same training epoch with it;
* seconds per fine-tuning epoch on D_S2 when all tensors train (full_ft), only the mask (aimfair), only the
  final layer (linear_probe): frozen tensors get no gradient, so the backward pass stops early.

All timings come from one run, alternating the variants `--repeats` times and keeping each one's median, so
the ratios are fair on a shared machine. Needs the outputs of `dvc repro` up to the mask stage. Run from the
repository root:

    PATH=$PWD/.venv/bin:$PATH python benchmarks/finetune_cost.py --json docs/finetune_cost.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from aimfair.classifier.models import build_classifier, load_checkpoint
from aimfair.classifier.small_maps import whole_map_matmuls
from aimfair.classifier.train import fit
from aimfair.config import load_params
from aimfair.core import paths
from aimfair.core.device import setup_torch
from aimfair.data.loading import concat_image_sets
from aimfair.selective.gradients import mean_gradients, set_gradients
from aimfair.selective.masks import freeze_except, load_mask
from aimfair.strategies.base import Setting


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args()
    params = load_params(args.params)
    root = paths.repo_root()
    seed = params.seeds[0]
    device = setup_torch(params.pretrain.threads, params.pretrain.device)
    setting = Setting(params, root, seed, device, progress=False)
    sets = [setting.real_train, setting.synthetic["biased"], setting.synthetic["balanced"]]
    p, sel = params.pretrain, params.selection

    def biased():
        model = build_classifier(p.arch, "none")
        load_checkpoint(model, setting.biased_checkpoint)
        return model

    mask = load_mask(root / paths.mask_dir(seed) / "mask.json", biased(), p.arch)
    one_epoch = dataclasses.replace(p.train_config(seed), epochs=1, milestones=[])
    one_epoch_float32 = dataclasses.replace(one_epoch, precision="float32")  # the gradient passes' precision
    finetune_epoch = dataclasses.replace(params.finetune.train_config(p, seed), epochs=1, milestones=[])

    def gradients():  # as the mask stage computes them
        set_gradients(params, biased(), dict(enumerate(sets)), device, progress=False)

    def gradients_convolutions_only():  # as the mask stage computed them before aimfair.classifier.small_maps
        model = biased()
        for images in sets:
            mean_gradients(model, images, device, sel.batch_size, sel.bn_mode, sel.seed)

    def train_epoch(images, cfg, trainable=None, matmuls=False):
        def run():
            model = biased()
            if trainable is not None:
                freeze_except(model, trainable)
            if matmuls:
                whole_map_matmuls(model)
            with tempfile.TemporaryDirectory() as out:
                fit(model, images, setting.val, cfg, out, device, progress=False)
        return run

    three_sets = concat_image_sets(*sets)
    balanced = setting.synthetic["balanced"]
    mask_now, mask_before = "mask generation (3 gradient passes)", "mask generation before (as training computes)"
    epoch = f"one training epoch over D_R + D_S1 + D_S2 ({one_epoch.precision})"
    epoch_matmuls = "the same epoch with aimfair.classifier.small_maps"
    epoch_float32 = "one training epoch over the three sets (float32)"
    full, aimfair, probe = ("fine-tuning epoch, full_ft (all tensors)",
                            f"fine-tuning epoch, aimfair ({len(mask.tensors)} tensors)",
                            "fine-tuning epoch, linear_probe (fc only)")
    variants = {
        mask_now: gradients,
        mask_before: gradients_convolutions_only,
        epoch: train_epoch(three_sets, one_epoch),
        epoch_matmuls: train_epoch(three_sets, one_epoch, matmuls=True),
        epoch_float32: train_epoch(three_sets, one_epoch_float32),
        full: train_epoch(balanced, finetune_epoch),
        aimfair: train_epoch(balanced, finetune_epoch, mask.tensors),
        probe: train_epoch(balanced, finetune_epoch, ["fc.weight", "fc.bias"]),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, run in variants.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(t) for name, t in times.items()}
    ratios = {"mask / training epoch over the three sets": median[mask_now] / median[epoch],
              "mask before / training epoch over the three sets": median[mask_before] / median[epoch],
              "mask before / mask (speed-up of aimfair.classifier.small_maps)": median[mask_before] / median[mask_now],
              "mask / float32 training epoch over the three sets": median[mask_now] / median[epoch_float32],
              "training epoch / the same with aimfair.classifier.small_maps": median[epoch] / median[epoch_matmuls],
              "aimfair / full_ft epoch": median[aimfair] / median[full],
              "linear_probe / full_ft epoch": median[probe] / median[full]}
    for name, seconds in median.items():
        print(f"{name:<58} {seconds:7.2f} s")
    for name, ratio in ratios.items():
        print(f"{name:<58} {ratio:7.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(dict(
            machine=dict(cpus=os.cpu_count(), python=platform.python_version(), torch=torch.__version__,
                         device=str(device)),
            images=dict(real=len(sets[0]), biased_synthetic=len(sets[1]), balanced_synthetic=len(sets[2])),
            note="each training variant includes the validation pass and checkpoint write of one epoch (fit)",
            median_seconds={k: round(v, 2) for k, v in median.items()},
            ratios={k: round(v, 3) for k, v in ratios.items()}, repeats=args.repeats), indent=2) + "\n")


if __name__ == "__main__":
    main()

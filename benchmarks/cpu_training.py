"""CPU training speed of the three changes that made it 1.5x faster: one-pixel convolutions as matrix
products, channels-last memory, bfloat16 autocast.

Times `fit` (images per second of the epochs after the first, validation included, as
benchmarks/training_throughput.py) in five configurations, the first four each adding one change to the one before:

    before           every convolution through oneDNN, contiguous (NCHW) tensors, float32
    + one-pixel      aimfair.classifier.models.SmallMapConv2d: layer4's convolutions on 1x1 outputs as F.linear
    + channels-last  aimfair.classifier.train.prepare_model on a CPU
    + bfloat16       pretrain.precision auto on this AMX CPU: bfloat16 autocast (training and validation)
    bfloat16 without one-pixel   channels-last and bfloat16 with every convolution through oneDNN: its AMX
                     kernels for the weight gradients of 1x1 maps are what made bfloat16 slower before

The configurations are interleaved and repeated, so drift on a shared machine hits them alike; the ratios
are medians against "before" from the same run:

    PATH=$PWD/.venv/bin:$PATH python benchmarks/cpu_training.py --json docs/cpu_training.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from contextlib import ExitStack, contextmanager
from pathlib import Path

import torch

import aimfair.classifier.models as models
import aimfair.classifier.train as train

sys.path.insert(0, str(Path(__file__).parent))
from training_throughput import fit_benchmark_args, measure  # noqa: E402  (a sibling script, not a package)

CONFIGURATIONS = ("before", "+ one-pixel", "+ channels-last", "+ bfloat16", "bfloat16 without one-pixel")


@contextmanager
def patched(module, name: str, replacement):
    original = getattr(module, name)
    setattr(module, name, replacement)
    try:
        yield
    finally:
        setattr(module, name, original)


def speed(configuration: str, trainable: str, args: argparse.Namespace) -> float:
    """fit's images per second with the changes up to `configuration` (its position in CONFIGURATIONS)."""
    level = CONFIGURATIONS.index(configuration)
    with ExitStack() as stack:
        if level < 1 or level == 4:  # every convolution a plain nn.Conv2d
            stack.enter_context(patched(models, "_small_map_convolutions", lambda model: model))
        if level < 2:  # contiguous NCHW tensors
            stack.enter_context(patched(train, "prepare_model", lambda model, device: model.to(device)))
        precision = "bfloat16" if level >= 3 else "float32"
        return measure(args.size, trainable, args.images, args.epochs, torch.device("cpu"), precision)


def main() -> None:
    args = fit_benchmark_args(__doc__.splitlines()[0])
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        print("note: this CPU has no native bfloat16; the last configuration is emulated and slow")

    rows = []
    for trainable in ("full", "aimfair"):
        runs: dict[str, list[float]] = {c: [] for c in CONFIGURATIONS}
        for _ in range(args.repeats):
            for configuration in CONFIGURATIONS:
                runs[configuration].append(speed(configuration, trainable, args))
        median = {c: statistics.median(v) for c, v in runs.items()}
        for configuration in CONFIGURATIONS:
            ratio = median[configuration] / median["before"]
            rows.append(dict(trainable=trainable, configuration=configuration,
                             images_per_s=round(median[configuration], 1), ratio=round(ratio, 3),
                             runs=[round(s, 1) for s in runs[configuration]]))
            print(f"{args.size} px, {trainable:8s} {configuration:27s} {median[configuration]:7.1f} images/s "
                  f"({ratio:.2f}x)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(dict(
            machine=dict(cpus=os.cpu_count(), torch_threads=torch.get_num_threads(), torch=torch.__version__,
                         native_bfloat16=bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())),
            settings=vars(args) | {"json": None}, rows=rows), indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Training throughput of `fit` (the loop every strategy uses) on this machine's device, on random images.

For each input size, trains a ResNet-18 for a few epochs on random uint8 images (full fine-tuning and
AIM-Fair's frozen set: the first convolution, layer4's large convolutions and the final layer frozen) and
reports images per second over the epochs after the first (validation included, as in the pipeline). It
needs no pipeline outputs, so it runs on a bare GPU machine too:

    PATH=$PWD/.venv/bin:$PATH python benchmarks/training_throughput.py --sizes 32 224 --json docs/training_throughput.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from aimfair.classifier.models import build_classifier
from aimfair.classifier.train import fit
from aimfair.config import TrainConfig
from aimfair.core.device import resolve_device
from aimfair.data.loading import ImageSet
from aimfair.selective.masks import freeze_except

FROZEN_BY_AIMFAIR = ("conv1.weight", "layer4.0.conv1.weight", "layer4.0.conv2.weight", "layer4.1.conv1.weight",
                     "layer4.1.conv2.weight", "fc.weight", "fc.bias")


def _images(n: int, size: int, seed: int) -> ImageSet:
    rng = np.random.default_rng(seed)
    return ImageSet(pixels=rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8), y=rng.integers(0, 2, n),
                    s=rng.integers(0, 2, n), image_ids=[f"{i}.png" for i in range(n)])


def measure(size: int, trainable: str, n: int, epochs: int, device: torch.device, precision: str = "float32") -> float:
    """Images per second of the epochs after the first (which pays for start-up and kernel choice)."""
    torch.manual_seed(0)
    model = build_classifier()
    if trainable == "aimfair":
        freeze_except(model, [name for name, _ in model.named_parameters() if name not in FROZEN_BY_AIMFAIR])
    train, val = _images(n, size, 0), _images(n // 4, size, 1)
    cfg = TrainConfig(epochs=epochs, batch_size=128, lr=0.01, milestones=[], input_size=size, seed=0,
                      precision=precision)
    stamps = []

    with tempfile.TemporaryDirectory() as out:
        import aimfair.classifier.train as train_module

        real_accuracy = train_module.accuracy_of

        def timed_accuracy(*args):  # called once per epoch, right after its training steps and validation pass
            result = real_accuracy(*args)
            if device.type == "cuda":
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())
            return result

        train_module.accuracy_of = timed_accuracy
        try:
            fit(model, train, val, cfg, out, device, progress=False, resume_every_s=1e9)
        finally:
            train_module.accuracy_of = real_accuracy
    return n * (epochs - 1) / (stamps[-1] - stamps[0])


def fit_benchmark_args(description: str) -> argparse.Namespace:
    """The options of the scripts that time `fit` on random images in several configurations, interleaved."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", help="write the results here too")
    return parser.parse_args()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[32, 224])
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args()
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    rows = []
    for size in args.sizes:
        for trainable in ("full", "aimfair"):
            speed = measure(size, trainable, args.images, args.epochs, device)
            rows.append(dict(size=size, trainable=trainable, images_per_s=round(speed, 1)))
            print(f"{name}: {size:4d} px, {trainable:8s} {speed:9.1f} images/s", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(dict(device=name, torch=torch.__version__, rows=rows), indent=2) + "\n")


if __name__ == "__main__":
    main()

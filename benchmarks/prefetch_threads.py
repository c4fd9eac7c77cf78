"""CPU training speed with the batch-prefetch thread on one intra-op thread (now) against the default (before).

BatchLoader prepares batch k+1 on a background thread while the model trains on batch k. Before this
change that thread ran its torch operations (the per-image crops, the flip, the normalisation) with
PyTorch's default intra-op thread count, so on a CPU a second team of threads competed with the model's
for the same cores. Now the thread runs them on one intra-op thread (`torch.set_num_threads(1)` is per
thread). This script times `fit` both ways, as benchmarks/training_throughput.py does (images per second of
the epochs after the first, validation included), interleaved and repeated, and checks that both ways
hand the model the same batches:

    PATH=$PWD/.venv/bin:$PATH python benchmarks/prefetch_threads.py --json docs/prefetch_threads.json
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import torch

import aimfair.data.loading as loading

sys.path.insert(0, str(Path(__file__).parent))
from training_throughput import _images, fit_benchmark_args, measure  # noqa: E402  (a sibling script, not a package)


@contextmanager
def default_prefetch_threads():
    """The loader as it was: its background thread keeps PyTorch's default intra-op thread count."""
    loading.ThreadPoolExecutor = lambda workers, **_: ThreadPoolExecutor(workers)
    try:
        yield
    finally:
        loading.ThreadPoolExecutor = ThreadPoolExecutor


def batches(size: int) -> list[torch.Tensor]:
    images = _images(512, size, 0)
    loader = loading.BatchLoader(images, 128, torch.device("cpu"), augment=loading.BatchAugment(size, seed=0),
                                 shuffle=True, seed=0)
    return [x for x, _, _ in loader]


def main() -> None:
    args = fit_benchmark_args(__doc__.splitlines()[0])
    cpu = torch.device("cpu")

    with default_prefetch_threads():
        before_batches = batches(args.size)
    same = all(torch.equal(a, b) for a, b in zip(before_batches, batches(args.size)))
    print(f"same batches both ways: {same}")

    rows = []
    for trainable in ("full", "aimfair"):
        speeds: dict[str, list[float]] = {"default threads (before)": [], "one thread (now)": []}
        for _ in range(args.repeats):  # interleaved, so drift on a shared machine hits both alike
            with default_prefetch_threads():
                speeds["default threads (before)"].append(measure(args.size, trainable, args.images, args.epochs, cpu))
            speeds["one thread (now)"].append(measure(args.size, trainable, args.images, args.epochs, cpu))
        before, now = (statistics.median(v) for v in speeds.values())
        rows.append(dict(trainable=trainable, before=round(before, 1), now=round(now, 1), ratio=round(now / before, 3),
                         runs={k: [round(s, 1) for s in v] for k, v in speeds.items()}))
        print(f"{args.size} px, {trainable:8s} before {before:7.1f}  now {now:7.1f} images/s  ({now / before:.2f}x)",
              flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(dict(
            machine=dict(cpus=os.cpu_count(), torch_threads=torch.get_num_threads(), torch=torch.__version__),
            settings=vars(args) | {"json": None}, same_batches=same, rows=rows), indent=2) + "\n")


if __name__ == "__main__":
    main()

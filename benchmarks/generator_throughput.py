"""Sampling throughput of the built-in text-to-image model on this machine, per sampler setting.

What it measures: images per second of `TinyGenerator.generate` (MiniLM encoding of the prompts, the DDIM
loop, conversion to uint8) for the committed checkpoint (models/tinyfaces_t2i) on the pipeline's own
prompts, at several settings:

* default: DDIM 25 steps, guidance 3, conditional and unconditional passes in one doubled batch,
  precision "auto" (bfloat16 autocast where the CPU has AMX / AVX512-BF16, else float32);
* float32: the same in float32;
* float32, unbatched guidance: the same images as float32 (checked), two UNet calls per step instead of
  one doubled batch;
* auto precision, unbatched guidance;
* fast: DDIM 10 steps, auto precision (fewer steps: slightly different images).

The settings run interleaved, `--repeats` times each, on the same prompts and seeds, after one untimed
warm-up batch; the reported figure is the median. From it the script estimates the time for the default
pool (params.yaml: synthetic sizes). Run from the repository root after `dvc repro generator` (or in a
fresh clone, where the checkpoint is committed):

    .venv/bin/python benchmarks/generator_throughput.py --json docs/generator_throughput.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from aimfair.config import load_params
from aimfair.core import paths
from aimfair.csdg.generation import pool_plan, read_prompts
from aimfair.csdg.generators.tiny_sampling import DEFAULT_BATCH, load_tiny_generator
from aimfair.csdg.pool import plan_jobs

SETTINGS = {
    "default (DDIM 25, guidance 3, batched, auto precision)": dict(steps=25, guidance=3.0, precision="auto"),
    "float32 (DDIM 25, guidance 3, batched)": dict(steps=25, guidance=3.0, precision="float32"),
    "float32, unbatched guidance": dict(steps=25, guidance=3.0, precision="float32", batched_guidance=False),
    "auto precision, unbatched guidance": dict(steps=25, guidance=3.0, precision="auto", batched_guidance=False),
    "fast (DDIM 10, guidance 3, batched, auto precision)": dict(steps=10, guidance=3.0, precision="auto"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=200, help="images per timed run")
    parser.add_argument("--compute-batch", type=int, default=DEFAULT_BATCH, help="images computed at once")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    root = paths.repo_root()
    params = load_params(root / "params.yaml")
    prompts = read_prompts(root)
    jobs = plan_jobs(prompts, {g: args.images // 4 for g in prompts}, base_seed=0)
    texts, seeds = [j.prompt for j in jobs], [j.seed for j in jobs]
    generators = {name: load_tiny_generator(root / paths.GENERATOR, batch=args.compute_batch, **kw)
                  for name, kw in SETTINGS.items()}
    next(iter(generators.values())).generate(texts[:8], seeds[:8])  # warm-up: MiniLM and kernels

    seconds: dict[str, list[float]] = {name: [] for name in SETTINGS}
    outputs = {}
    for _ in range(args.repeats):
        for name, generator in generators.items():
            started = time.perf_counter()
            outputs[name] = generator.generate(texts, seeds)
            seconds[name].append(time.perf_counter() - started)
    names = list(SETTINGS)
    assert np.array_equal(outputs[names[1]], outputs[names[2]]), "batched and unbatched guidance differ"

    pool = sum(pool_plan(params).values())
    rows = []
    print(f"{'setting':<56} {'img/s':>7} {'s/img':>7} {'default pool':>13}")
    for name in names:
        rate = len(texts) / statistics.median(seconds[name])
        rows.append(dict(setting=name, images_per_s=round(rate, 2), runs_s=[round(s, 2) for s in seconds[name]],
                         pool_minutes=round(pool / rate / 60, 1)))
        print(f"{name:<56} {rate:7.2f} {1 / rate:7.3f} {pool / rate / 60:10.1f} min")
    base = rows[0]["images_per_s"]
    print(f"auto precision ({generators[names[0]].info.precision}) over float32: "
          f"{base / rows[1]['images_per_s']:.2f}x; batched over unbatched guidance (float32): "
          f"{rows[1]['images_per_s'] / rows[2]['images_per_s']:.2f}x; fast over default: "
          f"{rows[4]['images_per_s'] / base:.2f}x (default pool: {pool} images)")
    if args.json:
        args.json.write_text(json.dumps(dict(
            machine=dict(cpu_threads=torch.get_num_threads(), python=platform.python_version(),
                         torch=torch.__version__, auto_precision=generators[names[0]].info.precision),
            images=len(texts), compute_batch=args.compute_batch, repeats=args.repeats, pool_images=pool,
            results=rows), indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Speed and prompt fidelity of the built-in model's DDIM sampler at several step counts and guidance scales.

For each step count (and guidance scale), generate the same images (same prompts and seeds; seeds from another base than the
pool's) for every group, time it, and let the pipeline's fidelity oracle read them: the share read as the
right smile and the right gender. This is how the default step count was chosen: first 15 (25, the prototype's,
are no more faithful and 1.8x slower), then 10 (as faithful again, 2.6x faster than 25). Needs the oracle of the generate stage (`dvc repro generate`):

    PATH=$PWD/.venv/bin:$PATH python benchmarks/sampler_steps.py --steps 25 15 10 --json docs/sampler_steps.json

From a setting's folder (its own generator and oracle), e.g. the guidance of a dataset-trained model:

    cd settings/celeba_cpu && PATH=$PWD/../../.venv/bin:$PATH python ../../benchmarks/sampler_steps.py \
        --steps 10 --guidance 3 5 7
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from aimfair.config import load_params
from aimfair.core import paths
from aimfair.csdg.fidelity import FIDELITY, score_images, summarise
from aimfair.csdg.generation import build_generator, read_prompts
from aimfair.csdg.pool import image_seed

SEED = 7  # not generate.seed: these images are not in the pool


def measure(params_file: Path, steps: int, per_group: int, guidance: float = 0.0) -> dict:
    params, root = load_params(params_file), paths.repo_root()
    if guidance:
        params = dataclasses.replace(params, generate=dataclasses.replace(params.generate, guidance=guidance))
    oracle = root / FIDELITY / "oracle" / "best.safetensors"
    if not oracle.exists():
        raise SystemExit(f"no fidelity oracle at {oracle}: run `dvc repro generate` first")
    generator = build_generator(params, root, steps=steps)
    rows, pixels, seconds = [], [], 0.0
    for group, prompts in read_prompts(root).items():
        texts = [prompts[i % len(prompts)] for i in range(per_group)]
        seeds = [image_seed(SEED, group, i, 0) for i in range(per_group)]
        start = time.perf_counter()
        pixels.append(generator.generate(texts, seeds))
        seconds += time.perf_counter() - start
        rows += [dict(path=f"{group}/{i}", group=group, y=int(group[0]), s=int(group[2])) for i in range(per_group)]
    summary = summarise(score_images(params, oracle, pd.DataFrame(rows), np.concatenate(pixels)))
    return dict(steps=steps, guidance=params.generate.guidance or "default", images=len(rows), images_per_s=round(len(rows) / seconds, 2),
                fidelity={r["group"]: r["both"] for r in summary.to_dict("records")})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", nargs="+", type=int, default=[25, 15, 10])
    parser.add_argument("--guidance", nargs="+", type=float, default=[0.0],
                        help="guidance scales (0: generate.guidance, or the model's default)")
    parser.add_argument("--per-group", type=int, default=100)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args()
    rows = []
    for steps in args.steps:
        for guidance in args.guidance:
            rows.append(measure(Path(args.params), steps, args.per_group, guidance))
            fidelity = " / ".join(f"{v:.1f}" for v in rows[-1]["fidelity"].values())
            print(f"DDIM {steps:3d}, guidance {rows[-1]['guidance']}: {rows[-1]['images_per_s']:6.2f} images/s   "
                  f"fidelity (both right) {fidelity}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()

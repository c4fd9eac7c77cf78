"""How the built-in world's difficulty sets the biased baseline's accuracy and fairness.

For each smile amplitude (`data.tinyfaces.smile_amplitude`: how far a smile lifts the mouth corners) and
each size of the biased training split (`data.n_train`), render the world, build the 1/9-skewed split and
train the biased model exactly as the default pipeline does (params.yaml, one seed), then report its test
ACC, WST and group accuracies. This is how the default world was calibrated to land near CelebA's baseline
(ACC 89.2, WST 71.5). Everything happens in a scratch folder; the repository's outputs are untouched. About
80 s per setting on 2 CPU cores:

    .venv/bin/python benchmarks/world_difficulty.py --amplitudes 12,20 17,28 22,34 --n-train 2000 3000 4000
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import tempfile
from pathlib import Path

from aimfair.config import load_params
from aimfair.pipeline.data import run_data
from aimfair.pipeline.evaluate import run_evaluate
from aimfair.pipeline.pretrain import run_pretrain
from aimfair.pipeline.world import run_world


def measure(params_file: Path, amplitude: tuple[float, float], n_train: int, seed: int, scratch: Path) -> dict:
    """Baseline metrics of one seed on a world with the given smile amplitude and training-split size."""
    params = load_params(params_file)
    world = dataclasses.replace(params.data.tinyfaces, smile_amplitude=amplitude)
    params = dataclasses.replace(params, seeds=[seed],
                                 data=dataclasses.replace(params.data, tinyfaces=world, n_train=n_train))
    root = scratch / f"amplitude_{amplitude[0]:g}_{amplitude[1]:g}"
    if not root.exists():  # one world per amplitude, split again for each n_train
        root.mkdir(parents=True)
        run_world(params, root, progress=False)
    for stale in ("splits", "pretrain"):
        shutil.rmtree(root / "work" / stale, ignore_errors=True)
    run_data(params, root)
    run_pretrain(params, root, seed, progress=False)
    metrics = run_evaluate(params, root, progress=False, strategies=["baseline"]).per_seed.iloc[0].to_dict()
    return dict(smile_amplitude=list(amplitude), n_train=n_train, seed=seed,
                **{k: round(float(metrics[k]), 2) for k in ("ACC", "WST", "EO_paper", "acc_0_0", "acc_0_1",
                                                            "acc_1_0", "acc_1_1")})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--amplitudes", nargs="+", default=["12,20", "17,28", "22,34"],
                        help="LO,HI pairs in px on the 128 px drawing canvas")
    parser.add_argument("--n-train", nargs="+", type=int, default=[3000], help="sizes of the biased training split")
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for text in args.amplitudes:
            lo, hi = (float(v) for v in text.split(","))
            for n_train in args.n_train:
                rows.append(measure(Path(args.params), (lo, hi), n_train, args.seed, Path(scratch)))
                r = rows[-1]
                print(f"smile_amplitude [{lo:g}, {hi:g}], n_train {n_train}: ACC {r['ACC']:.2f}  WST {r['WST']:.2f}  "
                      f"EO {r['EO_paper']:.2f}  groups {r['acc_0_0']:.1f} / {r['acc_0_1']:.1f} / {r['acc_1_0']:.1f} / "
                      f"{r['acc_1_1']:.1f}", flush=True)
            shutil.rmtree(Path(scratch) / f"amplitude_{lo:g}_{hi:g}")  # images, cache, checkpoints
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()

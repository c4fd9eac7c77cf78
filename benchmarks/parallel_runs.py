"""Throughput of the fine-tuning runner with 1 process and with N processes (torchrun) on this machine.

Trains the same fine-tuning runs (default: full_ft and aimfair for every seed of params.yaml) twice in a
scratch folder that links the pipeline's inputs (biased models, masks, pool, splits, images): once in one
process with all the cores, once dealt out to N processes with cores // N threads each (what
`torchrun --nproc_per_node N -m aimfair finetune` does). Needs `dvc repro` first. Reports the wall times, the
ratio, and whether the models came out byte-identical:

    PATH=$PWD/.venv/bin:$PATH python benchmarks/parallel_runs.py --processes 2 --json docs/parallel_runs.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from aimfair.config import load_params
from aimfair.core import paths

INPUTS = ("pretrain", "masks", "pool", "fidelity", "splits", "repaired", "cache", "prompts")


def scratch_root(folder: Path, params_file: Path, strategies: list[str]) -> Path:
    """A pipeline folder whose inputs link to the repository's and whose fine-tuning runs are its own."""
    root = paths.repo_root()
    (folder / "work").mkdir(parents=True)
    for name in INPUTS:
        if (root / "work" / name).exists():
            (folder / "work" / name).symlink_to((root / "work" / name).resolve())
    params = yaml.safe_load(params_file.read_text())
    data_root = Path(params["data"]["root"])
    if not (folder / data_root).exists():
        (folder / data_root).parent.mkdir(parents=True, exist_ok=True)
        (folder / data_root).symlink_to((root / data_root).resolve())
    params["finetune"]["strategies"] = strategies
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (folder / "dvc.yaml").write_text("stages: {}\n")  # marks the folder as a pipeline root
    return folder


def train(folder: Path, processes: int) -> float:
    """Wall seconds of `aimfair finetune` in `folder`, in one process or under torchrun."""
    shutil.rmtree(folder / paths.FINETUNE, ignore_errors=True)
    bin_dir = Path(sys.executable).parent
    command = [str(bin_dir / "aimfair"), "finetune"] if processes == 1 else \
        [str(bin_dir / "torchrun"), "--nproc_per_node", str(processes), "-m", "aimfair", "finetune"]
    env = dict(os.environ, PYTHONPATH=str(paths.repo_root()))
    start = time.perf_counter()
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return seconds


def models(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted((folder / paths.FINETUNE).rglob("best.safetensors"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--strategies", nargs="+", default=["full_ft", "aimfair"])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args()
    params = load_params(args.params)
    with tempfile.TemporaryDirectory() as scratch:
        folder = scratch_root(Path(scratch) / "root", Path(args.params), args.strategies)
        one = train(folder, 1)
        serial = models(folder)
        many = train(folder, args.processes)
        identical = models(folder) == serial
    runs = len(params.seeds) * len(args.strategies)
    result = dict(runs=runs, strategies=args.strategies, seeds=params.seeds, cpus=os.cpu_count(),
                  one_process_s=round(one, 1), processes=args.processes, many_processes_s=round(many, 1),
                  speedup=round(one / many, 2), identical_models=identical)
    print(f"{runs} runs: 1 process {one:.1f} s, {args.processes} processes {many:.1f} s "
          f"({one / many:.2f}x); models identical: {identical}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

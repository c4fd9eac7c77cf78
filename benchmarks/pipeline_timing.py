"""Wall time and peak memory of every stage of the default pipeline, as `make repro` runs it.

Each stage is forced to run (`dvc repro --force --single-item STAGE`) in dependency order, in a child
process whose peak resident memory (its own and its children's, the notebook kernel included) is read
from getrusage. Run it from the repository root, with the virtual environment on PATH:

    PATH=$PWD/.venv/bin:$PATH python benchmarks/pipeline_timing.py --json docs/pipeline_timing.json

It rewrites the pipeline's outputs (the same ones `dvc repro` writes), so run it on a clean checkout.
Persistent outputs (the pool, the repaired images, the models of pretrain and finetune), which a forced
stage would otherwise reuse, are deleted first, so each time is what a fresh clone pays.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from aimfair.config import load_params
from aimfair.core import paths


def stage_names(params_file: Path) -> list[str]:
    """The default pipeline's stages in dependency order (pretrain runs once per seed)."""
    seeds = load_params(params_file).seeds
    return (["world", "data", "prompts", "generator", "generator_samples", "generate", "repair"]
            + [f"pretrain@{s}" for s in seeds] + ["mask", "finetune", "evaluate"])


def persistent_outputs(stage: str) -> list[Path]:
    """The `persist: true` outputs of a stage (dvc.yaml): kept by a forced run unless deleted."""
    if stage.startswith("pretrain@"):
        return [paths.pretrain_dir(int(stage.split("@")[1]))]
    return {"generate": [paths.POOL], "repair": [paths.REPAIRED], "finetune": [paths.FINETUNE]}.get(stage, [])


def measure(stage: str) -> dict:
    """Run one stage in a fresh child; return its wall time and the peak RSS of its process tree."""
    for output in persistent_outputs(stage):
        shutil.rmtree(output, ignore_errors=True)
    code = ("import resource, subprocess, sys; "
            f"r = subprocess.run([sys.executable, '-m', 'dvc', 'repro', '--force', '--single-item', '{stage}'], "
            "stdout=subprocess.DEVNULL); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"stage {stage} failed:\n{done.stderr[-2000:]}")
    return dict(stage=stage, seconds=round(seconds, 1), peak_rss_mb=round(int(done.stdout.strip()) / 1024))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--json", help="write the results here too")
    parser.add_argument("--skip", action="append", default=[], metavar="STAGE",
                        help="leave a stage out (repeatable), e.g. --skip generator: a fresh clone has it")
    parser.add_argument("--only", action="append", default=[], metavar="STAGE",
                        help="measure only this stage (repeatable); its inputs must exist. With --json, the "
                             "stage's row in an existing file is replaced and the total recomputed")
    args = parser.parse_args()
    rows = []
    stages = [s for s in stage_names(Path(args.params)) if s not in args.skip and (not args.only or s in args.only)]
    for stage in stages:
        rows.append(measure(stage))
        print(f"{rows[-1]['stage']:<16} {rows[-1]['seconds']:>7.1f} s  {rows[-1]['peak_rss_mb']:>6d} MB", flush=True)
    note = "generator skipped: a fresh clone has its committed checkpoint" if "generator" in args.skip else ""
    if args.only and args.json and Path(args.json).exists():  # update those stages in the earlier results
        measured = {r["stage"]: r for r in rows}
        earlier = json.loads(Path(args.json).read_text())
        rows = [measured.pop(r["stage"], r) for r in earlier["stages"]] + list(measured.values())
        note, again = earlier.get("note", ""), f"re-measured alone later (--only): {', '.join(args.only)}"
        if again not in note:  # the file is a mix of runs from now on: say so
            note = f"{note}; {again}" if note else again
    total = sum(r["seconds"] for r in rows)
    print(f"{'total':<16} {total:>7.1f} s  {max(r['peak_rss_mb'] for r in rows):>6d} MB peak")
    if args.json:
        Path(args.json).write_text(json.dumps(dict(
            machine=dict(cpus=os.cpu_count(),
                         python=platform.python_version(), torch=torch.__version__,
                         cuda=torch.cuda.is_available()),
            stages=rows, total_seconds=round(total, 1), note=note), indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Kill -9 and resume: the synthetic pool and a biased model come back byte-identical.

What it does: in a temporary pipeline folder (the built-in world and the committed generator, the default
params with a smaller pool), it runs `aimfair generate` and `aimfair pretrain --seed 100` once straight
through, then once more killed with SIGKILL twice and resumed each time, and compares every output file
byte for byte with the straight run's:

* generate: killed when 30 % and then 70 % of the pool's PNGs exist; compared: every PNG and manifest.csv;
* pretrain: killed one second after its first resume state is written (in the middle of the next epoch),
  then, resumed, one second after it finishes an epoch (before a newer resume state, so it resumes from the
  same one again); compared: best.safetensors, best.json and history.csv.

Run from the repository root (about 10 minutes on 2 CPU cores):

    .venv/bin/python benchmarks/kill_resume.py --json docs/kill_resume.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import yaml

ROOT = Path(__file__).resolve().parents[1]
SEED = 100
SMALLER = {  # the default params with a pool of 400 images and a quick fidelity oracle
    "synthetic": {"balanced_per_group": 100, "biased_size": 200},
    "fidelity": {"per_group": 200, "epochs": 2},
}


def make_root(folder: Path) -> Path:
    """A pipeline folder with the default params (made smaller), the world, its splits, prompts and the
    committed generator."""
    folder.mkdir(parents=True)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in SMALLER.items():
        params[section].update(values)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (folder / "dvc.yaml").write_text("stages: {}\n")
    shutil.copytree(ROOT / "models" / "tinyfaces_t2i", folder / "models" / "tinyfaces_t2i")
    for stage in ("world", "data", "prompts"):
        run([stage], folder)
    return folder


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "aimfair", *args], cwd=cwd, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def run(args: list[str], cwd: Path) -> float:
    """Run a command to its end; returns its seconds."""
    started = time.perf_counter()
    process = start(args, cwd)
    _, err = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"aimfair {' '.join(args)} failed in {cwd}:\n{err[-3000:]}")
    return time.perf_counter() - started


def run_killed(args: list[str], cwd: Path, ready: Callable[[int], bool], kills: int) -> list[float]:
    """Run a command, SIGKILL it (its whole process group) each time ready(k) turns true, k = 0, 1, ...,
    restart it, and finally let it finish. Returns the seconds into each run at which it was killed."""
    killed_at = []
    for k in range(kills):
        started = time.perf_counter()
        process = start(args, cwd)
        while process.poll() is None and not ready(k):
            time.sleep(0.1)
        if process.poll() is not None:
            break  # it finished before the kill point: nothing more to kill
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        killed_at.append(round(time.perf_counter() - started, 1))
    run(args, cwd)
    return killed_at


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def compare(name: str, straight: dict[str, bytes], resumed: dict[str, bytes], killed_at: list[float],
            seconds: float) -> dict:
    differ = sorted(k for k in straight.keys() | resumed.keys() if straight.get(k) != resumed.get(k))
    return dict(stage=name, kills=len(killed_at), killed_at_s=killed_at, straight_run_s=round(seconds, 1),
                files=len(straight), identical=not differ, differing=differ[:10])


def pool_kills(base: Path) -> dict:
    straight_root, killed_root = make_root(base / "straight"), base / "killed"
    shutil.copytree(straight_root, killed_root)
    seconds = run(["generate"], straight_root)
    straight = files(straight_root / "work" / "pool")
    total = sum(1 for name in straight if name.endswith(".png"))
    pool = killed_root / "work" / "pool"

    def ready(k: int) -> bool:
        return sum(1 for _ in pool.glob("*/*.png")) >= (0.3, 0.7)[k] * total

    killed_at = run_killed(["generate"], killed_root, ready, kills=2)
    return compare("generate (pool)", straight, files(pool), killed_at, seconds)


def pretrain_kills(base: Path) -> dict:
    straight_root = base / "straight"  # the folders of pool_kills: world, splits and prompts are there
    killed_root = base / "killed"
    seconds = run(["pretrain", "--seed", str(SEED)], straight_root)
    folder = killed_root / "work" / "pretrain" / f"seed_{SEED}"
    state, history = folder / "resume.pt", folder / "history.csv"
    seen: dict[int, float] = {}

    def ready(k: int) -> bool:
        # first run: one second after its first resume state; the resumed run: one second after it finishes
        # an epoch (so it dies before writing a newer state and must resume from the same one again)
        watched = state if k == 0 else history
        if not watched.exists():
            return False
        mtime = watched.stat().st_mtime
        if k not in seen:
            seen[k] = mtime if k else 0.0
            return False
        if mtime == seen[k]:
            return False
        time.sleep(1.0)
        return True

    killed_at = run_killed(["pretrain", "--seed", str(SEED)], killed_root, ready, kills=2)
    straight = files(straight_root / "work" / "pretrain" / f"seed_{SEED}")
    return compare("pretrain (biased model)", straight, files(folder), killed_at, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [pool_kills(Path(tmp)), pretrain_kills(Path(tmp))]
    print("| stage | kills (s into each run) | straight run | files compared | byte-identical |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['stage']} | {r['kills']} ({', '.join(map(str, r['killed_at_s']))}) | {r['straight_run_s']} s "
              f"| {r['files']} | {'yes' if r['identical'] else 'NO: ' + ', '.join(r['differing'])} |")
    if args.json:
        args.json.write_text(json.dumps(dict(cpu_count=os.cpu_count(), results=rows), indent=2) + "\n")
    if not all(r["identical"] for r in rows):
        raise SystemExit("a resumed run differs from the straight one")


if __name__ == "__main__":
    main()

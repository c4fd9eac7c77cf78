"""Sharding the pool over processes (as over GPUs): 2 CPU processes give the same pool as one."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from aimfair.config import TinyConfig
from aimfair.core.groups import GROUPS
from aimfair.csdg.generators.tiny import TinyT2I, save_tiny
from tests.builders import merge

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def make_root(folder: Path) -> Path:
    """A minimal pipeline folder: params, a small world and its splits (the fidelity oracle trains on them),
    prompts and a small random built-in generator."""
    folder.mkdir()
    (folder / "dvc.yaml").write_text("stages: {}\n")
    toy = {"data": {"n_train": 80, "tinyfaces": {"n_images": 400, "image_size": 32}},
           "synthetic": {"balanced_per_group": 6, "biased_size": 20},
           "generate": {"batch_size": 4, "compute_batch": 4, "steps": 2, "device": "cpu"},
           "fidelity": {"per_group": 20, "epochs": 1},
           "pretrain": {"input_size": 16, "epochs": 1, "milestones": [1], "batch_size": 32, "threads": 1}}
    shipped = yaml.safe_load((ROOT / "params.yaml").read_text())  # a params file must hold every section
    (folder / "params.yaml").write_text(yaml.safe_dump(merge(shipped, toy)))
    for stage in ("world", "data"):
        run([sys.executable, "-m", "aimfair", stage], folder)
    torch.manual_seed(0)
    save_tiny(TinyT2I(TinyConfig(resolution=16, channels=(8, 16, 16), head_dim=8, max_tokens=16)),
              folder / "models" / "tinyfaces_t2i")
    (folder / "work" / "prompts").mkdir(parents=True)
    prompts = {g: [f"portrait {i} of a person of group {g}" for i in range(3)] for g in GROUPS}
    (folder / "work" / "prompts" / "prompts.json").write_text(json.dumps({"groups": prompts}))
    return folder


def run(cmd: list[str], cwd: Path, extra_env: dict | None = None) -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", **(extra_env or {}))
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


def pool_files(folder: Path) -> dict[str, bytes]:
    pool = folder / "work" / "pool"
    return {p.relative_to(pool).as_posix(): p.read_bytes() for p in sorted(pool.rglob("*")) if p.is_file()}


LAUNCHERS = {
    # torchrun starts CPU processes directly; accelerate needs ACCELERATE_USE_CPU to do so on a CPU machine
    "torchrun": (["torchrun", "--nproc_per_node", "2"], {}),
    "accelerate": (["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                    "--mixed_precision", "no", "--dynamo_backend", "no"], {"ACCELERATE_USE_CPU": "1"}),
}


@pytest.mark.parametrize("launcher", list(LAUNCHERS))
def test_two_processes_make_the_same_pool_as_one(tmp_path, launcher):
    command, env = LAUNCHERS[launcher]
    program = shutil.which(command[0], path=str(Path(sys.executable).parent))
    if program is None:
        pytest.skip(f"{command[0]} is needed to start several processes")
    single = make_root(tmp_path / "single")
    out = run([sys.executable, "-m", "aimfair", "generate"], single)
    assert "pool complete: 30 images (30 generated" in out
    assert "prompt fidelity, % read as their own group: 0_0" in out  # the stage reads its pool too

    sharded = make_root(tmp_path / "sharded")
    out = run([program, *command[1:], "-m", "aimfair", "generate"], sharded, env)
    assert "pool complete: 30 images" in out and "(30 generated" not in out  # the main process did a share

    files = pool_files(single)
    assert len(files) == 31 and files == pool_files(sharded)  # 30 PNGs and the manifest, byte for byte

"""Atomic writes: all or nothing, with the usual file permissions."""

import os

import pytest

from aimfair.core import io
from aimfair.core.errors import AimfairError


def test_atomic_writes_get_the_usual_file_permissions(tmp_path):
    io.write_text(tmp_path / "a.txt", "x")
    (tmp_path / "b.txt").write_text("x")
    assert os.stat(tmp_path / "a.txt").st_mode == os.stat(tmp_path / "b.txt").st_mode


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    io.write_text(tmp_path / "a.txt", "old")
    with pytest.raises(RuntimeError):
        with io.atomic_path(tmp_path / "a.txt") as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash while writing")
    assert (tmp_path / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_a_second_writer_of_a_locked_output_stops_with_a_clear_error(tmp_path):
    lock = tmp_path / "run" / ".seed_1.lock"
    with io.exclusive(lock, "run aimfair for seed 1"):
        with pytest.raises(AimfairError, match=r"run aimfair for seed 1 is being written by another process"):
            with io.exclusive(lock, "run aimfair for seed 1"):
                pass
    with io.exclusive(lock, "run aimfair for seed 1"):  # free again once the first writer is done
        pass


def test_a_folder_locks_itself_without_a_file_inside(tmp_path):
    folder = tmp_path / "pool"
    folder.mkdir()
    with io.exclusive(folder, "the image folder pool"):
        with pytest.raises(AimfairError, match=r"the image folder pool is being written by another process"):
            with io.exclusive(folder, "the image folder pool"):
                pass
    assert list(folder.iterdir()) == []  # nothing for DVC to hash


def test_a_second_pool_writer_stops_before_touching_the_first_ones_files(tmp_path):
    from aimfair.csdg.pool import generate_pool

    out = tmp_path / "pool"
    out.mkdir()
    (out / ".img.png.123.tmp").write_text("being written by the first run")
    with io.exclusive(out, "the first run"):
        with pytest.raises(AimfairError, match=r"is being written by another process"):
            generate_pool(generator=None, jobs=[], out=out, batch_size=8, progress=False)
    assert (out / ".img.png.123.tmp").exists()


def test_two_pretraining_runs_of_one_seed_never_overlap(tmp_path):
    from aimfair.config import parse_params
    from aimfair.core import paths
    from aimfair.pipeline.pretrain import run_pretrain

    with io.exclusive(tmp_path / paths.LOCKS / "pretrain_seed_7.lock", "the first run"):
        with pytest.raises(AimfairError, match=r"the biased model of seed 7 is being written by another process"):
            run_pretrain(parse_params({}), tmp_path, 7, progress=False)

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

"""A damaged file that a stage reads (cut short, garbled) is one line naming the file and the fix, never a
traceback from safetensors or json."""

from __future__ import annotations

import pytest

from aimfair.classifier.models import build_classifier, load_checkpoint, save_checkpoint
from aimfair.config import TinyConfig
from aimfair.core.errors import AimfairError
from aimfair.csdg.generation import read_prompts
from aimfair.csdg.generators.tiny import TinyT2I, load_tiny, save_tiny
from aimfair.selective.masks import Mask, load_mask, save_mask

SMALL = TinyConfig(resolution=16, channels=(8, 16, 16), head_dim=8, max_tokens=16)


def _cut(path, keep: int = 100) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def test_a_truncated_classifier_checkpoint_or_sidecar(tmp_path):
    path = tmp_path / "best.safetensors"
    save_checkpoint(build_classifier(), path, {"epoch": 1})
    _cut(path.with_suffix(".json"), 10)
    with pytest.raises(AimfairError, match=r"best\.json is damaged .*: re-run the stage that wrote"):
        load_checkpoint(build_classifier(), path)
    _cut(path)
    with pytest.raises(AimfairError, match=r"checkpoint .*best\.safetensors is damaged .*: delete it and re-run"):
        load_checkpoint(build_classifier(), path)


@pytest.mark.parametrize("file, damage", [("model.safetensors", b"\x00" * 64), ("config.json", b'{"model": {"res')])
def test_a_damaged_built_in_generator(tmp_path, file, damage):
    save_tiny(TinyT2I(SMALL), tmp_path)
    (tmp_path / file).write_bytes(damage)
    with pytest.raises(AimfairError, match=rf"{file} is damaged .*git checkout models/tinyfaces_t2i"):
        load_tiny(tmp_path)


def test_a_truncated_mask_file(tmp_path):
    model = build_classifier()
    shapes = {n: list(p.shape) for n, p in model.named_parameters()}
    save_mask(Mask(arch="resnet18", tensors=["fc.weight"], shapes=shapes), tmp_path)
    _cut(tmp_path / "mask.json", 50)
    with pytest.raises(AimfairError, match=r"mask\.json is damaged .*: re-run the mask stage"):
        load_mask(tmp_path / "mask.json", model, "resnet18")


def test_a_truncated_prompts_file(tmp_path):
    path = tmp_path / "work" / "prompts" / "prompts.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"groups": {"0_0": ["a wom')
    with pytest.raises(AimfairError, match=r"prompts\.json is damaged .*: re-run the prompts stage"):
        read_prompts(tmp_path)


# ----------------------------------------------------------------------------- a full disk


def test_a_full_disk_while_the_cache_is_built_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    import errno
    import os

    from PIL import Image

    from aimfair.data.cache import decoded_images

    images = []
    for i in range(3):
        images.append(tmp_path / f"{i}.png")
        Image.new("RGB", (8, 8), (i, i, i)).save(images[-1])

    def no_room(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_room)
    with pytest.raises(AimfairError, match=r"the disk is full: .*\.npy could not be written .*free some space"):
        decoded_images(images, 8, tmp_path / "cache", progress=False)
    assert list((tmp_path / "cache").iterdir()) == []


def test_too_little_free_space_is_refused_before_writing(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(AimfairError, match=r"not enough disk space for writing .*best\.safetensors: 43 MB needed"):
        save_checkpoint(build_classifier(), tmp_path / "best.safetensors", {})
    assert not (tmp_path / "best.safetensors").exists()


def test_a_full_disk_while_a_checkpoint_is_written(tmp_path, monkeypatch):
    import errno

    import aimfair.classifier.models as models

    def no_room(state, filename):
        with open(filename, "wb") as f:
            f.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(models, "save_file", no_room)
    with pytest.raises(AimfairError, match=r"the disk is full: .*best\.safetensors could not be written"):
        save_checkpoint(build_classifier(), tmp_path / "best.safetensors", {})
    assert list(tmp_path.iterdir()) == []


def test_temporary_files_of_killed_writers_are_removed_and_live_ones_kept(tmp_path):
    import os
    import subprocess
    import sys

    from aimfair.core import io

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    orphan = tmp_path / f".cache.npy.{gone}.abc123.tmp"
    live = tmp_path / f".cache.npy.{os.getpid()}.def456.tmp"
    orphan.write_text("x")
    live.write_text("x")
    assert io.remove_orphans(tmp_path) == 1
    assert not orphan.exists() and live.exists()

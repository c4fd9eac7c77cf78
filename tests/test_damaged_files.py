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

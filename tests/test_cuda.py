"""The training paths on a GPU (skipped where there is none): they must compute what the CPU computes."""

import numpy as np
import pytest
import torch

from aimfair.classifier.models import build_classifier
from aimfair.classifier.train import fit, predict_proba
from aimfair.config import TrainConfig
from aimfair.data.loading import BatchAugment, ImageSet
from aimfair.selective.gradients import full_float32, mean_gradients

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
CPU, GPU = torch.device("cpu"), torch.device("cuda")


def _images(n: int, seed: int) -> ImageSet:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    pixels = np.clip(np.where(y[:, None, None, None] == 1, 170, 80) + rng.normal(0, 30, (n, 3, 32, 32)),
                     0, 255).astype(np.uint8)
    return ImageSet(pixels=pixels, y=y, s=(np.arange(n) // 2) % 2, image_ids=[f"{i}.png" for i in range(n)])


def test_crops_on_the_gpu_match_the_same_crops_on_the_cpu():
    batch = torch.from_numpy(_images(16, 0).pixels)
    cpu = BatchAugment(32, scale=(0.6, 1.0), seed=3, backend="roi_align")(batch)
    gpu = BatchAugment(32, scale=(0.6, 1.0), seed=3)(batch.to(GPU))  # auto: roi_align on a GPU
    assert torch.allclose(cpu, gpu.cpu(), atol=1e-4)


def test_mask_gradients_on_the_gpu_match_the_cpu():
    torch.manual_seed(0)
    model, images = build_classifier(), _images(40, 1)
    cpu = mean_gradients(model, images, CPU, batch_size=16)
    with full_float32():  # as the mask stage computes them: TF32 moved them by up to 14% on an H100
        gpu = mean_gradients(model, images, GPU, batch_size=16)
    assert torch.backends.cudnn.allow_tf32  # PyTorch's default is back afterwards
    for name, g in cpu.items():
        assert torch.allclose(g, gpu[name].cpu(), rtol=1e-2, atol=1e-5), name
    assert next(model.parameters()).device.type == "cpu"  # the caller's model stays where it was


def test_fine_tuning_on_the_gpu_learns_and_leaves_masked_entries_alone(tmp_path):
    torch.manual_seed(0)
    model = build_classifier()
    keep = torch.zeros_like(model.fc.weight, dtype=torch.bool)
    keep[:, :256] = True  # only half of the final layer's weights may move
    before = model.fc.weight.detach().clone()
    cfg = TrainConfig(epochs=3, batch_size=16, lr=0.05, milestones=[], input_size=32, seed=1)
    history = fit(model, _images(64, 2), _images(32, 3), cfg, tmp_path, GPU, progress=False,
                  entry_masks={"fc.weight": keep})
    after = model.fc.weight.detach().cpu()
    assert torch.equal(after[:, 256:], before[:, 256:]) and not torch.equal(after[:, :256], before[:, :256])
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]
    prob = predict_proba(model, _images(32, 3), GPU)
    assert prob.shape == (32,) and ((prob >= 0) & (prob <= 1)).all()

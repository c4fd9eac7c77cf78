"""Selective mask generation: gradients, scores, the top-k intersection, entry masks, mask files."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from aimfair.classifier.models import build_classifier
from aimfair.classifier.train import fit
from aimfair.config import TrainConfig
from aimfair.core.errors import AimfairError
from aimfair.data.loading import ImageSet
from aimfair.selective.gradients import mean_gradients
from aimfair.selective.masks import Mask, freeze_except, load_mask, save_mask
from aimfair.selective.scores import select_elements, select_tensors, sensitivity_scores

CPU = torch.device("cpu")


def _images(n: int, seed: int = 0, size: int = 16) -> ImageSet:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    pixels = np.clip(np.where(y[:, None, None, None] == 1, 170, 80) + rng.normal(0, 30, (n, 3, size, size)),
                     0, 255).astype(np.uint8)
    return ImageSet(pixels=pixels, y=y, s=rng.integers(0, 2, n), image_ids=[f"{i}.png" for i in range(n)])


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_gradients_leave_the_callers_model_untouched():
    torch.manual_seed(0)
    model = build_classifier()
    model.eval()
    freeze_except(model, ["fc.weight"])
    before = _state(model)
    grads = mean_gradients(model, _images(24), CPU, batch_size=8, bn_mode="train")
    assert set(grads) == {n for n, _ in model.named_parameters()}  # every tensor, frozen or not
    assert all(g.abs().sum() > 0 for g in grads.values())
    after = _state(model)
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BatchNorm statistics
    assert not model.training  # its mode
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["fc.weight"]
    assert all(p.grad is None for p in model.parameters())


def test_the_mean_gradient_weights_batches_by_size_so_the_batch_size_does_not_matter():
    # BatchNorm in eval mode makes every image's loss independent of its batch: the mean gradient must then
    # be the same in one batch of 25 as in batches of 8, 8, 8 and 1 (a plain mean of batch means is not)
    torch.manual_seed(0)
    model = build_classifier()
    images = _images(25)
    whole = mean_gradients(model, images, CPU, batch_size=25, bn_mode="eval")
    pieces = mean_gradients(model, images, CPU, batch_size=8, bn_mode="eval")
    for name in whole:
        torch.testing.assert_close(pieces[name], whole[name], rtol=1e-4, atol=1e-7)


def _gradient_sets(real, biased, balanced):
    as_dict = lambda values: {f"t{i}": torch.tensor(v, dtype=torch.float32) for i, v in enumerate(values)}  # noqa: E731
    return dict(real=as_dict(real), biased_synthetic=as_dict(biased), balanced_synthetic=as_dict(balanced))


def test_a_lone_image_in_the_last_batch_is_a_clear_error():
    with pytest.raises(AimfairError, match="leaves one image of 17 alone .*choose another batch size"):
        mean_gradients(build_classifier(), _images(17), CPU, batch_size=8, bn_mode="train")


def test_absolute_scores_are_mean_absolute_differences():
    grads = _gradient_sets(real=[[1.0, 2.0], [0.0, 0.0]], biased=[[1.0, 0.0], [3.0, -3.0]],
                           balanced=[[0.0, 0.0], [3.0, -3.0]])
    scores = sensitivity_scores(grads, "absolute")
    assert list(scores["name"]) == ["t0", "t1"] and list(scores["numel"]) == [2, 2]
    assert scores["domain"].tolist() == pytest.approx([1.0, 3.0])  # mean |g_R - g_S1|
    assert scores["bias"].tolist() == pytest.approx([0.5, 0.0])  # mean |g_S1 - g_S2|


def test_cosine_scores_ignore_scale_and_measure_direction():
    grads = _gradient_sets(real=[[1.0, 0.0], [1.0, 1.0]], biased=[[5.0, 0.0], [-1.0, -1.0]],
                           balanced=[[0.0, 2.0], [-3.0, -3.0]])
    scores = sensitivity_scores(grads, "cosine")
    assert scores["domain"].tolist() == pytest.approx([0.0, 2.0])  # same direction / opposite
    assert scores["bias"].tolist() == pytest.approx([1.0, 0.0])  # orthogonal / same direction


SCORES = pd.DataFrame(dict(name=["a", "b", "c", "d", "e"], numel=1,
                           domain=[0.1, 0.2, 0.3, 0.4, 0.5],  # a is the least domain-sensitive
                           bias=[0.5, 0.1, 0.4, 0.3, 0.2]))  # a, then c, d, e, b by bias sensitivity


@pytest.mark.parametrize("k, chosen", [(1, ["a"]), (2, ["a"]), (3, ["a", "c"]), (4, ["a", "c", "d"]),
                                       (5, ["a", "b", "c", "d", "e"])])
def test_the_mask_is_the_intersection_of_the_two_top_k_sets_in_model_order(k, chosen):
    assert select_tensors(SCORES, k) == chosen


@pytest.mark.parametrize("k", [0, 6, -1])
def test_k_out_of_range_is_a_clear_error(k):
    with pytest.raises(AimfairError, match=r"selection.top_k must be between 1 and 5 .*got " + str(k)):
        select_tensors(SCORES, k)


def test_an_empty_intersection_says_what_to_change():
    disjoint = SCORES.assign(bias=[0.1, 0.2, 0.3, 0.4, 0.5])  # the least domain-sensitive are the least biased
    with pytest.raises(AimfairError, match=r"none in common.*raise selection.top_k \(of 5"):
        select_tensors(disjoint, 2)


def test_element_masks_intersect_the_two_top_fractions():
    grads = _gradient_sets(real=[[0.0, 0.0, 0.0, 0.0]], biased=[[0.0, 1.0, 2.0, 3.0]], balanced=[[4.0, 0.0, 2.0, 0.0]])
    # domain |g_R - g_S1| = 0 1 2 3 (the half least sensitive: entries 0, 1); bias |g_S1 - g_S2| = 4 1 0 3 (0, 3)
    masks = select_elements(grads, 0.5)
    assert masks["t0"].tolist() == [True, False, False, False]
    assert select_elements(grads, 1.0)["t0"].all()
    with pytest.raises(AimfairError, match="element_fraction"):
        select_elements(grads, 0.0)


def test_entry_masked_training_never_moves_frozen_entries_despite_weight_decay_and_momentum(tmp_path):
    torch.manual_seed(0)
    model = build_classifier()
    names = ["layer4.1.conv2.weight", "fc.weight", "fc.bias"]
    freeze_except(model, names)
    entry_masks = {n: torch.rand_like(p) < 0.5 for n, p in model.named_parameters() if n in names}
    entry_masks["fc.bias"] = torch.ones(1, dtype=torch.bool)  # a single entry: let it move
    before = _state(model)
    cfg = TrainConfig(epochs=2, batch_size=8, lr=0.05, momentum=0.9, weight_decay=0.1, milestones=[],
                      input_size=16, crop_scale=(0.8, 1.0), seed=0)
    fit(model, _images(32), _images(16, seed=1), cfg, tmp_path, CPU, progress=False, entry_masks=entry_masks)
    after = model.state_dict()
    for name, keep in entry_masks.items():
        assert torch.equal(after[name][~keep], before[name][~keep]), name  # frozen entries: bit for bit
        assert (after[name][keep] != before[name][keep]).float().mean() > 0.9, name  # the others moved
    assert torch.equal(after["conv1.weight"], before["conv1.weight"])  # a frozen tensor


def test_frozen_tensors_get_no_gradient_at_all():
    model = build_classifier()
    freeze_except(model, ["layer4.1.bn2.weight", "fc.weight"])
    model(torch.randn(2, 3, 16, 16)).sum().backward()
    with_grad = [n for n, p in model.named_parameters() if p.grad is not None]
    assert with_grad == ["layer4.1.bn2.weight", "fc.weight"]
    with pytest.raises(AimfairError, match="no parameter tensor 'layer9.weight'"):
        freeze_except(model, ["layer9.weight"])


def _mask_for(model, granularity="tensor"):
    shapes = {n: list(p.shape) for n, p in model.named_parameters()}
    elements = {"fc.weight": torch.rand(shapes["fc.weight"]) < 0.5} if granularity == "element" else None
    return Mask(arch="resnet18", tensors=["layer4.1.conv2.weight", "fc.weight"], shapes=shapes,
                granularity=granularity, top_k=55, elements=elements)


@pytest.mark.parametrize("granularity", ["tensor", "element"])
def test_a_mask_file_round_trips(tmp_path, granularity):
    model = build_classifier()
    mask = _mask_for(model, granularity)
    path = save_mask(mask, tmp_path, SCORES)
    loaded = load_mask(path, model, "resnet18")
    assert loaded.tensors == mask.tensors and loaded.granularity == granularity
    assert loaded.trainable_entries() == mask.trainable_entries()
    if granularity == "element":
        assert torch.equal(loaded.elements["fc.weight"], mask.elements["fc.weight"])
    assert (tmp_path / "scores.csv").exists()
    assert json.loads(path.read_text())["scores"][0] == dict(name="a", numel=1, domain=0.1, bias=0.5)


def test_a_mask_file_from_another_architecture_is_a_clear_error(tmp_path):
    path = save_mask(_mask_for(build_classifier()), tmp_path)
    other = build_classifier(outputs=2)  # fc is 2 x 512 there
    with pytest.raises(AimfairError, match=r"another model \(62 tensors in the mask, 62 here; fc.weight is \[1, 512\] "
                                           r"in the mask, \[2, 512\] here\): rerun the mask stage"):
        load_mask(path, other, "resnet18")
    small = nn.Sequential(nn.Linear(3, 1))
    with pytest.raises(AimfairError, match=r"another model \(62 tensors in the mask, 2 here; 0.bias is in only one"):
        load_mask(path, small, "mlp")
    with pytest.raises(AimfairError, match="does not exist"):
        load_mask(tmp_path / "absent.json", other, "resnet18")

"""Decode-once cache, batched augmentation and the batch loader."""

import re

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torchvision.transforms import RandomResizedCrop, v2

from aimfair.core.errors import AimfairError
from aimfair.data import cache, loading
from aimfair.data.cache import decode_image, decoded_images
from aimfair.data.loading import BatchAugment, BatchLoader, ImageSet, eval_transform, load_split, sample_crop_boxes

CPU = torch.device("cpu")


def _write_images(folder, n, size=(20, 16)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"{i:03d}.jpg"
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path, quality=95)
        paths.append(path)
    return paths


# ----------------------------------------------------------------------------- decoding and the cache


def test_decode_resizes_the_shorter_side_and_centre_crops_a_wide_image(tmp_path):
    path = _write_images(tmp_path, 1, size=(40, 20))[0]  # 40 wide, 20 high
    x = decode_image(path, 10)
    assert x.shape == (3, 10, 10) and x.dtype == np.uint8
    expected = np.asarray(Image.open(path).convert("RGB").resize((20, 10), Image.BILINEAR, reducing_gap=None))
    assert np.array_equal(x.transpose(1, 2, 0), expected[:, 5:15])


def test_decode_centre_crops_a_tall_image_vertically(tmp_path):
    path = tmp_path / "tall.png"
    pixels = np.zeros((30, 10, 3), dtype=np.uint8)
    pixels[10:20] = 200  # a bright middle third between dark top and bottom thirds
    Image.fromarray(pixels).save(path)
    x = decode_image(path, 10)  # the shorter side is already 10: the crop is exactly rows 10..19
    assert x.shape == (3, 10, 10)
    assert (x == 200).all()


def test_decode_enlarges_a_small_image(tmp_path):
    path = tmp_path / "small.png"
    Image.new("L", (4, 6), 77).save(path)  # grayscale: converted to RGB
    x = decode_image(path, 12)
    assert x.shape == (3, 12, 12) and (x == 77).all()


def test_images_are_decoded_once_and_a_changed_file_gets_a_new_cache(tmp_path, monkeypatch):
    paths = _write_images(tmp_path / "img", 6)
    first = decoded_images(paths, 8, tmp_path / "cache", progress=False)
    assert first.pixels.shape == (6, 3, 8, 8) and isinstance(first.pixels, np.memmap)
    assert first.ok.tolist() == [True] * 6
    for i, path in enumerate(paths):
        assert np.array_equal(first.pixels[i], decode_image(path, 8))
    cache_files = sorted((tmp_path / "cache").iterdir())
    assert len(cache_files) == 2  # pixels and ok mask, no temporary leftovers

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(cache, "decode_image", no_decoding)
    again = decoded_images(paths, 8, tmp_path / "cache", progress=False)
    assert np.array_equal(again.pixels, first.pixels)
    assert sorted((tmp_path / "cache").iterdir()) == cache_files
    monkeypatch.undo()

    # another resolution is another cache
    assert decoded_images(paths, 4, tmp_path / "cache", progress=False).pixels.shape == (6, 3, 4, 4)
    assert len(list((tmp_path / "cache").glob("*px.npy"))) == 2

    Image.new("RGB", (20, 16), (255, 0, 0)).save(paths[0])  # a changed dataset
    changed = decoded_images(paths, 8, tmp_path / "cache", progress=False)
    assert changed.pixels[0, 0].min() > 200 and not np.array_equal(changed.pixels[0], first.pixels[0])
    assert np.array_equal(changed.pixels[1:], first.pixels[1:])
    # the stale 8 px entry of the same images was replaced, the 4 px one kept
    assert len(list((tmp_path / "cache").glob("*px.npy"))) == 2


def _broken_dataset(tmp_path):
    paths = _write_images(tmp_path / "img", 5)
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[: len(data) // 3])  # truncated JPEG
    paths[3].unlink()  # missing file
    pd.DataFrame({"image_id": [p.name for p in paths], "y": [0, 1, 0, 1, 0], "s": [1, 1, 0, 0, 1]}).to_csv(
        tmp_path / "split.csv", index=False)
    return paths


def test_unreadable_images_are_marked_and_counted(tmp_path, capsys):
    paths = _broken_dataset(tmp_path)
    decoded = decoded_images(paths, 8, tmp_path / "cache", "skip", progress=False)
    err = capsys.readouterr().err  # one clean line, not a Python warning with its source line
    assert err.count("\n") == 1 and re.match(r"aimfair: skipped 2 of 5 .*001\.jpg.*003\.jpg", err), err
    assert decoded.ok.tolist() == [True, False, True, False, True]
    assert (decoded.pixels[[1, 3]] == 0).all() and decoded.pixels[[0, 2, 4]].any()
    # the mask is cached too: a second read says so again without decoding
    assert decoded_images(paths, 8, tmp_path / "cache", "skip", progress=False).ok.tolist() == decoded.ok.tolist()
    assert "aimfair: skipped 2 of 5" in capsys.readouterr().err


def test_unreadable_images_are_dropped_from_the_split(tmp_path, capsys):
    _broken_dataset(tmp_path)
    images = load_split(tmp_path / "split.csv", tmp_path / "img", 8, tmp_path / "cache", "skip", progress=False)
    assert "aimfair: skipped 2 of 5" in capsys.readouterr().err
    assert images.image_ids == ["000.jpg", "002.jpg", "004.jpg"] and len(images) == 3
    assert images.y.tolist() == [0, 0, 0] and images.s.tolist() == [1, 0, 1] and len(images.pixels) == 3
    assert np.array_equal(images.pixels[1], decode_image(tmp_path / "img" / "002.jpg", 8))


def test_unreadable_images_fail_when_configured(tmp_path):
    _broken_dataset(tmp_path)
    with pytest.raises(AimfairError, match=r"2 unreadable image\(s\), first: .*001\.jpg.*bad_images: skip"):
        load_split(tmp_path / "split.csv", tmp_path / "img", 8, tmp_path / "cache", "fail", progress=False)
    # the decoded images and the mask are cached anyway: switching to skip does not decode again
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2 and not list((tmp_path / "cache").glob("*.tmp"))
    with pytest.raises(AimfairError, match="bad_images must be one of"):
        load_split(tmp_path / "split.csv", tmp_path / "img", 8, tmp_path / "cache", "ignore", progress=False)


def test_fail_policy_holds_even_when_a_skip_run_cached_the_images(tmp_path):
    paths = _broken_dataset(tmp_path)
    decoded_images(paths, 8, tmp_path / "cache", "skip", progress=False)
    with pytest.raises(AimfairError, match=r"2 unreadable image\(s\), first: .*001\.jpg"):
        decoded_images(paths, 8, tmp_path / "cache", "fail", progress=False)


def test_no_readable_image_at_all_is_an_error(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(AimfairError, match="none of the 2 images could be read"):
        decoded_images([tmp_path / "a.jpg", tmp_path / "b.jpg"], 8, tmp_path / "cache", progress=False)
    with pytest.raises(AimfairError, match="split is empty"):
        decoded_images([], 8, tmp_path / "cache", progress=False)


def test_missing_split_file_or_columns_are_clear_errors(tmp_path):
    with pytest.raises(AimfairError, match="run the data stage first"):
        load_split(tmp_path / "nope.csv", tmp_path, 8, tmp_path / "cache")
    pd.DataFrame({"image_id": ["a.jpg"], "label": [1]}).to_csv(tmp_path / "old.csv", index=False)
    with pytest.raises(AimfairError, match=r"lacks column\(s\) \['s', 'y'\]"):
        load_split(tmp_path / "old.csv", tmp_path, 8, tmp_path / "cache")


# ----------------------------------------------------------------------------- crop boxes


def test_crop_boxes_follow_random_resized_crop_rules():
    g = torch.Generator().manual_seed(0)
    # every try is valid here (the largest crop is sqrt(0.5 * 4/3) * 64 = 52 px): no centre-crop fallback
    boxes = sample_crop_boxes(2000, 64, 64, (0.3, 0.5), (3 / 4, 4 / 3), g)
    assert boxes.shape == (2000, 4)
    assert torch.equal(boxes, boxes.round())  # whole pixels
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 64).all() and (boxes[:, 3] <= 64).all()
    area = w * h / 64**2
    assert area.min() >= 0.3 - 0.02 and area.max() <= 0.5 + 0.02  # rounding w and h to whole pixels
    assert area.min() < 0.32 and area.max() > 0.48  # the whole range is used
    aspect = w / h
    assert aspect.min() >= 3 / 4 - 0.05 and aspect.max() <= 4 / 3 + 0.05
    assert aspect.min() < 0.8 and aspect.max() > 1.25
    # positions spread over the image
    assert boxes[:, 0].min() == 0 and boxes[:, 2].max() == 64
    assert boxes[:, 1].min() == 0 and boxes[:, 3].max() == 64


def test_crop_boxes_are_reproducible_for_a_seed():
    def draw(seed):
        return sample_crop_boxes(100, 48, 32, (0.08, 1.0), (3 / 4, 4 / 3), torch.Generator().manual_seed(seed))

    assert torch.equal(draw(0), draw(0))
    assert not torch.equal(draw(0), draw(1))


def test_impossible_crops_fall_back_to_torchvision_centre_crop():
    # a 64 x 16 strip cannot hold a full-area crop with an aspect ratio in [3/4, 4/3]
    boxes = sample_crop_boxes(5, 16, 64, (1.0, 1.0), (3 / 4, 4 / 3), torch.Generator().manual_seed(0))
    top, left, h, w = RandomResizedCrop.get_params(torch.zeros(3, 16, 64), [1.0, 1.0], [3 / 4, 4 / 3])
    expected = torch.tensor([left, top, left + w, top + h], dtype=boxes.dtype)
    assert torch.equal(boxes, expected.expand(5, 4))
    # a square image with scale 1 and ratio 1 is cropped whole
    full = sample_crop_boxes(3, 16, 16, (1.0, 1.0), (1.0, 1.0), torch.Generator().manual_seed(0))
    assert torch.equal(full, torch.tensor([[0.0, 0.0, 16.0, 16.0]] * 3))


# ----------------------------------------------------------------------------- augmentation


@pytest.mark.parametrize("backend", ["roi_align", "resized_crop", "auto"])
def test_full_crop_without_flip_is_the_test_transform(backend):
    batch = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    augment = BatchAugment(16, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False, backend=backend)
    out = augment(batch)
    assert out.dtype == torch.float32 and out.shape == (4, 3, 16, 16)
    assert torch.allclose(out, eval_transform(batch), atol=1e-5)


def test_output_is_normalised_with_mean_and_std_one_half():
    batch = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    batch[1] = 255
    out = BatchAugment(8, scale=(1.0, 1.0), ratio=(1.0, 1.0))(batch)
    assert torch.allclose(out[0], torch.full_like(out[0], -1.0)) and torch.allclose(out[1], torch.ones_like(out[1]))
    mid = eval_transform(torch.full((1, 3, 2, 2), 51, dtype=torch.uint8))
    assert torch.allclose(mid, torch.full_like(mid, (51 / 255 - 0.5) / 0.5))


def _smooth_batch(n, size, seed=0):
    g = torch.Generator().manual_seed(seed)
    smooth = torch.nn.functional.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=size, mode="bilinear")
    return (smooth * 255).round().to(torch.uint8)


def test_a_known_crop_box_is_cut_as_torchvision_resized_crop_does(monkeypatch):
    batch = _smooth_batch(3, 32)
    boxes = torch.tensor([[4.0, 6.0, 20.0, 18.0], [0.0, 0.0, 12.0, 12.0], [10.0, 2.0, 32.0, 30.0]])  # x1, y1, x2, y2
    monkeypatch.setattr(loading, "sample_crop_boxes", lambda *args: boxes.clone())
    floats = batch.float() / 255

    roi = BatchAugment(16, flip=False, backend="roi_align")(batch) * 0.5 + 0.5
    cropped = BatchAugment(16, flip=False, backend="resized_crop")(batch) * 0.5 + 0.5
    for i, (x1, y1, x2, y2) in enumerate(boxes.long().tolist()):
        plain = v2.functional.resized_crop(floats[i], y1, x1, y2 - y1, x2 - x1, [16, 16], antialias=False)
        assert (roi[i] - plain).abs().mean() < 0.01, i
        assert (roi[i] - plain).abs().max() < 0.05, i
        # inside the box both sample the same bilinear points; they differ at most on the outer ring
        assert torch.allclose(roi[i, :, 1:-1, 1:-1], plain[:, 1:-1, 1:-1], atol=1e-4), i
        smooth = v2.functional.resized_crop(batch[i], y1, x1, y2 - y1, x2 - x1, [16, 16], antialias=True)
        assert torch.allclose(cropped[i], smooth.float() / 255, atol=1e-6), i


def test_both_crop_backends_cut_the_same_region():
    batch = _smooth_batch(8, 32)
    a = BatchAugment(16, scale=(0.3, 0.6), flip=False, seed=5, backend="roi_align")(batch)
    b = BatchAugment(16, scale=(0.3, 0.6), flip=False, seed=5, backend="resized_crop")(batch)
    assert (a - b).abs().mean() < 0.03  # same boxes; only the interpolation differs
    c = BatchAugment(16, scale=(0.3, 0.6), flip=False, seed=6, backend="roi_align")(batch)
    assert (a - c).abs().mean() > 0.03  # another seed, other crops


def test_flips_are_per_image_and_about_half():
    batch = torch.arange(16, dtype=torch.uint8).repeat(400, 3, 16, 1)  # each row 0..15 left to right
    out = BatchAugment(16, scale=(1.0, 1.0), ratio=(1.0, 1.0), seed=1)(batch)
    plain = eval_transform(batch)
    flipped = torch.tensor([torch.equal(o, p.flip(-1)) for o, p in zip(out, plain)])
    kept = torch.tensor([torch.equal(o, p) for o, p in zip(out, plain)])
    assert (flipped ^ kept).all()  # every image is either mirrored or left alone
    assert 160 < int(flipped.sum()) < 240
    again = BatchAugment(16, scale=(1.0, 1.0), ratio=(1.0, 1.0), seed=1)(batch)
    assert torch.equal(out, again)


def test_unknown_backend_is_refused():
    with pytest.raises(AimfairError, match="backend must be one of"):
        BatchAugment(16, backend="opencv")


# ----------------------------------------------------------------------------- the batch loader


def _indexed_set(n):
    """Image i is filled with the value i: the pixels tell which image a batch row is."""
    assert n <= 256
    pixels = np.stack([np.full((3, 4, 4), i, dtype=np.uint8) for i in range(n)])
    return ImageSet(pixels=pixels, y=np.arange(n) % 2, s=(np.arange(n) // 3) % 2, image_ids=[str(i) for i in range(n)])


def _index(x):
    return torch.round((x[:, 0, 0, 0] * 0.5 + 0.5) * 255).long()  # undo Normalize(0.5, 0.5)


@pytest.mark.parametrize("augment", [None, BatchAugment(4, scale=(0.5, 1.0), seed=0)])
def test_loader_covers_every_image_once_with_labels_aligned(augment):
    images = _indexed_set(50)
    loader = BatchLoader(images, 8, CPU, augment=augment, shuffle=True, seed=3)
    assert len(loader) == 7
    for _ in range(2):  # two epochs
        seen, sizes = [], []
        for x, y, s in loader:
            index = _index(x)
            assert x.shape[1:] == (3, 4, 4) and (x == x[:, :1, :1, :1]).all()  # constant images stay constant
            assert torch.equal(y, index % 2) and torch.equal(s, (index // 3) % 2)
            seen += index.tolist()
            sizes.append(len(y))
        assert sorted(seen) == list(range(50))
        assert sizes == [8] * 6 + [2]


def test_drop_last_drops_the_partial_batch():
    loader = BatchLoader(_indexed_set(50), 8, CPU, shuffle=True, drop_last=True, seed=3)
    assert len(loader) == 6
    batches = [_index(x).tolist() for x, _, _ in loader]
    assert [len(b) for b in batches] == [8] * 6
    seen = sum(batches, [])
    assert len(set(seen)) == 48
    assert len(BatchLoader(_indexed_set(48), 8, CPU, drop_last=True)) == 6
    assert len(BatchLoader(_indexed_set(48), 8, CPU, drop_last=False)) == 6
    assert len(BatchLoader(_indexed_set(49), 8, CPU, drop_last=False)) == 7


def test_without_shuffle_the_order_is_the_set_order():
    loader = BatchLoader(_indexed_set(20), 6, CPU)
    assert torch.cat([_index(x) for x, _, _ in loader]).tolist() == list(range(20))


def _epochs(seed, n_epochs=2):
    loader = BatchLoader(_indexed_set(40), 5, CPU, shuffle=True, seed=seed)
    # rows of a batch come sorted, so an epoch's order is the sequence of batch memberships
    return [[tuple(_index(x).tolist()) for x, _, _ in loader] for _ in range(n_epochs)]


def test_shuffle_order_changes_every_epoch_and_is_reproducible():
    first = _epochs(7)
    assert first[0] != first[1]
    assert first == _epochs(7)
    assert first[0] != _epochs(8)[0]
    # the order depends on (seed, epoch) only: a loader set to epoch 1 repeats the second epoch
    loader = BatchLoader(_indexed_set(40), 5, CPU, shuffle=True, seed=7)
    loader.epoch = 1
    assert [tuple(_index(x).tolist()) for x, _, _ in loader] == first[1]


def test_batch_size_must_be_positive():
    with pytest.raises(AimfairError, match="batch_size must be positive"):
        BatchLoader(_indexed_set(4), 0, CPU)

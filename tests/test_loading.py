"""Decode-once cache, batched augmentation and the batch loader."""

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from aimfair.data import cache
from aimfair.data.cache import decode_image, decoded_images
from aimfair.data.loading import BatchAugment, BatchLoader, ImageSet, eval_transform, load_split, sample_crop_boxes
from aimfair.errors import AimfairError


def _write_images(folder, n, size=(20, 16)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"{i:03d}.jpg"
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path, quality=95)
        paths.append(path)
    return paths


def test_decode_resizes_the_shorter_side_and_centre_crops(tmp_path):
    path = _write_images(tmp_path, 1, size=(40, 20))[0]  # 40 wide, 20 high
    x = decode_image(path, 10)
    assert x.shape == (3, 10, 10) and x.dtype == np.uint8
    expected = np.asarray(Image.open(path).convert("RGB").resize((20, 10), Image.BILINEAR, reducing_gap=None))
    assert np.array_equal(x.transpose(1, 2, 0), expected[:, 5:15])


def test_images_are_decoded_once_and_a_changed_file_gets_a_new_cache(tmp_path, monkeypatch):
    paths = _write_images(tmp_path / "img", 6)
    first = decoded_images(paths, 8, tmp_path / "cache", progress=False)
    assert first.pixels.shape == (6, 3, 8, 8) and isinstance(first.pixels, np.memmap)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(cache, "decode_image", no_decoding)
    again = decoded_images(paths, 8, tmp_path / "cache", progress=False)
    assert np.array_equal(again.pixels, first.pixels)
    monkeypatch.undo()

    Image.new("RGB", (20, 16), (255, 0, 0)).save(paths[0])  # a changed dataset
    changed = decoded_images(paths, 8, tmp_path / "cache", progress=False)
    assert changed.pixels[0, 0].min() > 200 and not np.array_equal(changed.pixels[0], first.pixels[0])
    assert len(list((tmp_path / "cache").glob("*px.npy"))) == 2


def _broken_dataset(tmp_path):
    paths = _write_images(tmp_path / "img", 5)
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[: len(data) // 3])  # truncated JPEG
    paths[3].unlink()  # missing file
    pd.DataFrame({"image_id": [p.name for p in paths], "y": [0, 1, 0, 1, 0], "s": [1, 1, 0, 0, 1]}).to_csv(
        tmp_path / "split.csv", index=False)
    return paths


def test_unreadable_images_are_skipped_with_a_count(tmp_path):
    _broken_dataset(tmp_path)
    with pytest.warns(UserWarning, match="skipped 2 of 5"):
        images = load_split(tmp_path / "split.csv", tmp_path / "img", 8, tmp_path / "cache", "skip", progress=False)
    assert images.image_ids == ["000.jpg", "002.jpg", "004.jpg"]
    assert images.y.tolist() == [0, 0, 0] and images.s.tolist() == [1, 0, 1] and len(images.pixels) == 3


def test_unreadable_images_fail_when_configured(tmp_path):
    _broken_dataset(tmp_path)
    with pytest.raises(AimfairError, match=r"2 unreadable image\(s\), first: .*001.jpg.*bad_images: skip"):
        load_split(tmp_path / "split.csv", tmp_path / "img", 8, tmp_path / "cache", "fail", progress=False)
    with pytest.raises(AimfairError, match="bad_images must be one of"):
        load_split(tmp_path / "split.csv", tmp_path / "img", 8, tmp_path / "cache", "ignore", progress=False)


def test_missing_split_file_is_a_clear_error(tmp_path):
    with pytest.raises(AimfairError, match="run the data stage first"):
        load_split(tmp_path / "nope.csv", tmp_path, 8, tmp_path / "cache")


def test_crop_boxes_follow_random_resized_crop_rules():
    g = torch.Generator().manual_seed(0)
    boxes = sample_crop_boxes(2000, 64, 64, (0.3, 1.0), (3 / 4, 4 / 3), g)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 64).all() and (boxes[:, 3] <= 64).all()
    area = w * h / 64**2
    assert area.min() >= 0.3 - 0.05 and area.max() <= 1.0
    assert ((w / h) >= 3 / 4 - 0.1).all() and ((w / h) <= 4 / 3 + 0.1).all()
    assert torch.equal(boxes, sample_crop_boxes(2000, 64, 64, (0.3, 1.0), (3 / 4, 4 / 3),
                                                torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("backend", ["roi_align", "resized_crop"])
def test_full_crop_without_flip_is_the_test_transform(backend):
    batch = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    augment = BatchAugment(16, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False, backend=backend)
    assert torch.allclose(augment(batch), eval_transform(batch), atol=1e-5)


def test_both_crop_backends_cut_the_same_region():
    torch.manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(8, 3, 4, 4), size=32, mode="bilinear")
    batch = (smooth * 255).to(torch.uint8)
    a = BatchAugment(16, scale=(0.3, 0.6), flip=False, seed=5, backend="roi_align")(batch)
    b = BatchAugment(16, scale=(0.3, 0.6), flip=False, seed=5, backend="resized_crop")(batch)
    assert (a - b).abs().mean() < 0.03  # same boxes; only the interpolation differs
    reference = v2.functional.resized_crop(batch[0], 0, 0, 32, 32, [16, 16], antialias=True)
    assert reference.shape == (3, 16, 16)


def test_flips_are_per_image():
    batch = torch.arange(16, dtype=torch.uint8).repeat(200, 3, 16, 1)  # each row 0..15 left to right
    out = BatchAugment(16, scale=(1.0, 1.0), ratio=(1.0, 1.0), seed=1)(batch)
    flipped = out[:, 0, 0, 0] > out[:, 0, 0, -1]
    assert 60 < int(flipped.sum()) < 140


def _indexed_set(n):
    pixels = np.stack([np.full((3, 4, 4), i % 256, dtype=np.uint8) for i in range(n)])
    return ImageSet(pixels=pixels, y=np.arange(n) % 2, s=(np.arange(n) // 2) % 2, image_ids=[str(i) for i in range(n)])


def test_loader_covers_every_image_once_with_labels_aligned():
    images = _indexed_set(50)
    loader = BatchLoader(images, 8, torch.device("cpu"), shuffle=True, seed=3)
    assert len(loader) == 7
    seen = []
    for x, y, s in loader:
        index = torch.round((x[:, 0, 0, 0] * 0.5 + 0.5) * 255).long()  # undo Normalize(0.5, 0.5)
        assert torch.equal(y, index % 2) and torch.equal(s, (index // 2) % 2)
        seen += index.tolist()
    assert sorted(seen) == list(range(50))
    assert len(BatchLoader(images, 8, torch.device("cpu"), drop_last=True)) == 6


def test_shuffle_order_depends_only_on_seed_and_epoch():
    def orders(seed):
        loader = BatchLoader(_indexed_set(40), 40, torch.device("cpu"), shuffle=True, seed=seed)
        return [next(iter(loader))[1].tolist() for _ in range(2)]

    first = orders(7)
    assert first == orders(7)
    # a batch is gathered sorted, so compare the (shuffled) epoch membership through a smaller batch size
    small = BatchLoader(_indexed_set(40), 5, torch.device("cpu"), shuffle=True, seed=7)
    epoch1 = [tuple(x[:, 0, 0, 0].tolist()) for x, _, _ in small]
    epoch2 = [tuple(x[:, 0, 0, 0].tolist()) for x, _, _ in small]
    assert epoch1 != epoch2
    with pytest.raises(AimfairError):
        BatchLoader(_indexed_set(4), 0, torch.device("cpu"))

"""Reading CelebA's label files (official .txt and the .csv variant) from tiny fixtures."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from aimfair.core.errors import AimfairError
from aimfair.data.celeba import celeba_image_dir, read_celeba

NAMES = ["Male", "Smiling", "Young"]
# image_id -> (partition, attribute values); deliberately not in id order, to check the sorting.
ROWS = {
    "000003.jpg": (0, [1, 1, -1]),
    "000001.jpg": (0, [-1, 1, 1]),
    "000002.jpg": (0, [1, -1, 1]),
    "000005.jpg": (1, [-1, -1, -1]),
    "000004.jpg": (2, [1, 1, 1]),
}


def attr_txt(rows: dict = ROWS, names: list[str] = NAMES, count: int | None = None) -> str:
    """The official layout: count, names, then values padded to width 2 (so 1 follows two spaces)."""
    lines = [str(len(rows) if count is None else count), " ".join(names)]
    lines += [f"{image_id} " + " ".join(f"{v:2d}" for v in values) for image_id, (_, values) in rows.items()]
    return "\n".join(lines) + "\n"


def partition_txt(rows: dict = ROWS) -> str:
    return "".join(f"{image_id} {part}\n" for image_id, (part, _) in rows.items())


def write_txt(root: Path, rows: dict = ROWS) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "list_attr_celeba.txt").write_text(attr_txt(rows))
    (root / "list_eval_partition.txt").write_text(partition_txt(rows))
    return root


def write_csv_variant(root: Path, rows: dict = ROWS) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    lines = ["image_id," + ",".join(NAMES)]
    lines += [f"{image_id}," + ",".join(str(v) for v in values) for image_id, (_, values) in rows.items()]
    (root / "list_attr_celeba.csv").write_text("\n".join(lines) + "\n")
    parts = ["image_id,partition"] + [f"{image_id},{part}" for image_id, (part, _) in rows.items()]
    (root / "list_eval_partition.csv").write_text("\n".join(parts) + "\n")
    return root


def test_txt_gives_ids_partitions_and_raw_labels(tmp_path: Path) -> None:
    frame = read_celeba(write_txt(tmp_path))
    assert list(frame.columns) == ["image_id", "partition", *NAMES]
    assert list(frame["image_id"]) == sorted(ROWS)
    assert list(frame["partition"]) == [0, 0, 0, 2, 1]
    row = frame.set_index("image_id").loc["000001.jpg"]
    assert [row[n] for n in NAMES] == [-1, 1, 1]  # -1/+1 kept as in the file
    assert set(frame[NAMES].to_numpy().ravel()) == {-1, 1}


def test_csv_variant_gives_the_same_frame(tmp_path: Path) -> None:
    from_txt = read_celeba(write_txt(tmp_path / "txt"))
    from_csv = read_celeba(write_csv_variant(tmp_path / "csv"))
    pd.testing.assert_frame_equal(from_txt, from_csv)


def test_txt_is_preferred_over_csv(tmp_path: Path) -> None:
    flipped = {i: (p, [-v for v in values]) for i, (p, values) in ROWS.items()}
    write_csv_variant(tmp_path, flipped)
    write_txt(tmp_path)
    frame = read_celeba(tmp_path).set_index("image_id")
    assert frame.loc["000001.jpg", "Male"] == -1  # the txt value, not the csv's +1


def test_any_number_of_attributes_and_blank_lines(tmp_path: Path) -> None:
    rows = {"000001.jpg": (0, [1]), "000002.jpg": (1, [-1])}
    text = "2\nSmiling\n000001.jpg  1\n000002.jpg -1\n\n"
    tmp_path.joinpath("list_attr_celeba.txt").write_text(text)
    tmp_path.joinpath("list_eval_partition.txt").write_text(partition_txt(rows))
    frame = read_celeba(tmp_path)
    assert list(frame.columns) == ["image_id", "partition", "Smiling"]
    assert list(frame["Smiling"]) == [1, -1]


def test_image_dir_flat_and_kaggle_nested(tmp_path: Path) -> None:
    (tmp_path / "img_align_celeba").mkdir()
    assert celeba_image_dir(tmp_path) == tmp_path / "img_align_celeba"
    (tmp_path / "img_align_celeba" / "img_align_celeba").mkdir()
    assert celeba_image_dir(tmp_path) == tmp_path / "img_align_celeba" / "img_align_celeba"


def test_image_dir_missing(tmp_path: Path) -> None:
    with pytest.raises(AimfairError, match="img_align_celeba"):
        celeba_image_dir(tmp_path)


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(AimfairError, match="does not exist: put CelebA there"):
        read_celeba(tmp_path / "nowhere")


def test_missing_attribute_file_names_both_candidates(tmp_path: Path) -> None:
    write_txt(tmp_path).joinpath("list_attr_celeba.txt").unlink()
    with pytest.raises(AimfairError, match="list_attr_celeba.txt and list_attr_celeba.csv"):
        read_celeba(tmp_path)


def test_missing_partition_file(tmp_path: Path) -> None:
    write_txt(tmp_path).joinpath("list_eval_partition.txt").unlink()
    with pytest.raises(AimfairError, match="list_eval_partition.txt and list_eval_partition.csv"):
        read_celeba(tmp_path)


def test_header_count_mismatch(tmp_path: Path, capsys) -> None:
    """A subset cut from the release keeps the release's count: a warning naming both numbers, not 'corrupt'."""
    write_txt(tmp_path).joinpath("list_attr_celeba.txt").write_text(attr_txt(count=7))
    frame = read_celeba(tmp_path)
    assert len(frame) == 5
    err = capsys.readouterr().err
    assert "the header says 7 images but the file lists 5" in err and "corrupt" not in err


def test_malformed_line_names_its_number(tmp_path: Path) -> None:
    lines = attr_txt().splitlines()
    lines[4] = lines[4].rsplit(" ", 1)[0]  # drop the last value of the third image (line 5)
    write_txt(tmp_path).joinpath("list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(AimfairError, match="line 5: expected an image id and 3 values, found 2"):
        read_celeba(tmp_path)


def test_non_integer_value_names_its_line(tmp_path: Path) -> None:
    text = attr_txt().replace("000002.jpg  1", "000002.jpg  x")
    write_txt(tmp_path).joinpath("list_attr_celeba.txt").write_text(text)
    with pytest.raises(AimfairError, match="line 5: found a value that is not an integer"):
        read_celeba(tmp_path)


@pytest.mark.parametrize("writer", [write_txt, write_csv_variant])
def test_values_must_be_minus_one_or_one(tmp_path: Path, writer) -> None:
    rows = dict(ROWS, **{"000002.jpg": (0, [1, 0, 1])})
    writer(tmp_path, rows)
    with pytest.raises(AimfairError, match="attribute Smiling of 000002.jpg is 0: .* must be -1 or 1"):
        read_celeba(tmp_path)


def test_ids_missing_from_partition_file(tmp_path: Path) -> None:
    write_txt(tmp_path)
    partial = {i: v for i, v in ROWS.items() if i != "000004.jpg"}
    (tmp_path / "list_eval_partition.txt").write_text(partition_txt(partial))
    message = r"1 images in list_attr_celeba.txt are missing .* \(e.g. 000004.jpg\)"
    with pytest.raises(AimfairError, match=message):
        read_celeba(tmp_path)


def test_bad_partition_line(tmp_path: Path) -> None:
    write_txt(tmp_path).joinpath("list_eval_partition.txt").write_text("000001.jpg 0\n000002.jpg 3\n")
    with pytest.raises(AimfairError, match="list_eval_partition.txt line 2"):
        read_celeba(tmp_path)

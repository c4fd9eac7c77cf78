"""UTKFace labels from file names; the fixture is empty files with the right names."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from aimfair.core.errors import AimfairError
from aimfair.data.utkface import parse_utkface_name, read_utkface, utkface_image_dir

GOOD = [
    "25_1_0_20170116174525125.jpg",  # 25-year-old White woman
    "30_0_2_20170116174525126.jpg.chip.jpg",  # aligned-and-cropped name
    "29_0_4_20170116174525127.jpg",
]
BAD = [
    "39_1_20170116174525125.jpg.chip.jpg",  # race field missing (a real case in the public set)
    "notes.jpg",
]


def touch_all(folder: Path, names: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).touch()
    return folder


@pytest.mark.parametrize(
    "name, expected",
    [
        ("25_1_0_20170116174525125.jpg", {"age": 25, "gender": 1, "race": 0}),
        ("1_0_4_20161219203650636.jpg.chip.jpg", {"age": 1, "gender": 0, "race": 4}),
        ("116_1_3_20170120134921760.jpg", {"age": 116, "gender": 1, "race": 3}),
    ],
)
def test_parse_good_names(name: str, expected: dict) -> None:
    assert parse_utkface_name(name) == expected


@pytest.mark.parametrize(
    "name",
    [
        "39_1_20170116174525125.jpg.chip.jpg",  # missing field
        "25_2_0_20170116174525125.jpg",  # gender 2
        "25_1_5_20170116174525125.jpg",  # race 5
        "-3_1_0_20170116174525125.jpg",  # negative age
        "25_1_0_20170116174525125.png",
        "25_1_0_20170116174525125.jpg.chip",
        "notes.jpg",
        "",
    ],
)
def test_parse_bad_names(name: str) -> None:
    assert parse_utkface_name(name) is None


def test_read_derives_binary_attributes(tmp_path: Path) -> None:
    touch_all(tmp_path, GOOD + ["readme.txt"])  # non-jpg files are ignored silently
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about
        frame = read_utkface(tmp_path)
    assert list(frame.columns) == ["image_id", "age", "gender", "race", "Female", "Male", "White", "Young"]
    assert list(frame["image_id"]) == sorted(GOOD)
    row = frame.set_index("image_id").loc["25_1_0_20170116174525125.jpg"]
    assert (row["Female"], row["Male"], row["White"], row["Young"]) == (1, 0, 1, 1)
    by_age = frame.set_index("age")
    assert by_age.loc[29, "Young"] == 1 and by_age.loc[30, "Young"] == 0  # Young = age < 30
    assert by_age.loc[29, "White"] == 0


def test_unparsable_files_are_skipped_with_one_counting_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    touch_all(tmp_path, GOOD + BAD)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean line on stderr, not a Python warning with its source line
        frame = read_utkface(tmp_path)
        assert len(read_utkface(tmp_path / ".." / tmp_path.name)) == len(GOOD)  # the same folder, read again
    assert len(frame) == len(GOOD)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("aimfair: skipped 2 UTKFace file(s) whose names lack a field (e.g. ")
    assert "39_1_20170116174525125.jpg.chip.jpg" in err and err.rstrip().endswith("expected age_gender_race_datetime.jpg")


def test_each_folder_reports_its_own_skipped_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for sub in ("a", "b"):
        touch_all(tmp_path / sub, GOOD + BAD)
        read_utkface(tmp_path / sub)
    assert capsys.readouterr().err.count("aimfair: skipped 2 UTKFace file(s)") == 2


@pytest.mark.parametrize("sub", ["UTKFace", "utkface_aligned_cropped/UTKFace"])
def test_images_in_a_usual_subfolder(tmp_path: Path, sub: str) -> None:
    touch_all(tmp_path / sub, GOOD)
    assert utkface_image_dir(tmp_path) == tmp_path / sub
    assert len(read_utkface(tmp_path)) == len(GOOD)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(AimfairError, match="does not exist: put UTKFace there"):
        read_utkface(tmp_path / "nowhere")


def test_folder_without_images(tmp_path: Path) -> None:
    with pytest.raises(AimfairError, match="no .jpg files"):
        read_utkface(tmp_path)


def test_no_parseable_image(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    touch_all(tmp_path, BAD)
    with pytest.raises(AimfairError, match="age_gender_race_datetime"):
        read_utkface(tmp_path)
    assert "aimfair: skipped 2" in capsys.readouterr().err

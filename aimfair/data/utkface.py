"""Read UTKFace's labels, which live in its file names: `age_gender_race_datetime.jpg`.

The aligned and cropped release appends `.chip.jpg` (`25_1_0_20170116174525125.jpg.chip.jpg`).
Fields: age (years), gender (0 male, 1 female), race (0 White, 1 Black, 2 Asian, 3 Indian, 4 Others).
A few public files lack a field (e.g. `39_1_20170116174525125.jpg.chip.jpg`); they are skipped with
one line on stderr, once per process and folder.

Binary attributes derived for the splits (0/1, usable as target or protected attribute):
  Female = gender == 1, Male = gender == 0, White = race == 0 (the paper's protected attribute),
  Young = age < 30 (YOUNG_BELOW; our convention, the paper does not use Young on UTKFace).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from aimfair.core.errors import AimfairError, notice

# Where the images may sit inside the dataset folder, in the order they are tried.
IMAGE_SUBDIRS: tuple[str, ...] = (".", "UTKFace", "utkface_aligned_cropped/UTKFace")

YOUNG_BELOW = 30  # Young = age < 30 years

_NAME = re.compile(r"(\d+)_(\d+)_(\d+)_(\d+)\.jpg(\.chip\.jpg)?")

# Folders whose skipped files were already reported: a stage reads the labels more than once, one line is enough.
_REPORTED: set[Path] = set()


def parse_utkface_name(name: str) -> dict[str, int] | None:
    """{"age", "gender", "race"} from a UTKFace file name, or None if the name does not follow the scheme."""
    match = _NAME.fullmatch(name)
    if match is None:
        return None
    age, gender, race = (int(match.group(i)) for i in (1, 2, 3))
    if gender not in (0, 1) or race not in range(5):
        return None
    return {"age": age, "gender": gender, "race": race}


def utkface_image_dir(root: str | Path) -> Path:
    """The folder holding the .jpg files: root itself or one of its usual subfolders."""
    root = Path(root)
    if not root.is_dir():
        raise AimfairError(
            f"dataset folder {root} does not exist: put UTKFace there (see docs/data.md) or fix the dataset root (--root, data.root)"
        )
    for sub in IMAGE_SUBDIRS:
        folder = root / sub
        if folder.is_dir() and any(folder.glob("*.jpg")):
            return folder
    raise AimfairError(
        f"no .jpg files in {root} or its subfolders {', '.join(IMAGE_SUBDIRS[1:])}: "
        "unpack UTKFace there (see docs/data.md)"
    )


def _report_skipped(folder: Path, skipped: list[str]) -> None:
    """One line naming how many files were skipped and why, the first time this process reads `folder`."""
    key = folder.resolve()
    if key in _REPORTED:
        return
    _REPORTED.add(key)
    notice(f"skipped {len(skipped)} UTKFace file(s) whose names lack a field (e.g. {', '.join(skipped[:3])}): "
           "expected age_gender_race_datetime.jpg")


def read_utkface(root: str | Path) -> pd.DataFrame:
    """Labels of every parseable image, sorted by image_id (the file name).

    Columns: image_id, age, gender, race, Female, Male, White, Young (the last four 0/1).
    """
    folder = utkface_image_dir(root)
    rows: list[dict[str, object]] = []
    skipped: list[str] = []
    for path in sorted(folder.glob("*.jpg")):
        labels = parse_utkface_name(path.name)
        if labels is None:
            skipped.append(path.name)
        else:
            rows.append({"image_id": path.name, **labels})

    if skipped:
        _report_skipped(folder, skipped)
    if not rows:
        raise AimfairError(
            f"none of the .jpg files in {folder} is named age_gender_race_datetime.jpg: "
            "point data.root at the original UTKFace images"
        )

    frame = pd.DataFrame(rows)
    frame["image_id"] = frame["image_id"].astype("str")
    frame["Female"] = (frame["gender"] == 1).astype("int64")
    frame["Male"] = (frame["gender"] == 0).astype("int64")
    frame["White"] = (frame["race"] == 0).astype("int64")
    frame["Young"] = (frame["age"] < YOUNG_BELOW).astype("int64")
    return frame.reset_index(drop=True)

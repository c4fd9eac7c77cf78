"""Read CelebA's labels: the 40 attributes (-1/+1) and the official train/val/test partition.

Two layouts are accepted in the dataset folder `root`:
  * the official text files `list_attr_celeba.txt` (line 1: image count, line 2: attribute names,
    then `NNNNNN.jpg v1 ... vK`) and `list_eval_partition.txt` (`NNNNNN.jpg 0|1|2`);
  * the common CSV variant `list_attr_celeba.csv` (header `image_id,<names>`) and
    `list_eval_partition.csv` (header `image_id,partition`).
The text files win when both are present. The built-in "tinyfaces" world is written in the official
text format, so it is read here too. Images are not opened: only `celeba_image_dir` points at them.

A subset of the release works too: an attribute file whose header count differs from its rows gets a
warning naming both numbers, and without a partition file (`official=False`) every image's partition is
left empty for a seeded split (aimfair.data.splits, `data.partition: seeded`).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from aimfair.core.errors import AimfairError, notice

ATTR_FILES: tuple[str, ...] = ("list_attr_celeba.txt", "list_attr_celeba.csv")
PARTITION_FILES: tuple[str, ...] = ("list_eval_partition.txt", "list_eval_partition.csv")
IMAGE_DIR = "img_align_celeba"

# Official partition codes.
TRAIN, VAL, TEST = 0, 1, 2


def read_celeba(root: str | Path, official: bool = True) -> pd.DataFrame:
    """Labels of every image: columns image_id, partition, then one int column (-1/+1) per attribute.

    Rows are sorted by image_id, which is CelebA's file order (ids are zero-padded). With official=False the
    partition file is not read (a subset may have none) and the partition column is -1 throughout.
    """
    root = Path(root)
    if not root.is_dir():
        raise AimfairError(
            f"dataset folder {root} does not exist: put CelebA there (see docs/data.md) or fix the dataset root (--root, data.root)"
        )
    attr_path = _find_file(root, ATTR_FILES, "attribute")
    if attr_path.suffix == ".txt":
        attrs = _read_attr_txt(attr_path)
    else:
        attrs = _read_attr_csv(attr_path)
    names = [c for c in attrs.columns if c != "image_id"]
    _check_attr_values(attrs, names, attr_path)

    duplicated = attrs["image_id"][attrs["image_id"].duplicated()]
    if len(duplicated):
        raise AimfairError(
            f"{attr_path} lists {duplicated.iloc[0]} more than once: the file is corrupt, download it again"
        )
    if not official:
        attrs.insert(1, "partition", -1)
        return attrs.sort_values("image_id", kind="stable").reset_index(drop=True)
    part_path = _find_file(root, PARTITION_FILES, "partition",
                           "; for a subset without one set data.partition: seeded")
    partition = _read_partition_txt(part_path) if part_path.suffix == ".txt" else _read_partition_csv(part_path)
    missing = attrs["image_id"][~attrs["image_id"].isin(partition["image_id"])]
    if len(missing):
        raise AimfairError(
            f"{len(missing)} images in {attr_path.name} are missing from {part_path} "
            f"(e.g. {missing.iloc[0]}): use the partition file that belongs to the same CelebA release"
        )

    # A partition file may list more images than the attribute file; only labelled images are kept.
    frame = attrs.merge(partition.drop_duplicates("image_id"), on="image_id", how="left")
    frame = frame[["image_id", "partition", *names]]
    return frame.sort_values("image_id", kind="stable").reset_index(drop=True)


def celeba_image_dir(root: str | Path) -> Path:
    """The folder holding the .jpg files: root/img_align_celeba, or Kaggle's doubly nested copy."""
    root = Path(root)
    nested = root / IMAGE_DIR / IMAGE_DIR  # the Kaggle zip unpacks into img_align_celeba/img_align_celeba
    if nested.is_dir():
        return nested
    flat = root / IMAGE_DIR
    if flat.is_dir():
        return flat
    raise AimfairError(
        f"image folder {flat} does not exist: unzip img_align_celeba.zip into {root} (see docs/data.md)"
    )


def _find_file(root: Path, names: tuple[str, ...], what: str, alternative: str = "") -> Path:
    """The first of `names` present in root (so .txt is preferred over .csv)."""
    for name in names:
        if (root / name).is_file():
            return root / name
    raise AimfairError(
        f"no CelebA {what} file in {root}: looked for {' and '.join(names)}; "
        f"copy it from the CelebA release (see docs/data.md){alternative}"
    )


def _corrupt(path: Path, lineno: int, problem: str) -> AimfairError:
    return AimfairError(f"{path} line {lineno}: {problem}; the file is corrupt, download it again")


def _read_attr_txt(path: Path) -> pd.DataFrame:
    lines = path.read_text().splitlines()
    if len(lines) < 2:
        raise _corrupt(path, len(lines) + 1, "expected the image count on line 1 and the names on line 2")
    try:
        count = int(lines[0].strip())
    except ValueError:
        raise _corrupt(path, 1, f"expected the image count, found {lines[0].strip()[:40]!r}") from None
    names = lines[1].split()
    if not names:
        raise _corrupt(path, 2, "expected the attribute names, found an empty line")

    ids: list[str] = []
    rows: list[list[int]] = []
    for lineno, line in enumerate(lines[2:], start=3):
        fields = line.split()  # values are padded with one or more spaces
        if not fields:
            continue  # tolerate blank lines, e.g. at the end of the file
        if len(fields) != len(names) + 1:
            raise _corrupt(
                path, lineno, f"expected an image id and {len(names)} values, found {len(fields) - 1} values"
            )
        try:
            rows.append([int(v) for v in fields[1:]])
        except ValueError:
            raise _corrupt(path, lineno, "found a value that is not an integer") from None
        ids.append(fields[0])

    if count != len(ids):  # a subset cut from the release keeps its header; the rows are what counts
        notice(f"{path}: the header says {count} images but the file lists {len(ids)}; using the "
               f"{len(ids)} listed (a subset of CelebA is fine)")
    frame = pd.DataFrame(rows, columns=names, dtype="int64")
    frame.insert(0, "image_id", pd.Series(ids, dtype="str"))
    return frame


def _read_attr_csv(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype={"image_id": "str"})
    if "image_id" not in frame.columns:
        raise AimfairError(
            f"{path} has no image_id column: its header must be image_id followed by the attribute names"
        )
    for name in frame.columns.drop("image_id"):
        if not pd.api.types.is_integer_dtype(frame[name]):
            raise AimfairError(
                f"{path}: column {name} holds non-integer or empty values: CelebA attributes must be -1 or 1"
            )
        frame[name] = frame[name].astype("int64")
    return frame


def _read_partition_txt(path: Path) -> pd.DataFrame:
    ids: list[str] = []
    parts: list[int] = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
            raise _corrupt(path, lineno, "expected an image id and a partition 0, 1 or 2")
        ids.append(fields[0])
        parts.append(int(fields[1]))
    return pd.DataFrame(
        {"image_id": pd.Series(ids, dtype="str"), "partition": pd.Series(parts, dtype="int64")}
    )


def _read_partition_csv(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype={"image_id": "str"})
    if not {"image_id", "partition"} <= set(frame.columns):
        raise AimfairError(f"{path} must have the columns image_id and partition: fix its header")
    if not frame["partition"].isin([TRAIN, VAL, TEST]).all():
        bad = frame.loc[~frame["partition"].isin([TRAIN, VAL, TEST])].iloc[0]
        raise AimfairError(
            f"{path}: partition of {bad['image_id']} is {bad['partition']}: partitions must be 0, 1 or 2"
        )
    frame = frame[["image_id", "partition"]].copy()
    frame["partition"] = frame["partition"].astype("int64")
    return frame


def _check_attr_values(frame: pd.DataFrame, names: list[str], path: Path) -> None:
    """Official CelebA labels are -1/+1; anything else is another format, refused rather than guessed."""
    for name in names:
        bad = ~frame[name].isin([-1, 1])
        if bad.any():
            row = frame.loc[bad].iloc[0]
            raise AimfairError(
                f"{path}: attribute {name} of {row['image_id']} is {row[name]}: "
                "CelebA attributes must be -1 or 1 as in the official files (convert 0 to -1)"
            )

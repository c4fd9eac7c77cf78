"""Atomic file writing: a reader (or a crash) never sees a half-written file."""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from aimfair.core.errors import AimfairError

_UMASK = os.umask(0)
os.umask(_UMASK)  # reading the umask means setting it; put it back at once


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed onto `path` in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp makes 0600 files (and some writers replace the file): give the usual permissions
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextmanager
def exclusive(lock: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold an exclusive lock on the file or folder `lock` while the block runs; if another process holds it,
    stop with an error naming `what`. The operating system drops the lock of a killed process. The file stays
    (removing it would let two processes lock two different files of the same name)."""
    lock = Path(lock)
    if lock.is_dir():  # a folder locks itself: no lock file inside an output that DVC hashes
        fd = os.open(lock, os.O_RDONLY)
    else:
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AimfairError(f"{what} is being written by another process right now ({lock} is locked): wait "
                               "for it, or stop it; two processes must never write the same output") from None
        yield
    finally:
        os.close(fd)  # drops the lock


def read_json(path: str | os.PathLike, fix: str) -> Any:
    """The JSON in `path`; a damaged file (cut short, not JSON) is an AimfairError that names it and `fix`."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AimfairError(f"{path} is damaged ({str(e).splitlines()[0][:80]}): {fix}") from None


def read_record(path: str | os.PathLike) -> Any:
    """A record that only lets work be skipped (a run's, a cache's): None when missing or damaged, so the work
    is done again."""
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_csv(path: str | os.PathLike, frame: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)

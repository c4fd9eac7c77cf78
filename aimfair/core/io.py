"""Atomic file writing: a reader (or a crash) never sees a half-written file."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
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
    """Yield a temporary path beside `path`; on success it is renamed onto `path` in one step. The temporary
    file's name holds the writer's process id, so remove_orphans can tell one left by a killed process. A
    full disk is an AimfairError naming the file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp makes 0600 files (and some writers replace the file): give the usual permissions
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise disk_full(path) from None
        raise
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def disk_full(path: Path) -> AimfairError:
    """The error for a write that the disk had no room for (nothing half-written is kept)."""
    free = shutil.disk_usage(path.parent).free / 2**20
    return AimfairError(f"the disk is full: {path} could not be written ({free:.0f} MB free in {path.parent}); "
                        "free some space and run again (finished work is kept, and the stage resumes)")


def require_free_space(folder: str | os.PathLike, needed: int, what: str) -> None:
    """Refuse, before writing, `what` of `needed` bytes into `folder` when the disk has not that much room
    (and 5 % to spare)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < needed * 1.05:
        raise AimfairError(f"not enough disk space for {what}: {needed / 2**20:.0f} MB needed, {free / 2**20:.0f} MB "
                           f"free in {folder}; free some space (work/cache can go: make clean-cache) and run again")


_TEMPORARY = re.compile(r"^\..+\.(\d+)\.[^.]+\.tmp$")


def remove_orphans(folder: str | os.PathLike) -> int:
    """Remove the temporary files in `folder` whose writing process is gone (killed, or out of memory);
    returns how many. Files of live processes stay: they may be writing right now."""
    removed = 0
    for path in Path(folder).glob(".*.tmp"):
        match = _TEMPORARY.match(path.name)
        if match and not _alive(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


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

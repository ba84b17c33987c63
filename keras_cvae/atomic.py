"""Atomic file and directory writes: write beside the target, then rename over it.

An interrupted run therefore never leaves a half-written artifact where a good one was. What
appears under the final name has the permissions the umask gives an ordinary new file or
directory (mkstemp and mkdtemp would leave 0600 and 0700, unreadable to a TF Serving process
running as another user).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _ordinary_permissions(path: Path) -> None:
    """Give `path` (and, for a directory, everything inside) the umask's default permissions."""
    mask = _umask()
    if path.is_dir():
        os.chmod(path, 0o777 & ~mask)
        for inner in path.rglob("*"):
            os.chmod(inner, (0o777 if inner.is_dir() else 0o666) & ~mask)
    else:
        os.chmod(path, 0o666 & ~mask)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed onto `path`.

    The temporary name keeps the target's suffix, so writers that infer a format from the
    extension (matplotlib, Keras) behave as they would for the target.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}", dir=target.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        _ordinary_permissions(tmp)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


@contextlib.contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary directory beside `path`, renamed to `path` on success.

    `path` must not exist yet; on failure the temporary directory is removed, so no partial
    directory is ever visible under the final name.
    """
    target = Path(path)
    if target.exists():
        raise FileExistsError(f"{target} already exists")
    with _staged_directory(target.parent, target.name) as tmp:
        yield tmp
        _ordinary_permissions(tmp)
        os.rename(tmp, target)


def publish_numbered_directory(root: str | Path, write: Callable[[Path], None], first: int) -> Path:
    """Write a directory with `write(tmp)` beside its future place, then rename it to `root/<n>`
    for the first n ≥ `first` that is free at that moment.

    Renaming a directory onto an existing non-empty one fails, so two writers racing for the
    same number cannot overwrite each other: the loser takes the next number instead of losing
    its work.
    """
    root = Path(root)
    with _staged_directory(root, "version") as tmp:
        write(tmp)
        _ordinary_permissions(tmp)
        number = first
        while True:
            target = root / str(number)
            if not target.exists():
                try:
                    os.rename(tmp, target)
                    return target
                except OSError as err:
                    if err.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                        raise
            number += 1


@contextlib.contextmanager
def _staged_directory(parent: Path, name: str) -> Iterator[Path]:
    """A hidden temporary directory in `parent`, removed on exit unless renamed away."""
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=parent))
    try:
        yield tmp
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)

"""Files and folders that appear whole or not at all.

Everything passkit leaves for a later run or another process to read (unit ledgers, shards,
checkpoints, downloads, release folders) is written under a temporary name beside its destination
and renamed into place: a rename within one folder is atomic, so a reader (or a rerun after
`kill -9`) sees either the old file or the complete new one, never a torn one. Temporary names
start with a dot and carry `.tmp-<pid>`, so the build can sweep what a killed run left behind.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temp_name(dest: Path) -> Path:
    """The temporary path `dest` is written under: hidden, beside it, unique to this process."""
    return dest.with_name(f".{dest.name}.tmp-{os.getpid()}")


@contextmanager
def atomic_path(dest: str | Path, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write (a file or a folder); on success it replaces `dest`.

    On an exception the temporary is removed and `dest` is left as it was. `fsync` flushes a
    file's bytes to disk before the rename, for outputs that must survive a power cut, not only a
    crash of the process."""
    dest = Path(dest)
    tmp = temp_name(dest)
    _remove(tmp)  # left by a killed process that had this pid
    try:
        yield tmp
        if fsync and tmp.is_file():
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, dest)
    finally:
        _remove(tmp)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def write_bytes(dest: str | Path, data: bytes) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def write_text(dest: str | Path, text: str) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")

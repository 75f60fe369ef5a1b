"""Deterministic, atomic tar writing.

Same members in, same bytes out: fixed mtime, owner and mode, so a rebuilt release is
byte-identical. A shard appears under its final name only once complete (write, fsync, rename),
so a killed build never leaves a truncated tar that looks finished.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# 2000-01-01T00:00:00Z: a fixed, plausible mtime (some tools warn about 1970).
FIXED_MTIME = 946684800


@dataclass(frozen=True, slots=True)
class ShardInfo:
    path: Path
    sha256: str
    bytes: int
    members: int


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_tar(path: Path, members: Iterable[tuple[str, bytes]]) -> ShardInfo:
    """Write (name, bytes) members in the order given; returns checksum and size of the result."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    count = 0
    try:
        with open(tmp, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
                for name, data in members:
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    info.mtime = FIXED_MTIME
                    info.mode = 0o644
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    tar.addfile(info, io.BytesIO(data))
                    count += 1
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return ShardInfo(path, sha256_file(path), path.stat().st_size, count)

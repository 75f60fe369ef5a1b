"""Per-sample records kept on disk, split by hash range, so memory does not grow with the release.

The checks that span the release (a key in two shards, index rows no shard holds, attribution.csv
against the index) compare sets of salted 64-bit key hashes (keyhash.py). Held in memory those
sets grow with the release: ~30 bytes a sample, and several times that while numpy sorts them. A
`Buckets` writes its records to one file per range of hash values instead (the top bits of the
hash pick the file), buffering a bounded number of records. A range is then loaded, sorted and
compared on its own: the same range of two `Buckets` with the same `bits` holds the same keys.
There are enough ranges for each to hold ~`BUCKET_ROWS` records of the size expected, and the
hashes are salted, so a release cannot pile its keys into one range (equal keys still share one).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

BUCKET_ROWS = 1 << 16  # records a range is sized to hold: ~2 MB of index records
BUFFER_ROWS = 1 << 16  # records held before they are written out
MAX_BITS = 16


def bits_for(expected: int) -> int:
    """How many top bits of the hash pick the range, for about `expected` records in all."""
    bits = 0
    while bits < MAX_BITS and expected > BUCKET_ROWS << bits:
        bits += 1
    return bits


class Buckets:
    """Records of one numpy dtype (with a uint64 field "h"), on disk by range of h, in the order added."""

    def __init__(self, folder: Path, dtype: np.dtype, bits: int) -> None:
        self.folder = folder
        self.dtype = np.dtype(dtype)
        self.bits = bits
        self.count = 1 << bits
        self._pending: list[np.ndarray] = []
        self._buffered = 0
        folder.mkdir(parents=True, exist_ok=True)

    def bucket_of(self, h: np.ndarray) -> np.ndarray:
        """The range number of each hash."""
        if not self.bits:
            return np.zeros(len(h), dtype=np.int64)
        return (h >> np.uint64(64 - self.bits)).astype(np.int64)

    def add(self, records: np.ndarray) -> None:
        if not len(records):
            return
        self._pending.append(np.asarray(records, dtype=self.dtype))
        self._buffered += len(records)
        if self._buffered >= BUFFER_ROWS:
            self.flush()

    def flush(self) -> None:
        """Append the buffered records to their ranges' files (stable: each file keeps the order added)."""
        if not self._pending:
            return
        recs = np.concatenate(self._pending)
        self._pending, self._buffered = [], 0
        b = self.bucket_of(recs["h"])
        order = np.argsort(b, kind="stable")
        recs, b = recs[order], b[order]
        bounds = np.searchsorted(b, np.arange(self.count + 1))
        for i in np.flatnonzero(np.diff(bounds)).tolist():
            with open(self._path(i), "ab") as f:
                f.write(recs[bounds[i]:bounds[i + 1]].tobytes())

    def load(self, i: int) -> np.ndarray:
        """Range i's records, in the order they were added."""
        self.flush()
        path = self._path(i)
        return np.fromfile(path, dtype=self.dtype) if path.is_file() else np.zeros(0, dtype=self.dtype)

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(self.count):
            yield self.load(i)

    def _path(self, i: int) -> Path:
        return self.folder / f"{i:05d}.bin"

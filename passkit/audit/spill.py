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

from pathlib import Path

import numpy as np

from passkit.spill import Partitioned

BUCKET_ROWS = 1 << 16  # records a range is sized to hold: ~2 MB of index records
MAX_BITS = 16


def bits_for(expected: int) -> int:
    """How many top bits of the hash pick the range, for about `expected` records in all."""
    bits = 0
    while bits < MAX_BITS and expected > BUCKET_ROWS << bits:
        bits += 1
    return bits


class Buckets(Partitioned):
    """Records of one numpy dtype (with a uint64 field "h"), on disk by range of h (its top `bits`
    bits), in the order added."""

    def __init__(self, folder: Path, dtype: np.dtype, bits: int) -> None:
        self.bits = bits
        super().__init__(folder, dtype, 1 << bits, self.bucket_of)

    @property
    def count(self) -> int:
        """How many ranges there are."""
        return self.parts

    def bucket_of(self, h: np.ndarray) -> np.ndarray:
        """The range number of each hash (of each record's "h", given records)."""
        if h.dtype.names:
            h = h["h"]
        if not self.bits:
            return np.zeros(len(h), dtype=np.int64)
        return (h >> np.uint64(64 - self.bits)).astype(np.int64)

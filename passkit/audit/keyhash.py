"""Release-wide checks through keys and texts as salted 64-bit hashes, kept on disk (spill.py).

At 2 million samples a Python set or dict of keys costs hundreds of megabytes; their hashes cost
8 bytes each, on disk, read back a range at a time. The hash is keyed with a salt drawn for each
audit, so a release cannot be built to make two of its keys collide (a 64-bit blake2b collision
costs ~2^32 work only when the salt is known); an accidental collision, one in ~10^7 audits of a
2-million-sample release, could hide one cross-shard finding. Per-shard checks never use hashes: they compare the strings themselves.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from hashlib import blake2b
from pathlib import Path

import numpy as np

from passkit.audit.spill import Buckets

ABSENT = 0  # no value to compare (a column the file lacks)
NONE = 1  # the value is null / None
EMPTY = np.zeros(0, dtype=np.uint64)
SEEN = np.dtype([("h", "<u8"), ("shard", "<i4")])  # a key met in the shards: its hash, its first shard


def new_salt() -> bytes:
    return os.urandom(16)


def h64(value: str | None, salt: bytes) -> int:
    """The salted hash of a string (never ABSENT or NONE), or NONE for None."""
    if value is None:
        return NONE
    h = int.from_bytes(blake2b(value.encode("utf-8", "surrogatepass"), digest_size=8, key=salt).digest(), "little")
    return h if h > NONE else h + 2


def hashes(values: Iterable[str | None], salt: bytes, count: int = -1) -> np.ndarray:
    return np.fromiter((h64(v, salt) for v in values), dtype=np.uint64, count=count)


def isin(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """Which of `values` are in `sorted_set` (a sorted uint64 array)."""
    return _find(sorted_set, values)[1]


class SeenKeys:
    """Every key met so far with the first shard it was met in, as hashes on disk (spill.Buckets).

    A release's shards hold its keys in order, so a key above every key met so far is new without
    a look at the disk: only a release out of order reads the ranges its keys' hashes fall in.
    """

    def __init__(self, folder: Path, bits: int) -> None:
        self.buckets = Buckets(folder, SEEN, bits)
        self.top: str | None = None  # the largest key met so far
        self.count = 0

    def first_shard(self, keys: Sequence[str], h: np.ndarray) -> np.ndarray:
        """The shard number each key (with its hash in h) was first met in, -1 where it was not."""
        out = np.full(len(h), -1, dtype=np.int32)
        top = self.top
        if top is None:
            return out
        ask = np.flatnonzero(np.fromiter((k <= top for k in keys), dtype=bool, count=len(keys)))
        where = self.buckets.bucket_of(h[ask])
        for i in np.unique(where).tolist():
            recs = self.buckets.load(i)
            q = ask[where == i]
            order = np.argsort(recs["h"])
            pos, hit = _find(recs["h"][order], h[q])
            out[q[hit]] = recs["shard"][order][pos[hit]]
        return out

    def add(self, keys: Sequence[str], h: np.ndarray, shard: int) -> None:
        """Record a shard's keys: `h` the hashes not met before (those first_shard did not find)."""
        if len(keys):
            top = max(keys)
            self.top = top if self.top is None or top > self.top else self.top
        hs = np.unique(h)
        recs = np.zeros(len(hs), dtype=SEEN)
        recs["h"], recs["shard"] = hs, shard
        self.buckets.add(recs)
        self.count += len(hs)

    def __len__(self) -> int:
        return self.count


def _find(sorted_set: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(position, found) of each value in a sorted uint64 array."""
    if not len(sorted_set):
        return np.zeros(len(values), dtype=np.int64), np.zeros(len(values), dtype=bool)
    pos = np.searchsorted(sorted_set, values)
    pos[pos == len(sorted_set)] = 0
    return pos, sorted_set[pos] == values

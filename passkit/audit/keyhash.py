"""Release-wide checks in a few bytes per sample: keys and texts as salted 64-bit hashes.

At 2 million samples a Python set or dict of keys costs hundreds of megabytes; a sorted uint64
array costs 16. The hash is keyed with a salt drawn for each audit, so a release cannot be built
to make two of its keys collide (a 64-bit blake2b collision costs ~2^32 work only when the salt is
known); an accidental collision, one in ~10^7 audits of a 2-million-sample release, could hide one
cross-shard finding. Per-shard checks never use hashes: they compare the strings themselves.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from hashlib import blake2b

import numpy as np

ABSENT = 0  # no value to compare (a column the file lacks)
NONE = 1  # the value is null / None
EMPTY = np.zeros(0, dtype=np.uint64)


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
    if not len(sorted_set) or not len(values):
        return np.zeros(len(values), dtype=bool)
    pos = np.searchsorted(sorted_set, values)
    pos[pos == len(sorted_set)] = 0
    return sorted_set[pos] == values


class SeenKeys:
    """Every key hash met so far with the first shard it was met in, as a few sorted runs.

    Runs are merged when the newest is as large as the one before (like a log-structured merge), so
    adding a shard costs O(shard log n) amortised and a lookup searches at most log2(n) runs.
    """

    def __init__(self) -> None:
        self.runs: list[tuple[np.ndarray, np.ndarray]] = []  # (sorted hashes, first shard number)

    def first_shard(self, h: np.ndarray) -> np.ndarray:
        """The shard number each hash was first met in, -1 where it was not."""
        out = np.full(len(h), -1, dtype=np.int32)
        for hs, shard in self.runs:
            pos = np.searchsorted(hs, h)
            pos[pos == len(hs)] = 0
            hit = hs[pos] == h
            out[hit] = shard[pos[hit]]
        return out

    def add(self, h: np.ndarray, shard: int) -> None:
        """Record hashes not met before (the caller leaves out those first_shard found)."""
        if not len(h):
            return
        hs = np.unique(h)
        self.runs.append((hs, np.full(len(hs), shard, dtype=np.int32)))
        while len(self.runs) > 1 and len(self.runs[-2][0]) <= 2 * len(self.runs[-1][0]):
            (a, sa), (b, sb) = self.runs[-2], self.runs[-1]
            both = np.concatenate([a, b])
            order = np.argsort(both, kind="stable")
            self.runs[-2:] = [(both[order], np.concatenate([sa, sb])[order])]

    def sorted_hashes(self) -> np.ndarray:
        if not self.runs:
            return EMPTY
        return np.sort(np.concatenate([hs for hs, _ in self.runs]))

    def __len__(self) -> int:
        return sum(len(hs) for hs, _ in self.runs)

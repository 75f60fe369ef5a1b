"""The epoch plan: which samples, in which batches, for which rank -- a pure function, no I/O.

Inputs are the samples per shard (after removals), (seed, epoch), the world size, the batch size
and the two edge policies; the output is this rank's list of batches of global sample ids. It is
computed in the main process and handed to the DataLoader workers, which only read what it says.

Order (shuffle=True):
1. the shards are permuted (RNG seeded by seed and epoch);
2. their samples are concatenated in that order and passed through a shuffle buffer of
   `buffer_size` samples (simulated on the ids: each output is a uniformly random pick from the
   buffer, refilled from the stream), so a sample moves ~buffer_size places -- cross-shard mixing
   with shard locality, like a WebDataset shuffle, but reproducible to the sample;
   buffer_size >= the number of samples is a full uniform permutation.
Without shuffle the order is the release order (sorted by key).

Balance across ranks: the sequence is cut into `world_size` contiguous blocks of equal length.
`balance="pad"` (default) makes each block ceil(N / world) long by repeating samples from the start of
the order (as torch's DistributedSampler does); `balance="drop"` makes it floor(N / world), leaving
out the tail. Every rank therefore has the same samples count and, with the same batch size and
`drop_last`, the same batches count: DDP never waits on a rank that ran out.

Contiguous blocks keep each rank on its own stretch of shards (1/world of the reads each); the
buffer already mixed samples across neighbouring shards.

Resume: a position is a batches count into this rank's plan; the plan itself depends only on
(seed, epoch, world, batch size, policies), so the remaining batches are plan[position:].
DataLoader workers take the remaining batches round-robin (worker w: w, w+W, ...), which is the
order the DataLoader yields them in, so the output order is the same for any number of workers.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, overload

import numpy as np

Balance = Literal["pad", "drop"]


def rng_for(*parts: object) -> np.random.Generator:
    """A numpy Generator seeded by a stable hash of `parts` (same on every machine and process)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return np.random.Generator(np.random.PCG64(int.from_bytes(digest[:16], "little")))


def buffer_shuffle(seq: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """What a streaming shuffle buffer of `size` items would output for `seq`.

    The buffer is not stepped through item by item (seconds of Python at PASS scale): output i is
    the item that last went into the slot picked at step i, which is the item of the previous
    step that picked the same slot, or the slot's first item -- found for all steps at once by
    sorting the picks by slot.
    """
    n = len(seq)
    size = min(size, n)
    if size <= 1:
        return seq.copy()
    if size >= n:
        return rng.permutation(seq)
    picks = rng.integers(0, size, n - size)
    small = picks.astype(np.uint16) if size <= 1 << 16 else picks  # radix sort: several times faster
    by_slot = np.argsort(small, kind="stable")  # steps grouped by slot, in step order within a slot
    slots = picks[by_slot]
    first = np.ones(len(by_slot), dtype=bool)
    first[1:] = slots[1:] != slots[:-1]
    prev = np.empty(len(by_slot), dtype=np.int64)  # per step: the previous step with its slot, or -1
    prev[by_slot[first]] = -1
    prev[by_slot[1:][~first[1:]]] = by_slot[:-1][~first[1:]]
    out = np.where(prev >= 0, seq[size + np.maximum(prev, 0)], seq[picks])
    last = np.ones(len(by_slot), dtype=bool)
    last[:-1] = first[1:]
    rest = seq[:size].copy()
    rest[slots[last]] = seq[size + by_slot[last]]
    rng.shuffle(rest)
    return np.concatenate([out.astype(seq.dtype, copy=False), rest])


def epoch_order(shard_counts: Sequence[int], *, seed: int, epoch: int, shuffle: bool,
                buffer_size: int) -> np.ndarray:
    """Global sample ids (0..N-1, numbered in release order) in this epoch's order."""
    counts = np.asarray(shard_counts, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]) if len(counts) else np.zeros(0, np.int64)
    n = int(counts.sum())
    if not shuffle:
        return np.arange(n, dtype=np.int64)
    shard_perm = rng_for("shards", seed, epoch).permutation(len(counts))
    c = counts[shard_perm]  # the shards' id ranges, laid end to end in permuted order
    seq = np.arange(n, dtype=np.int64) + np.repeat(starts[shard_perm] - (np.cumsum(c) - c), c)
    return buffer_shuffle(seq.astype(np.int64), buffer_size, rng_for("buffer", seed, epoch))


class Batches(Sequence[np.ndarray]):
    """A rank's batches as views of its ids, made when asked for: with batch_size=None a rank of a
    PASS-size release has millions of one-sample "batches", too many arrays to make up front."""

    __slots__ = ("_ids", "_size", "_start", "_stop")

    def __init__(self, ids: np.ndarray, size: int, start: int, stop: int):
        self._ids, self._size, self._start, self._stop = ids, size, start, stop

    def __len__(self) -> int:
        return self._stop - self._start

    @overload
    def __getitem__(self, i: int) -> np.ndarray: ...
    @overload
    def __getitem__(self, i: slice) -> Batches: ...
    def __getitem__(self, i: int | slice) -> np.ndarray | Batches:
        if isinstance(i, slice):
            lo, hi, step = i.indices(len(self))
            if step != 1:
                raise ValueError("batches slice with a step")
            return Batches(self._ids, self._size, self._start + lo, self._start + max(lo, hi))
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"batch {i} of {n}")
        b = self._start + (i % n)
        return self._ids[b * self._size : (b + 1) * self._size]

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return f"Batches({len(self)} of {self._size})"


@dataclass(frozen=True, slots=True)
class RankPlan:
    """One rank's epoch: `batches[i]` is an array of global sample ids."""

    batches: Batches
    samples: int  # per rank, padding included
    total: int  # samples in the release (after removals)
    padded: int  # repeated samples added over all ranks (balance="pad")
    dropped: int  # samples left out over all ranks (balance="drop", and drop_last tails)

    def __len__(self) -> int:
        return len(self.batches)


def rank_plan(shard_counts: Sequence[int], *, rank: int, world_size: int, batch_size: int | None,
              seed: int = 0, epoch: int = 0, shuffle: bool = False, buffer_size: int = 1000,
              balance: Balance = "pad", drop_last: bool = False) -> RankPlan:
    """This rank's batches for an epoch (batch_size None: one sample per "batch")."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of {world_size}")
    if balance not in ("pad", "drop"):
        raise ValueError(f"balance={balance!r}: use 'pad' (repeat samples) or 'drop' (leave the tail out)")
    order = epoch_order(shard_counts, seed=seed, epoch=epoch, shuffle=shuffle, buffer_size=buffer_size)
    n = len(order)
    if n == 0:
        raise ValueError("the release has no samples to read (all removed?)")
    per = math.ceil(n / world_size) if balance == "pad" else n // world_size
    if per == 0:
        raise ValueError(
            f"{n} samples cannot give each of {world_size} ranks one sample with balance='drop'; "
            "use balance='pad' or fewer ranks"
        )
    need = per * world_size
    padded = max(0, need - n)
    if padded:
        order = np.concatenate([order, np.resize(order, padded)])
    mine = order[rank * per : (rank + 1) * per]
    bs = batch_size or 1
    nb = per // bs if drop_last else math.ceil(per / bs)
    batches = Batches(mine, bs, 0, nb)
    dropped = max(0, n - need) + (per - nb * bs) * world_size
    return RankPlan(batches, per, n, padded, dropped)

"""Near-duplicate search over 64-bit perceptual hashes, exact for a Hamming threshold, at scale.

Why multi-index hashing (Norouzi et al., "Fast search in Hamming space with multi-index hashing"):
comparing every pair is quadratic (10^14 pairs for 10 million images), while locality-sensitive
bands miss pairs. Split the 64 bits into `m` disjoint blocks; if two hashes differ in at most `t`
bits, at least one block differs in at most `t // m` bits (pigeonhole; `block_radii` tightens it
per block). So for each block we index the hashes by that block's value and probe every value
within that radius of a query's block: the candidates are a superset of the true neighbours,
verified with a full 64-bit popcount. No pair within the threshold is ever missed.

Scale (benchmarks/near_dup.py, t=8, 2 shared cores): 1M hashes in ~7-16 s and ~0.4 GiB peak RSS.
The work grows as N x probes (gathers) plus N^2 / 2^21 (candidates), so past ~4M hashes the
candidates dominate and time grows faster than linearly; the blocks are independent, so they can
run on separate processes or machines. Memory is what HashIndex bounds at PASS scale
(benchmarks/tools_scale.py dedup, 10 % near-duplicates): 2M hashes peak at ~0.55 GiB RSS (0.65
before), and 20M stayed near 1.05 GiB where the indexes of all blocks alone used to take ~2.9 GiB:
a block's index is built for its search and dropped after it, only as many blocks run at once as
fit MEMORY_BUDGET (one at 20M), and probe chunks shrink as buckets fill.

Everything is vectorised with numpy: a block's index is a direct-address table (bucket starts over
`2**width` values, width <= 24 bits; a bucket's size is the next start minus its own) plus the argsort of the block values; one probe
of all queries with one flip mask is a gather, a repeat and a popcount. `m` is chosen by a cost
model from the sizes involved; tiny inputs are compared brute force.

`near_duplicates` turns the neighbour pairs into a deterministic decision: walking the hashes in
their given order (source order), one is dropped when an earlier *kept* hash lies within the
threshold, and the detail names the nearest such keeper.
"""

from __future__ import annotations

import itertools
import math
import os
from array import array
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

HASH_BITS = 64
MAX_TABLE_BITS = 24  # direct-address tables stay <= 64 MiB (int32 starts)
TABLE_CHUNK = 1 << 20  # table entries filled at once (no full-table temporaries)
BRUTE_FORCE_PAIRS = 4_000_000  # below this many query x base comparisons, compare them all
CHUNK_ROWS = 1 << 20  # queries probed at once, at most
MIN_CHUNK_ROWS = 1 << 14  # ... and at least (fewer make Python's per-probe cost dominate)
CANDIDATES = 1 << 21  # candidates one probe of a chunk expands to, about (bounds its temporaries)
CACHE_HASHES = 1 << 22  # block indexes over more hashes than this are rebuilt per search, not kept
MEMORY_BUDGET = 768 << 20  # block indexes searched at once must fit this (fewer threads if not)
KEEP_FIRST_SLICE = 1 << 20  # pairs turned into Python ints at a time
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


class HashListError(ValueError):
    """A hash list or folder given for decontamination cannot be read; the message says which line."""


def to_uint64(hashes: Iterable[str | int | None] | np.ndarray) -> np.ndarray:
    """16-hex-digit pHash strings (or ints) -> uint64 array."""
    if isinstance(hashes, np.ndarray) and hashes.dtype == np.uint64:
        return hashes
    out = [int(h, 16) if isinstance(h, str) else int(h) for h in hashes]  # type: ignore[arg-type]
    return np.array(out, dtype=np.uint64)


def hamming(a: str | int, b: str | int) -> int:
    x = int(a, 16) if isinstance(a, str) else a
    y = int(b, 16) if isinstance(b, str) else b
    return (x ^ y).bit_count()


def _popcount(x: np.ndarray) -> np.ndarray:
    return np.bitwise_count(x)


def _masks(width: int, radius: int) -> np.ndarray:
    """Every `width`-bit mask with at most `radius` bits set, the zero mask first."""
    out = [0]
    for r in range(1, radius + 1):
        for bits in itertools.combinations(range(width), r):
            out.append(sum(1 << b for b in bits))
    return np.array(out, dtype=np.int64)


def _widths(m: int) -> list[int]:
    base, extra = divmod(HASH_BITS, m)
    return [base + (1 if i < extra else 0) for i in range(m)]


def _probes(width: int, radius: int) -> int:
    return sum(math.comb(width, k) for k in range(radius + 1))


def block_radii(m: int, threshold: int) -> list[int]:
    """Search radius per block (Norouzi et al.): with t = m*r + a, a pair within t differs in at most
    r bits in one of the first a+1 blocks, or in at most r-1 bits in one of the others (else it would
    differ in (a+1)(r+1) + (m-a-1)r = t+1 bits). -1: the block need not be searched."""
    r, a = divmod(threshold, m)
    return [r if i <= a else r - 1 for i in range(m)]


def choose_blocks(n_base: int, n_query: int, threshold: int) -> int | None:
    """Number of blocks minimising probe + candidate work, None when brute force is cheaper."""
    if n_base * n_query <= BRUTE_FORCE_PAIRS:
        return None
    best: tuple[float, int] | None = None
    for m in range(1, threshold + 2):
        widths = _widths(m)
        if max(widths) > MAX_TABLE_BITS:
            continue
        cost = 0.0
        for w, r in zip(widths, block_radii(m, threshold), strict=True):
            if r < 0:
                continue
            occupancy = n_base / 2**w
            # one gather per probe and query, ~4x that per candidate verified
            cost += _probes(w, r) * n_query * (1.0 + 4.0 * occupancy)
        if best is None or cost < best[0]:
            best = (cost, m)
    if best is None or best[0] > 4.0 * n_base * n_query:
        return None
    return best[1]


@dataclass(frozen=True, slots=True)
class Pairs:
    """Hash pairs within the threshold: query position, base position, Hamming distance."""

    query: np.ndarray
    base: np.ndarray
    distance: np.ndarray

    def __len__(self) -> int:
        return int(self.query.shape[0])


def _empty() -> Pairs:
    e = np.zeros(0, dtype=np.int64)
    return Pairs(e, e.copy(), e.copy())


def _finish(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]], n_base: int) -> Pairs:
    if not parts:
        return _empty()
    q = np.concatenate([p[0] for p in parts]).astype(np.int64, copy=False)
    b = np.concatenate([p[1] for p in parts]).astype(np.int64, copy=False)
    code = q * max(n_base, 1) + b
    del q, b
    d = np.concatenate([p[2] for p in parts])
    parts.clear()
    # A pair can match in several blocks: keep each once, sorted by (query, base).
    code, first = np.unique(code, return_index=True)
    base = max(n_base, 1)
    return Pairs(code // base, code % base, d[first].astype(np.int64))


def _index_dtype(n: int) -> type[np.signedinteger]:
    """Positions stored compactly: int32 while they fit (half the memory of int64 at 20M hashes)."""
    return np.int32 if n < 2**31 else np.int64


class _Block(NamedTuple):
    """One block's index: its bit range, the argsort of the base hashes by block value, bucket
    starts over all 2**width values (and one past the last), and the hashes in that order (candidates are
    verified on them: sequential reads). The block values themselves are not kept: a chunk of
    queries recomputes its own from the hashes, which saves 8 bytes per hash."""

    shift: int
    width: int
    order: np.ndarray
    starts: np.ndarray
    base_sorted: np.ndarray


def _block_values(h: np.ndarray, shift: int, width: int) -> np.ndarray:
    return ((h >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(np.int64)


def _build_block(base: np.ndarray, shift: int, width: int) -> _Block:
    vals = ((base >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(np.uint32)
    order = np.argsort(vals, kind="stable")
    sorted_vals = vals[order]
    del vals
    # Bucket v's rows start at the first sorted value >= v; filled a chunk of values at a time, so
    # building a 2**24 table takes its own 64 MB and no int64 temporaries of its size.
    starts = np.empty((1 << width) + 1, dtype=_index_dtype(len(base) + 1))
    for lo in range(0, len(starts), TABLE_CHUNK):
        hi = min(len(starts), lo + TABLE_CHUNK)
        starts[lo:hi] = np.searchsorted(sorted_vals, np.arange(lo, hi, dtype=np.int64))
    del sorted_vals
    return _Block(shift, width, order.astype(_index_dtype(len(base))), starts, base[order])


def _block_bytes(n: int, width: int) -> int:
    """Memory of one block's index, and of building it (argsort's int64 output, the values)."""
    return n * (8 + np.dtype(_index_dtype(n)).itemsize) + (1 << width) * 4 + n * 16


class HashIndex:
    """Multi-index over `base` hashes for radius-`threshold` Hamming search.

    `query(q)` finds every (query, base) pair within the threshold; `self_pairs()` every pair of
    base hashes (i < j). Thread-parallel over blocks (numpy releases the GIL in the heavy parts).

    Memory is bounded at PASS scale (tens of millions of hashes): a block's index is built when
    its search starts and dropped when it ends (kept for reuse only while small), no more blocks
    are searched at once than fit `MEMORY_BUDGET`, and queries are probed in chunks sized so that
    one probe expands to at most `CANDIDATES` candidates.
    """

    def __init__(self, base: np.ndarray | Sequence[str], threshold: int, *, blocks: int | None = None,
                 threads: int | None = None, budget: int | None = None, cache: bool = True):
        if not 0 <= threshold < HASH_BITS:
            raise ValueError(f"Hamming threshold {threshold} is outside 0..63")
        self.base = to_uint64(base)
        self.threshold = int(threshold)
        self.threads = threads or min(4, os.cpu_count() or 1)
        self.blocks = blocks
        # `budget`: bytes the search may use beyond the hashes (MEMORY_BUDGET when None); a smaller
        # one gives fewer blocks at once and smaller probe chunks, at the same speed per thread.
        self.budget = budget or MEMORY_BUDGET
        self.candidates = CANDIDATES if budget is None else max(MIN_CHUNK_ROWS, min(CANDIDATES, budget // 200))
        self._tables: dict[tuple[int, int], _Block] = {}
        self.cache = cache  # False: every search builds its block indexes anew (memory of one block)

    def _block(self, shift: int, width: int, keep: bool = True) -> _Block:
        """A block's index; kept for later searches when `keep` and small (self_pairs searches each
        block once, so it keeps none)."""
        key = (shift, width)
        tab = self._tables.get(key)
        if tab is None:
            tab = _build_block(self.base, shift, width)
            if keep and self.cache and len(self.base) <= CACHE_HASHES:
                self._tables[key] = tab
        return tab

    def query(self, queries: np.ndarray | Sequence[str]) -> Pairs:
        q = to_uint64(queries)
        return self._search(q, self_join=False)

    def self_pairs(self) -> Pairs:
        """Every pair i < j of base hashes within the threshold."""
        return self._search(self.base, self_join=True)

    def _search(self, q: np.ndarray, self_join: bool) -> Pairs:
        n_b, n_q = len(self.base), len(q)
        if n_b == 0 or n_q == 0:
            return _empty()
        m = self.blocks or choose_blocks(n_b, n_q, self.threshold)
        if m is None:
            return self._brute(q, self_join)
        radii = block_radii(m, self.threshold)
        specs = []
        shift = 0
        for w, r in zip(_widths(m), radii, strict=True):
            if r >= 0:
                specs.append((shift, w, r))
            shift += w
        idx = _index_dtype(max(n_b, n_q))

        def one_block(spec: tuple[int, int, int]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
            shift, w, r = spec
            tab = self._block(shift, w, keep=not self_join)
            order, starts, base_sorted = tab.order, tab.starts, tab.base_sorted
            # Queries are walked in the order of their block value: the probes v ^ f then touch the
            # tables in long monotone runs, several times faster than random order on large inputs.
            # Candidates are verified on hashes laid out in that order; positions are looked up only
            # for the few hits.
            if self_join:
                qpos, qhash = order, base_sorted
            else:
                qpos = np.argsort(_block_values(q, shift, w), kind="stable").astype(idx)
                qhash = q[qpos]
            found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
            masks = _masks(w, r).tolist()
            groups: dict[int, list[int]] = {}
            for f in masks:  # grouped by highest set bit (-1: the zero mask)
                groups.setdefault(f.bit_length() - 1, []).append(f)
            # one probe of a chunk expands to about rows x occupancy candidates, each costing ~40
            # bytes of temporaries: size the chunk to keep that near CANDIDATES
            occupancy = max(1.0, n_b / 2**w)
            chunk = int(min(CHUNK_ROWS, max(MIN_CHUNK_ROWS, self.candidates / occupancy)))
            for lo in range(0, n_q, chunk):
                qv_all = _block_values(qhash[lo : lo + chunk], shift, w)
                for top, fs in groups.items():
                    if self_join and top >= 0:
                        # buckets u and u ^ f meet twice; take each meeting once, from the side
                        # whose top flipped bit is 0 (half the queries)
                        rows = np.flatnonzero((qv_all & (1 << top)) == 0)
                        qv = qv_all[rows]
                    else:
                        rows, qv = None, qv_all
                    for f in fs:
                        probe = qv ^ f
                        first = starts[probe]
                        c = starts[probe + 1] - first
                        nz = np.flatnonzero(c)
                        if nz.size == 0:
                            continue
                        lens = c[nz].astype(np.int64)
                        total = int(lens.sum())
                        cand = np.repeat(first[nz] - (np.cumsum(lens) - lens), lens)
                        cand += np.arange(total, dtype=np.int64)
                        qrow = np.repeat(nz if rows is None else rows[nz], lens) + lo
                        d = _popcount(qhash[qrow] ^ base_sorted[cand])
                        hit = np.flatnonzero(d <= self.threshold)
                        if hit.size == 0:
                            continue
                        qi, bi, dh = qpos[qrow[hit]], order[cand[hit]], d[hit]
                        if self_join:
                            keep = qi != bi if f else bi > qi
                            qi, bi, dh = qi[keep], bi[keep], dh[keep]
                            qi, bi = np.minimum(qi, bi), np.maximum(qi, bi)
                        found.append((qi.astype(idx, copy=False), bi.astype(idx, copy=False),
                                      dh.astype(np.uint8, copy=False)))
            return found

        per_block = _block_bytes(max(n_b, n_q), max(w for _, w, _ in specs)) + 40 * self.candidates
        workers = max(1, min(self.threads, len(specs), self.budget // per_block))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            parts = [p for block in pool.map(one_block, specs) for p in block]
        return _finish(parts, n_b)

    def _brute(self, q: np.ndarray, self_join: bool) -> Pairs:
        parts = []
        step = max(1, BRUTE_FORCE_PAIRS // max(len(self.base), 1))
        for lo in range(0, len(q), step):
            block = q[lo : lo + step]
            d = _popcount(block[:, None] ^ self.base[None, :])
            mask = d <= self.threshold
            if self_join:
                mask &= np.arange(len(self.base))[None, :] > (np.arange(len(block)) + lo)[:, None]
            qi, bi = np.nonzero(mask)
            parts.append((qi.astype(np.int64) + lo, bi.astype(np.int64), d[qi, bi].astype(np.int64)))
        return _finish(parts, len(self.base))


@dataclass(frozen=True, slots=True)
class NearDuplicate:
    """Position `index` is dropped as a near-duplicate of the earlier kept position `kept`."""

    index: int
    kept: int
    distance: int


def near_duplicates(hashes: np.ndarray | Sequence[str], threshold: int, **kw: int) -> list[NearDuplicate]:
    """Greedy in the given order: a hash goes when an earlier kept hash is within `threshold`.

    Deterministic: the result depends only on the order and values of the hashes. Among several
    earlier keepers, the nearest is named (ties: the earliest).
    """
    return keep_first(HashIndex(hashes, threshold, **kw).self_pairs())


def keep_first(pairs: Pairs) -> list[NearDuplicate]:
    """The greedy rule of `near_duplicates` applied to precomputed self-pairs (i < j)."""
    drop, kept, distance = first_kept(pairs)
    return [NearDuplicate(j, i, d) for j, i, d in zip(drop.tolist(), kept.tolist(), distance.tolist(), strict=True)]


def first_kept(pairs: Pairs, removed: bytearray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`keep_first` as arrays (dropped position, its keeper, their distance), in dropped order:
    8 bytes a number, not a Python object a duplicate, for millions of them.

    `removed` (a flag per position, set here for each dropped one) carries the decisions from one
    call to the next, so pairs can be decided in ranges of `j` taken in order."""
    if not len(pairs):
        e = np.zeros(0, dtype=np.int64)
        return e, e.copy(), e.copy()
    # pairs are (i, j) with i < j; decide j once every i < j is decided: sort by (j, distance, i).
    # Walked in slices with a flag per position, not a dict of results.
    order = np.lexsort((pairs.query, pairs.distance, pairs.base))
    if removed is None:
        removed = bytearray(int(max(pairs.query.max(), pairs.base.max())) + 1)
    drop, kept, distance = array("q"), array("q"), array("q")
    for lo in range(0, len(order), KEEP_FIRST_SLICE):
        sl = order[lo : lo + KEEP_FIRST_SLICE]
        for i, j, d in zip(pairs.query[sl].tolist(), pairs.base[sl].tolist(), pairs.distance[sl].tolist(),
                           strict=True):
            if removed[j] or removed[i]:
                continue
            removed[j] = 1
            drop.append(j)
            kept.append(i)
            distance.append(d)
    return (np.frombuffer(drop, dtype=np.int64), np.frombuffer(kept, dtype=np.int64),
            np.frombuffer(distance, dtype=np.int64))


def nearest_matches(queries: np.ndarray | Sequence[str], reference: np.ndarray | Sequence[str],
                    threshold: int, **kw: int) -> dict[int, tuple[int, int]]:
    """query position -> (reference position, distance) of its nearest reference within threshold."""
    pairs = HashIndex(reference, threshold, **kw).query(queries)
    out: dict[int, tuple[int, int]] = {}
    order = np.lexsort((pairs.base, pairs.distance, pairs.query))
    for qi, bi, d in zip(pairs.query[order].tolist(), pairs.base[order].tolist(),
                         pairs.distance[order].tolist(), strict=True):
        out.setdefault(qi, (bi, d))
    return out


# ----------------------------------------------------------------------------- reference sets


@dataclass(frozen=True, slots=True)
class ReferenceSet:
    """Hashes of an evaluation set (e.g. ImageNet val) that a release must not overlap."""

    hashes: np.ndarray
    names: list[str]  # where each hash came from ("imagenet-val/ILSVRC2012_val_00000001.JPEG", "list.txt:3")
    skipped: list[str]  # files that could not be decoded


def read_hash_list(path: Path) -> tuple[list[int], list[str]]:
    """A text file with one 16-hex-digit pHash per line (first column; `#` comments and blanks ignored)."""
    hashes: list[int] = []
    names: list[str] = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        token = text.replace(",", " ").split()[0]
        try:
            value = int(token, 16)
        except ValueError:
            raise HashListError(
                f"{path}:{n}: {token!r} is not a hex pHash; a hash list holds one 16-hex-digit hash per line"
            ) from None
        if not 0 <= value < 2**64:
            raise HashListError(f"{path}:{n}: {token!r} is longer than 64 bits")
        hashes.append(value)
        names.append(f"{Path(path).name}:{n}")
    return hashes, names


def hash_image_file(path: Path, image_spec: object) -> str:
    """pHash of an image file computed exactly as the image check computes it for a candidate."""
    from passkit import images
    from passkit.config import ImageSpec

    assert isinstance(image_spec, ImageSpec)
    return images.check(Path(path).read_bytes(), image_spec).info.phash


def load_reference(paths: Sequence[str | Path], image_spec: object, threads: int | None = None) -> ReferenceSet:
    """Hashes from folders of images (recursive) and hash-list files, in a deterministic order."""
    from passkit.images import ImageReject

    hashes: list[int] = []
    names: list[str] = []
    skipped: list[str] = []
    for p in map(Path, paths):
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)

            def one(f: Path) -> tuple[Path, str | None]:
                try:
                    return f, hash_image_file(f, image_spec)
                except (ImageReject, OSError):
                    return f, None

            with ThreadPoolExecutor(max_workers=threads or os.cpu_count() or 1) as pool:
                for f, h in pool.map(one, files):
                    if h is None:
                        skipped.append(str(f))
                        continue
                    hashes.append(int(h, 16))
                    names.append(f"{p.name}/{f.relative_to(p)}")
        elif p.is_file():
            hs, ns = read_hash_list(p)
            hashes += hs
            names += ns
        else:
            raise HashListError(f"exclude_near: {p} is neither a folder of images nor a hash-list file")
    return ReferenceSet(np.array(hashes, dtype=np.uint64), names, skipped)

"""The release-wide rules at many staged candidates: the same decisions as a direct computation over
all rows at once, in memory that does not grow with the candidates (columns on disk, one byte of
fate a candidate, bounded chunks and buckets)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from passkit import spill
from passkit.filters import dedup
from passkit.release import curate
from passkit.spill import ColumnStore
from tests.helpers.staging import make_spec

ROWS = 300_000


def _store(folder: Path, rng: np.random.Generator) -> ColumnStore:
    """ROWS staged candidates at every third position, with repeated keys, repeated image bytes,
    near copies (pHashes a few bits apart), busy creators, a few blank images and a takedown."""
    pos = np.arange(ROWS, dtype=np.int64) * 3
    key = rng.integers(1, 2**63, ROWS, dtype=np.uint64)
    key[rng.choice(ROWS, 2_000, replace=False)] = key[rng.choice(ROWS, 2_000)]  # a source id twice
    sha = rng.integers(1, 2**63, ROWS, dtype=np.uint64)
    sha[rng.choice(ROWS, 5_000, replace=False)] = sha[rng.choice(ROWS, 5_000)]
    phash = rng.integers(0, 2**63, ROWS, dtype=np.uint64)
    copies = rng.choice(ROWS, 3_000, replace=False)
    phash[copies] = phash[rng.choice(ROWS, 3_000)] ^ rng.choice([1, 3, 7, 1 << 40, 5 << 20], 3_000).astype(np.uint64)
    creator = rng.integers(1, 40_000, ROWS).astype(np.uint64)  # about 7 samples a creator
    creator[rng.random(ROWS) < 0.05] = 0  # unknown creator: never capped
    takedown = np.full(ROWS, -1, np.int16)
    takedown[rng.choice(ROWS, 50, replace=False)] = 0
    blank = rng.random(ROWS) < 0.001
    with ColumnStore(folder, curate.STORE_COLUMNS) as store:
        for lo in range(0, ROWS, 70_000):
            sl = slice(lo, lo + 70_000)
            store.append({"pos": pos[sl], "key": key[sl], "sha": sha[sl], "phash": phash[sl], "creator": creator[sl],
                          "takedown": takedown[sl], "blank": blank[sl]})
    return store


def _expected(store: ColumnStore, cap: int, near: int) -> tuple[np.ndarray, dict[int, int]]:
    """Fate of every row, and the row each exact or near duplicate names, computed over all rows at
    once (the near-duplicate search over every kept pHash in one index)."""
    cols = {c: store.read(c, 0, ROWS) for c in curate.STORE_COLUMNS}
    fate = np.full(ROWS, curate.KEPT, np.int8)
    refs: dict[int, int] = {}

    def first_stays(values: np.ndarray, rule: int, limit: int = 1, skip_zero: bool = False) -> None:
        seen: dict[int, list[int]] = {}
        for r in np.flatnonzero(fate == curate.KEPT).tolist():
            v = int(values[r])
            if skip_zero and v == 0:
                continue
            group = seen.setdefault(v, [])
            if len(group) >= limit:
                fate[r] = rule
                refs[r] = group[0]
            group.append(r)

    first_stays(cols["key"], 0)
    fate[(fate == curate.KEPT) & cols["blank"]] = 1
    exact = {r for r in refs}
    first_stays(cols["sha"], 3)
    exact = {r: refs[r] for r in refs if r not in exact}
    alive = np.flatnonzero(fate == curate.KEPT)
    for d in dedup.near_duplicates(cols["phash"][alive], near):
        fate[alive[d.index]] = 4
        exact[int(alive[d.index])] = int(alive[d.kept])
    first_stays(cols["creator"], 5, limit=cap, skip_zero=True)
    fate[(fate == curate.KEPT) & (cols["takedown"] >= 0)] = 6
    return fate, exact


@pytest.fixture
def small_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(curate, "CHUNK_ROWS", 1 << 14)
    monkeypatch.setattr(curate, "BUCKET_ROWS", 1 << 15)  # about ten buckets per grouping rule
    monkeypatch.setattr(curate, "NEAR_DUP_ROWS", 1 << 16)  # five parts of pHashes
    monkeypatch.setattr(curate, "PAIR_SPAN", 1 << 16)
    monkeypatch.setattr(curate, "NEAR_DUP_MEMORY", 1 << 20)
    monkeypatch.setattr(spill, "BUFFER_ROWS", 1 << 13)

@pytest.mark.usefixtures("small_pieces")
def test_rules_decide_as_over_all_rows_in_bounded_memory(tmp_path: Path) -> None:
    store = _store(tmp_path / "columns", np.random.default_rng(7))
    cap = 3
    spec = make_spec(max_per_creator=cap, near_dup_hamming=6, drop_blank=True,
                     takedowns=[{"key": "any", "reason": "asked"}])
    want, named = _expected(store, cap, 6)
    tracemalloc.start()
    cur = curate.curate(curate.Scan(store, tmp_path / "work"), spec)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert np.array_equal(cur.fate, want)
    assert set(np.unique(want).tolist()) == {curate.KEPT, 0, 1, 3, 4, 5, 6}  # every rule here had work
    recs = cur.rejected.between(0, 3 * ROWS)
    assert len(recs) == int(np.count_nonzero(want != curate.KEPT))
    assert np.array_equal(recs["row"], np.flatnonzero(want != curate.KEPT))  # by position = by row here
    assert np.array_equal(recs["rule"], want[want != curate.KEPT])
    dup = recs[np.isin(recs["rule"], [3, 4])]
    assert dict(zip(dup["row"].tolist(), dup["ref"].tolist(), strict=True)) == named
    # Columns in memory would take 41 bytes a row (12 MB here) before any sort, one index over
    # every pHash 20 more; on disk, the rules hold one byte a row, a chunk, a bucket and a part.
    assert peak < 8 << 20, f"curation held {peak / 2**20:.1f} MiB for {ROWS:,} staged candidates"

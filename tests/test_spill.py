"""The on-disk helpers of the release step and the audit give back exactly what was put in, in the order promised."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from passkit.spill import ColumnStore, RangeSpill, RowLookup, chunks


def test_column_store_reads_any_row_range(tmp_path: Path) -> None:
    with ColumnStore(tmp_path / "c", {"a": np.int64, "b": np.bool_}) as store:
        store.append({"a": np.arange(5), "b": np.arange(5) % 2 == 0})
        store.append({"a": np.arange(5, 12), "b": np.zeros(7, bool)})
    assert store.rows == 12
    assert store.read("a", 3, 9).tolist() == list(range(3, 9))
    assert store.read("b", 0, 5).tolist() == [True, False, True, False, True]
    assert store.read("a", 10, 50).tolist() == [10, 11] and len(store.read("a", 12, 20)) == 0
    assert [hi - lo for lo, hi in chunks(12, 5)] == [5, 5, 2]


def test_range_spill_sorts_each_range_whatever_the_adding_order(tmp_path: Path) -> None:
    dt = np.dtype([("pos", "<i8"), ("v", "<i2")])
    spill = RangeSpill(tmp_path / "r", dt, "pos", span=4, limit=40)
    rng = np.random.default_rng(0)
    pos = rng.permutation(np.arange(0, 40, 3))
    for part in np.array_split(pos, 3):
        spill.add(np.array(list(zip(part, part % 7, strict=True)), dt))
    assert spill.added == len(pos)
    got = spill.between(5, 23)
    assert got["pos"].tolist() == [p for p in range(0, 40, 3) if 5 <= p < 23]
    assert (got["v"] == got["pos"] % 7).all()
    assert len(spill.between(40, 100)) == 0 and len(spill.between(7, 7)) == 0


def test_row_lookup_follows_the_asked_order_across_row_groups(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"k": [f"k{i}" for i in range(10)], "n": list(range(10))}), path, row_group_size=3)
    lookup = RowLookup(path)
    got = lookup.take(np.array([9, 0, 4, 4, 7]), ["k", "n"])
    lookup.close()
    assert got == {"k": ["k9", "k0", "k4", "k4", "k7"], "n": [9, 0, 4, 4, 7]}


def test_partitioned_keeps_each_parts_records_in_the_order_added(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from passkit import spill

    monkeypatch.setattr(spill, "BUFFER_ROWS", 5)  # several flushes
    dt = np.dtype([("v", "<u8"), ("n", "<i8")])
    parts = spill.Partitioned(tmp_path / "p", dt, 3, lambda r: (r["v"] % np.uint64(3)).astype(np.int64))
    values = np.random.default_rng(1).integers(0, 1000, 40).astype(np.uint64)
    for lo in range(0, 40, 7):
        parts.add(np.array([(v, lo + i) for i, v in enumerate(values[lo : lo + 7])], dt))
    got = list(parts)
    assert parts.added == 40 and sum(len(g) for g in got) == 40
    for i, g in enumerate(got):
        assert (g["v"] % 3 == i).all()
        assert g["n"].tolist() == [n for n in range(40) if values[n] % 3 == i]  # the order added


def test_an_empty_column_store_reads_as_empty(tmp_path: Path) -> None:
    with ColumnStore(tmp_path / "c", {"a": np.int64}) as store:
        pass
    assert store.rows == 0 and len(store.read("a", -1, 0)) == 0 and len(store.read("a", 0, 10)) == 0

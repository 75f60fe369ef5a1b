"""The release step's scale-out: shards written by jobs on worker processes (and in fixed Parquet
row groups) give the same release as one process, byte for byte."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from passkit.release import build, curate, keysort, shardwrite, tables
from passkit.release.build import build_release
from tests.helpers.staging import Item, basic_items, flat, make_spec, near_copy, texture, write_units

pytestmark = pytest.mark.usefixtures("fixed_date")


@pytest.fixture
def fixed_date(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")


def _items() -> list[Item]:
    # Every release rule fires at least once: repeated source id, blank, exact and near copies, cap.
    return basic_items(14) + [
        Item("dup", near_copy(texture(2))), Item("blank", flat((250, 250, 250))), Item("exact", texture(4)),
        Item("s03", texture(3)), Item("nc", texture(60), license="cc-by-nc-2.0"),
    ] + [Item(f"p{i}", texture(300 + i), "Prolific Person") for i in range(4)]


def _build(tmp: Path, name: str, **kw: object) -> Path:
    spec = make_spec(max_per_creator=2, shard_max_samples=2)
    units = tmp / "units"
    if not units.exists():
        write_units(units, _items(), spec, unit_size=5)
    idx = sorted(int(p.stem.split("-")[1]) for p in units.glob("unit-*.parquet"))
    out = tmp / name
    build_release(spec, units, idx, out, {"kind": "test"}, base=tmp, **kw)
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_worker_processes_write_the_same_release(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    one = _build(tmp_path, "one")
    monkeypatch.setattr(shardwrite, "JOB_SAMPLES", 4)  # several jobs of two shards, racing each other
    two = _build(tmp_path, "two", workers=2, parallel_from=0)
    a, b = _files(one), _files(two)
    assert len([f for f in a if f.startswith("shards/")]) >= 4
    assert a.keys() == b.keys()
    assert [f for f in a if a[f] != b[f]] == []


def test_key_sort_in_runs_gives_the_same_release(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    one = _build(tmp_path, "one")
    monkeypatch.setattr(keysort, "RUN_ROWS", 3)  # the kept samples sorted in runs of 3, then merged
    monkeypatch.setattr(keysort, "BATCH_ROWS", 2)
    runs = _build(tmp_path, "runs")
    a, b = _files(one), _files(runs)
    assert a.keys() == b.keys() and [f for f in a if a[f] != b[f]] == []
    assert not list(tmp_path.glob("**/.sort")), "the sort's runs were left behind"


def test_curation_in_small_pieces_gives_the_same_release(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    one = _build(tmp_path, "one")
    monkeypatch.setattr(curate, "CHUNK_ROWS", 3)  # columns read three rows at a time
    monkeypatch.setattr(curate, "BUCKET_ROWS", 2)  # grouping rules over many buckets on disk
    monkeypatch.setattr(curate, "REJECTION_SPAN", 4)  # rejections in many range files
    monkeypatch.setattr(curate, "NEAR_DUP_ROWS", 3)  # near-duplicates searched part against part
    monkeypatch.setattr(curate, "PAIR_SPAN", 4)  # ... and decided in ranges
    monkeypatch.setattr(build, "LOOKUP_ROWS", 2)  # details made two rejections at a time
    small = _build(tmp_path, "small")
    a, b = _files(one), _files(small)
    assert a.keys() == b.keys() and [f for f in a if a[f] != b[f]] == []
    reasons = set(pq.read_table(one / tables.REJECTED_FILE, columns=["reason"]).column("reason").to_pylist())
    assert {"duplicate_candidate", "blank", "duplicate", "near_duplicate", "creator_cap"} <= reasons
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".")], "work files were left behind"


def test_row_groups_hold_the_same_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    one = _build(tmp_path, "one")
    monkeypatch.setattr(tables, "ROW_GROUP", 4)
    small = _build(tmp_path, "small")
    for name in (tables.INDEX_FILE, tables.REJECTED_FILE):
        big, parts = pq.ParquetFile(one / name), pq.ParquetFile(small / name)
        assert big.metadata.num_row_groups == 1
        assert parts.metadata.num_row_groups == -(-big.metadata.num_rows // 4)
        assert all(parts.metadata.row_group(i).num_rows == 4 for i in range(parts.metadata.num_row_groups - 1))
        assert parts.read().to_pylist() == big.read().to_pylist()


def test_units_filtered_by_other_detectors_stop_the_release(tmp_path: Path) -> None:
    spec = make_spec()
    units = tmp_path / "units"
    idx = write_units(units, basic_items(8), spec, unit_size=4)
    ledger = units / "unit-000001.parquet"
    t = pq.read_table(ledger)
    pq.write_table(t.replace_schema_metadata({b"passkit.detectors": b'{"detectors": [], "skipped": []}'}), ledger)
    with pytest.raises(RuntimeError, match="other detectors than the others"):
        build_release(spec, units, idx, tmp_path / "out", {"kind": "test"}, base=tmp_path)
    assert not (tmp_path / "out").exists()

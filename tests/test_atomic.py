"""passkit.atomic: a destination is replaced whole or left as it was, and no temporary survives."""

from __future__ import annotations

from pathlib import Path

import pytest

from passkit import atomic


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_a_file_appears_whole(tmp_path: Path) -> None:
    dest = tmp_path / "ledger.parquet"
    dest.write_bytes(b"old")
    with atomic.atomic_path(dest) as tmp:
        tmp.write_bytes(b"new")
        assert dest.read_bytes() == b"old"  # readers see the old file until the rename
        assert tmp.name.startswith(".ledger.parquet.tmp-")
    assert dest.read_bytes() == b"new"
    assert _leftovers(tmp_path) == []


def test_a_failed_write_leaves_the_destination_and_no_temporary(tmp_path: Path) -> None:
    dest = tmp_path / "shard.tar"
    dest.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic.atomic_path(dest, fsync=True) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed mid-write")
    assert dest.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def test_a_folder_appears_whole_and_a_stale_temporary_is_cleared(tmp_path: Path) -> None:
    dest = tmp_path / "demo-1.0.1"
    stale = atomic.temp_name(dest)
    (stale / "shards").mkdir(parents=True)  # what a killed process with this pid left
    (stale / "shards" / "junk.tar").write_bytes(b"x")
    with atomic.atomic_path(dest) as tmp:
        assert not tmp.exists()
        (tmp / "shards").mkdir(parents=True)
        (tmp / "manifest.json").write_text("{}")
    assert sorted(p.name for p in dest.rglob("*")) == ["manifest.json", "shards"]
    assert _leftovers(tmp_path) == []


def test_write_helpers(tmp_path: Path) -> None:
    atomic.write_bytes(tmp_path / "a.bin", b"\x00\x01")
    atomic.write_text(tmp_path / "b.json", '{"k": "é"}')
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "b.json").read_text(encoding="utf-8") == '{"k": "é"}'

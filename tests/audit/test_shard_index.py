"""The audit re-derives each shard's DALI index file from its tar: a wrong one fails, none at all warns."""

from __future__ import annotations

from pathlib import Path

import pytest

from passkit.audit import audit
from passkit.shards import sha256_file
from tests.helpers.releases import load_manifest, make_release, save_manifest

IDX0 = "shards/test-000000.idx"


@pytest.fixture
def release(tmp_path: Path) -> Path:
    return make_release(tmp_path / "releases", n=8, shard_max=4, wds_index=True)


def _codes(release: Path, workers: int = 1) -> tuple[list[str], list[str]]:
    r = audit(release, workers=workers)
    return sorted({f.code for f in r.findings}), [w.code for w in r.warnings]


def test_clean_release_with_index_files(release: Path) -> None:
    assert _codes(release) == ([], [])


def test_release_without_index_files_only_warns(tmp_path: Path) -> None:
    old = make_release(tmp_path / "old", n=8, shard_max=4)
    assert _codes(old) == ([], ["shard_index_absent"])


def _rehash(release: Path, rel: str) -> None:
    m = load_manifest(release)
    m["files"][rel] = {"sha256": sha256_file(release / rel), "bytes": (release / rel).stat().st_size}
    save_manifest(release, m)


def test_tampered_index_is_an_error(release: Path) -> None:
    path = release / IDX0
    lines = path.read_text().split("\n")
    f = lines[2].split(" ")
    f[1] = str(int(f[1]) + 512)  # the second sample's .jpg offset, one block off
    lines[2] = " ".join(f)
    path.write_text("\n".join(lines))
    assert _codes(release) == (["file_sha256", "shard_index_mismatch"], [])
    _rehash(release, IDX0)  # the manifest re-hashed to match: the tar still tells
    findings = audit(release, workers=2).findings
    assert [f.code for f in findings] == ["shard_index_mismatch"]
    assert "sample 1" in findings[0].message and findings[0].shard == "shards/test-000000.tar"
    path.write_bytes(b"not an index\n")
    _rehash(release, IDX0)
    assert _codes(release) == (["shard_index_mismatch"], [])


def test_missing_or_unlisted_index_is_an_error(release: Path) -> None:
    (release / IDX0).unlink()
    assert _codes(release) == (["file_missing"], [])
    m = load_manifest(release)
    del m["files"][IDX0]
    save_manifest(release, m)
    assert _codes(release) == (["shard_index_missing"], [])

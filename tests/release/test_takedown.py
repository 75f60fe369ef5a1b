"""passkit takedown: a new version without the requested samples, untouched shards byte-identical."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from passkit.audit import audit
from passkit.config import TakedownSpec
from passkit.records import Candidate
from passkit.release.takedown import TakedownError, next_version, takedown
from passkit.shards import iter_samples, sha256_file
from tests.helpers.staging import basic_items, staged_release


def key(source_id: str) -> str:
    return Candidate("test", source_id, "").key


@pytest.fixture
def release(tmp_path: Path) -> Path:
    # 9 samples in 3 shards of 3 (shard_max_samples=3)
    return staged_release(tmp_path, basic_items(9))


def shard_of(release: Path, k: str) -> str:
    rows = pq.read_table(release / "index.parquet", columns=["key", "shard"]).to_pylist()
    return next(r["shard"] for r in rows if r["key"] == k)


def test_untouched_shards_keep_their_bytes(release: Path) -> None:
    victim = key("s03")
    touched = shard_of(release, victim)
    old = json.loads((release / "manifest.json").read_text())
    before = {s["path"]: sha256_file(release / s["path"]) for s in old["shards"]}

    res = takedown(release, [TakedownSpec(key=victim, reason="creator request")])
    new = res.path
    assert new.name == "syn-1.0.1" and res.version == "1.0.1"
    m = json.loads((new / "manifest.json").read_text())
    after = {s["path"]: s["sha256"] for s in m["shards"]}
    assert set(after) == set(before)
    for path, digest in before.items():
        assert sha256_file(new / path) == after[path]
        if path == touched:
            assert after[path] != digest
        else:
            assert after[path] == digest, f"{path} was not touched by the removal but changed"
    assert res.shards_rewritten == [touched] and len(res.shards_kept) == 2

    # the rewritten shard: same samples minus the victim, still sorted
    old_keys = [k for k, _ in iter_samples(release / touched)]
    new_keys = [k for k, _ in iter_samples(new / touched)]
    assert new_keys == [k for k in old_keys if k != victim] and new_keys == sorted(new_keys)

    assert m["removals"] == [{"key": victim, "reason": "creator request", "sha256": m["removals"][0]["sha256"],
                              "version": "1.0.1"}]
    assert m["previous"] == {"release": "syn-1.0.0", "version": "1.0.0",
                             "manifest_sha256": sha256_file(release / "manifest.json")}
    assert m["counts"]["kept"] == old["counts"]["kept"] - 1
    assert m["counts"]["by_reason"]["takedown"] == 1
    rej = {r["key"]: r for r in pq.read_table(new / "rejected.parquet").to_pylist()}
    assert rej[victim]["stage"] == "takedown" and rej[victim]["detail"] == "creator request"
    assert victim not in {r["key"] for r in pq.read_table(new / "index.parquet").to_pylist()}
    for doc in ("ATTRIBUTION.md", "attribution.csv", "attribution.html"):
        assert victim not in (new / doc).read_text(), doc
    page = (new / "report.html").read_text()
    assert f"<code>{victim}</code></figcaption>" not in page  # no thumbnail
    assert f"<code>{victim}</code></td><td>creator request</td>" in page  # listed as removed
    assert victim in (new / "README.md").read_text()  # listed under removal requests
    report = audit(new)
    assert report.ok, [str(f) for f in report.findings]
    assert audit(release).ok  # the old version is untouched


def test_takedown_by_creator_and_url_and_empty_shard_dropped(release: Path) -> None:
    # creator "Ann Example" made s00, s03, s06: one per shard? shards hold keys sorted by hash, so
    # check against the index instead of assuming.
    rows = pq.read_table(release / "index.parquet").to_pylist()
    ann = {r["key"] for r in rows if r["creator"] == "Ann Example"}
    url = next(r for r in rows if r["creator"] != "Ann Example")
    res = takedown(release, [TakedownSpec(creator="ann example", reason="r1"),
                             TakedownSpec(source_url=url["landing_url"], reason="r2")], version="2.0.0")
    assert {r["key"] for r in res.removed} == ann | {url["key"]}
    assert res.path.name == "syn-2.0.0"
    report = audit(res.path)
    assert report.ok, [str(f) for f in report.findings]
    # take down everything in one shard: it disappears from the manifest
    m = json.loads((res.path / "manifest.json").read_text())
    first = m["shards"][0]["path"]
    keys = [k for k, _ in iter_samples(res.path / first)]
    res2 = takedown(res.path, [TakedownSpec(key=k, reason="all") for k in keys])
    assert res2.shards_dropped == [first]
    assert audit(res2.path).ok
    m2 = json.loads((res2.path / "manifest.json").read_text())
    assert len(m2["removals"]) == len(res.removed) + len(keys)  # history kept
    assert m2["previous"]["version"] == "2.0.0"


def test_audit_catches_a_removed_sample_put_back(release: Path) -> None:
    import shutil

    victim = key("s05")
    res = takedown(release, [TakedownSpec(key=victim, reason="request")])
    shard = shard_of(release, victim)
    shutil.copyfile(release / shard, res.path / shard)  # the old shard, victim included
    report = audit(res.path)
    assert victim in report.keys("removed_present")


def test_nothing_matches_and_existing_target_are_errors(release: Path) -> None:
    with pytest.raises(TakedownError, match="no sample of syn-1.0.0 matches"):
        takedown(release, [TakedownSpec(creator="Nobody", reason="x")])
    takedown(release, [TakedownSpec(key=key("s01"), reason="x")])
    with pytest.raises(TakedownError, match="already exists"):
        takedown(release, [TakedownSpec(key=key("s02"), reason="x")])
    with pytest.raises(TakedownError, match="no removal request"):
        takedown(release, [], version="9")


def test_next_version() -> None:
    assert next_version("1.0.0") == "1.0.1"
    assert next_version("2") == "3"
    assert next_version("1.0.0-rc9") == "1.0.0-rc10"
    assert next_version("beta") == "beta.1"


def test_cli_takedown_then_diff(release: Path) -> None:
    victim = key("s07")
    p = subprocess.run([sys.executable, "-m", "passkit.cli", "takedown", str(release), "--key", victim,
                        "--reason", "asked by email"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert victim in p.stdout and "shards unchanged (same bytes): 2" in p.stdout
    new = release.with_name("syn-1.0.1")
    d = subprocess.run([sys.executable, "-m", "passkit.cli", "diff", str(release), str(new), "--json"],
                       capture_output=True, text=True, timeout=300)
    out = json.loads(d.stdout)
    assert out["removed"] == [{"key": victim, "reason": "takedown: asked by email"}]
    assert len(out["shards_same"]) == 2 and len(out["shards_changed"]) == 1
    bad = subprocess.run([sys.executable, "-m", "passkit.cli", "takedown", str(release), "--creator", "Nobody",
                          "--reason", "x"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "matches" in bad.stderr


def test_takedown_streams_a_big_release_in_row_groups(tmp_path: Path) -> None:
    # Tables over one row group are written in ROW_GROUP-row groups, the old rejections first and the
    # takedown's after them; attribution pages are regenerated and listed in the manifest's files.
    from passkit.release.attribution import PAGE_SIZE
    from passkit.release.tables import ROW_GROUP
    from tests.release.test_documents_scale import make_release

    src = tmp_path / "syn-1.0.0"
    src.mkdir()
    n, n_rejected = PAGE_SIZE + 1000, ROW_GROUP + 500
    m = make_release(src, n=n, n_rejected=n_rejected, n_shards=3)
    from passkit.release import documents, manifest

    m["files"] = documents.file_entries(src, ["index.parquet", "rejected.parquet",
                                              *documents.write_all(src, m, src / "index.parquet",
                                                                   src / "rejected.parquet")])
    manifest.write(src / "manifest.json", m)
    old_index = pq.read_table(src / "index.parquet")
    who = old_index.column("creator")[0].as_py()
    ann = {r["key"] for r in old_index.select(["key", "creator"]).to_pylist() if r["creator"].lower() == who.lower()}
    assert len(ann) > 1

    res = takedown(src, [TakedownSpec(creator=who.upper(), reason="asked")], created="2026-01-02T00:00:00Z")
    new = res.path
    assert {r["key"] for r in res.removed} == ann
    rej = pq.ParquetFile(new / "rejected.parquet")
    assert [rej.metadata.row_group(i).num_rows for i in range(rej.num_row_groups)] == [ROW_GROUP, 500 + len(ann)]
    rows = rej.read().to_pylist()
    assert rows[:n_rejected] == pq.read_table(src / "rejected.parquet").to_pylist()
    assert [r["key"] for r in rows[n_rejected:]] == sorted(ann) and {r["stage"] for r in rows[n_rejected:]} == {"takedown"}
    index = pq.read_table(new / "index.parquet")
    assert index.column("key").to_pylist() == [k for k in old_index.column("key").to_pylist() if k not in ann]
    assert index.schema == old_index.schema
    m2 = json.loads((new / "manifest.json").read_text())
    assert {"attribution/page-00001.html", "attribution/page-00002.html"} <= set(m2["files"])
    for name, entry in m2["files"].items():
        assert sha256_file(new / name) == entry["sha256"], name
    for k in ann:
        assert k not in (new / "attribution" / "page-00001.html").read_text()
        assert k not in (new / "attribution" / "page-00002.html").read_text()

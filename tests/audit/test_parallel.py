"""The audit at scale: shards checked in parallel (processes, Ray) give the sequential report, byte for
byte; a sampled audit says it is one; memory does not hold the index as Python rows."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from passkit.audit import AuditReport, audit, write_html
from tests.audit.test_audit import SHARD0, SHARD1, flip_byte, member_offset, shard_keys
from tests.helpers.releases import make_release, read_shard, rewrite_shard, update_shard_in_manifest

SHARD2 = "shards/test-000002.tar"


def comparable(report: AuditReport) -> str:
    d = report.to_dict()
    d["stats"].pop("seconds")
    return json.dumps(d, sort_keys=False)


def changed_bytes(rel: Path) -> None:
    key = shard_keys(rel, SHARD1)[2]
    off, size = member_offset(rel / SHARD1, f"{key}.jpg")
    flip_byte(rel / SHARD1, off + size // 2)


def removed_sample(rel: Path) -> None:
    gone = shard_keys(rel, SHARD1)[3]
    rewrite_shard(rel / SHARD1, lambda s: [x for x in s if x[0] != gone])


def bad_json(rel: Path) -> None:
    key = shard_keys(rel, SHARD0)[1]
    off, _ = member_offset(rel / SHARD0, f"{key}.json")
    flip_byte(rel / SHARD0, off)


def duplicate_key_across_shards(rel: Path) -> None:
    first = read_shard(rel / SHARD0)[0]
    rewrite_shard(rel / SHARD2, lambda s: [first, *s])  # and out of order
    update_shard_in_manifest(rel, SHARD2, samples=5)


def index_row_missing(rel: Path) -> None:
    table = pq.read_table(rel / "index.parquet")
    dropped = table.column("key")[4].as_py()
    pq.write_table(table.filter([k != dropped for k in table.column("key").to_pylist()]), rel / "index.parquet")


def index_scrambled(rel: Path) -> None:
    """Rows out of order, a key twice, a row moved to another shard: the slices must not trust the order."""
    table = pq.read_table(rel / "index.parquet")
    rows = table.to_pylist()[::-1]
    rows.append(dict(rows[0]))
    rows[3] = {**rows[3], "shard": SHARD2, "title": "moved"}
    pq.write_table(pq.read_table(rel / "index.parquet").from_pylist(rows, schema=table.schema), rel / "index.parquet")


def licence_policy(rel: Path) -> None:
    """Every sample a finding (cc-by refuses CC0 and, with the licence edited, more): the per-code limit bites."""
    m = json.loads((rel / "manifest.json").read_text())
    m["policy"] = {"name": "cc-by", "allow": [], "deny": ["cc-by-2.0"]}
    (rel / "manifest.json").write_text(json.dumps(m))


TAMPER: dict[str, Callable[[Path], None]] = {
    "clean": lambda rel: None,
    "changed_bytes": changed_bytes,
    "removed_sample": removed_sample,
    "bad_json": bad_json,
    "duplicate_key_across_shards": duplicate_key_across_shards,
    "index_row_missing": index_row_missing,
    "index_scrambled": index_scrambled,
    "licence_policy": licence_policy,
}


@pytest.mark.parametrize("case", list(TAMPER))
def test_two_workers_give_the_sequential_report(tmp_path: Path, case: str) -> None:
    rel = make_release(tmp_path, n=12, shard_max=4)
    TAMPER[case](rel)
    for limit in (1000, 1):
        one = audit(rel, limit=limit, workers=1)
        two = audit(rel, limit=limit, workers=2)
        assert comparable(two) == comparable(one)
        assert one.ok == (case == "clean")
    if case != "clean":
        assert not one.ok and one.findings


def test_tampered_release_findings_name_the_right_things_in_parallel(tmp_path: Path) -> None:
    rel = make_release(tmp_path, n=12, shard_max=4)
    duplicate_key_across_shards(rel)
    index_row_missing(rel)
    report = audit(rel, workers=2)
    first = read_shard(rel / SHARD0)[0][0]
    dup = report.by_code("key_duplicate")
    assert [(f.shard, f.key) for f in dup] == [(SHARD2, first)] and SHARD0 in dup[0].message
    assert {"sample_order", "index_shard", "index_missing_key"} <= {f.code for f in report.findings}
    assert report.stats.samples == 13 and report.stats.shards_read == 3


@pytest.mark.slow  # Ray start-up alone takes 10-20 s on 2 busy cores
def test_ray_tasks_give_the_sequential_report(local_ray, tmp_path: Path) -> None:
    rel = make_release(tmp_path, n=12, shard_max=4)
    duplicate_key_across_shards(rel)
    changed_bytes(rel)
    index_row_missing(rel)
    one = audit(rel, workers=1)
    on_ray = audit(rel, executor="ray", workers=2)
    assert comparable(on_ray) == comparable(one) and not one.ok


# ----------------------------------------------------------------------------- sampled audits


def test_sampled_audit_reads_fewer_shards_and_says_so(tmp_path: Path) -> None:
    rel = make_release(tmp_path, n=40, shard_max=4)  # 10 shards
    report = audit(rel, sample=0.2, seed=7)
    assert report.ok and not report.complete
    assert report.stats.shards == 10 and report.stats.shards_read == 2 and report.stats.samples == 8
    d = report.to_dict()
    assert d["verified"] is False and d["complete"] is False
    assert d["sample"] == {"fraction": 0.2, "seed": 7, "shards": 10, "shards_checked": 2, "samples_checked": 8}
    assert "NOT fully verified" in d["scope"] and "2 of 10 shards" in d["scope"]
    # the same seed picks the same shards; a full audit is complete
    assert comparable(audit(rel, sample=0.2, seed=7, workers=2)) == comparable(report)
    full = audit(rel)
    assert full.complete and full.to_dict()["verified"] is True and full.sample is None
    write_html(report, tmp_path / "a.html")
    page = (tmp_path / "a.html").read_text()
    assert "Sampled audit" in page and "NOT fully verified" in page and "the release matches" not in page


def test_sampled_audit_still_hashes_every_shard(tmp_path: Path) -> None:
    rel = make_release(tmp_path, n=40, shard_max=4)
    changed_bytes(rel)  # in shard 1, whichever shards the sample reads
    report = audit(rel, sample=0.1, seed=0)
    assert {"shard_sha256", "image_sha256"} <= {f.code for f in report.findings}  # a bad hash is read anyway
    assert report.stats.shards_read == 2
    # the unread shards' index rows are not "extra": their samples were not looked at
    assert "index_extra_key" not in {f.code for f in report.findings}


def test_sample_of_one_finds_an_injected_fault(tmp_path: Path) -> None:
    rel = make_release(tmp_path, n=12, shard_max=4)
    key = shard_keys(rel, SHARD1)[1]

    def edit(samples):  # a licence the policy refuses, with the manifest updated to match: no hash differs
        out = []
        for k, g in samples:
            if k == key:
                meta = json.loads(g["json"])
                meta["license"] = "cc-by-nc-2.0"
                g = {**g, "json": json.dumps(meta).encode()}
            out.append((k, g))
        return out

    rewrite_shard(rel / SHARD1, edit)
    update_shard_in_manifest(rel, SHARD1)
    report = audit(rel, sample=1.0, seed=3)
    assert "license_not_allowed" in {f.code for f in report.findings}
    assert report.stats.shards_read == 3 and not report.complete
    sampled = audit(rel, sample=0.3, seed=0)  # one shard of three (rounded up)
    assert sampled.stats.shards_read == 1


def test_sample_fraction_is_checked(tmp_path: Path) -> None:
    rel = make_release(tmp_path, n=4, shard_max=4)
    for bad in (0, -0.5, 1.5):
        with pytest.raises(ValueError):
            audit(rel, sample=bad)


def test_cli_sampled_and_parallel(tmp_path: Path) -> None:
    import subprocess
    import sys

    rel = make_release(tmp_path, n=12, shard_max=4)
    p = subprocess.run([sys.executable, "-m", "passkit.cli", "audit", str(rel), "--workers", "2", "--sample", "0.5",
                        "--seed", "1"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "SAMPLED" in p.stdout and "NOT fully verified" in p.stdout and "2 of 3 shards" in p.stdout
    bad = subprocess.run([sys.executable, "-m", "passkit.cli", "audit", str(rel), "--sample", "2"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "(0, 1]" in bad.stderr


# ----------------------------------------------------------------------------- memory


def test_seen_keys_stay_on_disk_and_are_found_out_of_order(tmp_path: Path) -> None:
    """The keys met in the shards are hashes on disk: memory holds a bounded buffer, not the keys;
    a key not above every key met so far (a release out of order) is looked up there."""
    import tracemalloc

    from passkit.audit.keyhash import SeenKeys, hashes, new_salt

    salt = new_salt()
    seen = SeenKeys(tmp_path / "seen", bits=2)
    tracemalloc.start()
    kept = []
    for shard in range(50):
        keys = [f"k{shard:02d}-{i:04d}" for i in range(2000)]
        h = hashes(keys, salt, len(keys))
        assert (seen.first_shard(keys, h) == -1).all()
        seen.add(keys, h, shard)
        if shard in (9, 49):
            seen.buckets.flush()
            kept.append(tracemalloc.get_traced_memory()[0])
    tracemalloc.stop()
    assert len(seen) == 100_000 and kept[1] - kept[0] < 80_000  # under a byte for each of the 80,000 keys added
    again = ["k03-0007", "k49-1999", "a-new-key", "k03-0007x"]
    assert seen.first_shard(again, hashes(again, salt, 4)).tolist() == [3, 49, -1, -1]


def test_index_slices_and_rows(tmp_path: Path) -> None:
    from passkit.audit.context import AuditContext
    from passkit.audit.findings import Collector
    from passkit.audit.index import check_index

    rel = make_release(tmp_path, n=12, shard_max=4)
    report = AuditReport(rel)
    ctx = AuditContext(rel, report, Collector(report, 10), scratch=tmp_path / "scratch")
    check_index(ctx)
    assert ctx.ix is not None and ctx.ix.rows == 12 and not report.findings
    # each shard's rows are in its own slice, with the key's row found across slices
    sid = ctx.ix.shard_number(SHARD1)
    assert sid is not None and len(ctx.ix.slice_rows(sid)) == 4
    key = shard_keys(rel, SHARD2)[0]
    assert ctx.ix.row(key)["shard"] == SHARD2 and ctx.ix.row("no-such-key") is None
    assert hashlib.sha256(b"").hexdigest() not in {r["sha256"] for r in ctx.ix.slice_rows(sid).values()}


def test_audit_memory_does_not_grow_with_the_release(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Five times the samples, the same peak: with its buffers made small, the audit's traced peak
    grows by far less than the index rows, keys or credit lines of the added samples would take."""
    import functools
    import tracemalloc

    from passkit import spill as records
    from passkit.audit import attribution, index, manifest, shards, spill
    from passkit.shards import sha256_file

    small_reads = functools.partial(sha256_file, chunk=1 << 14)  # whole files of this size fit its 1 MB reads
    monkeypatch.setattr(manifest, "sha256_file", small_reads)
    monkeypatch.setattr(shards, "sha256_file", small_reads)
    monkeypatch.setattr(index, "BATCH_ROWS", 128)
    monkeypatch.setattr(attribution, "CSV_CHUNK_LINES", 128)
    monkeypatch.setattr(records, "BUFFER_ROWS", 256)
    monkeypatch.setattr(spill, "BUCKET_ROWS", 256)
    peaks = []
    for n in (400, 2000):
        rel = make_release(tmp_path / str(n), n=n, shard_max=50)
        tracemalloc.start()
        report = audit(rel)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert report.ok and report.stats.samples == n
        peaks.append(peak)
    # a list of the 1,600 added index rows alone is ~2.5 MB; per-shard state (32 shards more) is what grows
    assert peaks[1] - peaks[0] < 300_000, peaks

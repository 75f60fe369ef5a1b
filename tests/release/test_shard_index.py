"""Every release writes each shard's DALI index file, lists it with its sha256, and a takedown keeps them."""

from __future__ import annotations

import json
from pathlib import Path

from passkit.audit import audit
from passkit.config import TakedownSpec
from passkit.publish.objects import release_objects
from passkit.records import Candidate
from passkit.release.takedown import takedown
from passkit.shards import sha256_file
from passkit.shards.wdsindex import derive_index, index_path, parse_index
from tests.helpers.staging import basic_items, staged_release


def _indexes_agree(release: Path) -> dict:
    m = json.loads((release / "manifest.json").read_text())
    for s in m["shards"]:
        rel = index_path(s["path"])
        data = (release / rel).read_bytes()
        assert m["files"][rel] == {"sha256": sha256_file(release / rel), "bytes": len(data)}
        assert data == derive_index(release / s["path"])
        assert sum(len(sample) for sample in parse_index(data)) == 2 * s["samples"]  # .jpg and .json
    return m


def test_release_and_takedown_carry_index_files(tmp_path: Path) -> None:
    release = staged_release(tmp_path, basic_items(7), shard_max_samples=3)
    m = _indexes_agree(release)
    assert len(m["shards"]) == 3 and sorted(m["files"]) == list(m["files"])
    report = audit(release)
    assert report.ok and not report.warnings, [str(f) for f in [*report.findings, *report.warnings]]
    # publish uploads them after the shard tars, with the other files, checked against the manifest
    objects = {o.rel: o for o in release_objects(release)}
    for s in m["shards"]:
        o = objects[index_path(s["path"])]
        assert o.phase == 1 and o.sha256 == m["files"][o.rel]["sha256"]

    # a release from before index files: a takedown's new version has them for every shard
    for s in m["shards"]:
        (release / index_path(s["path"])).unlink()
        del m["files"][index_path(s["path"])]
    (release / "manifest.json").write_text(json.dumps(m))
    assert [w.code for w in audit(release).warnings] == ["shard_index_absent"]
    victim = Candidate("test", "s01", "").key
    new = takedown(release, [TakedownSpec(key=victim, reason="creator request")]).path
    _indexes_agree(new)
    report = audit(new)
    assert report.ok and not report.warnings, [str(f) for f in [*report.findings, *report.warnings]]

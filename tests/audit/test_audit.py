"""passkit.audit on small releases written by tests/helpers/releases.py, clean and tampered with."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from passkit import licenses
from passkit.audit import CODES, AuditReport, Finding, audit, schema_path
from passkit.shards import sha256_file
from tests.helpers.releases import (
    jpeg,
    json_bytes,
    load_manifest,
    make_release,
    read_shard,
    rewrite_shard,
    sample_key,
    save_manifest,
    update_shard_in_manifest,
)

SHARD0 = "shards/test-000000.tar"
SHARD1 = "shards/test-000001.tar"


@pytest.fixture
def release(tmp_path: Path) -> Path:
    return make_release(tmp_path / "releases", n=12, shard_max=5)


def codes(report: AuditReport) -> set[str]:
    return {f.code for f in report.findings}


def member_offset(tar_path: Path, name: str) -> tuple[int, int]:
    with tarfile.open(tar_path) as tar:
        m = tar.getmember(name)
        return m.offset_data, m.size


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x55]))


def shard_keys(release: Path, rel: str) -> list[str]:
    return [k for k, _ in read_shard(release / rel)]


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# ----------------------------------------------------------------------------- clean


def test_clean_release_is_ok(release: Path) -> None:
    report = audit(release)
    assert report.ok, [str(f) for f in report.findings]
    assert report.findings == []
    assert report.stats.shards == 3 and report.stats.shards_read == 3
    assert report.stats.samples == 12
    assert report.stats.seconds >= 0
    d = report.to_dict()
    assert json.loads(json.dumps(d))["ok"] is True
    assert d["name"] == "test" and d["version"] == "1.0.0"
    assert d["stats"]["samples"] == 12


def test_every_code_is_documented() -> None:
    assert all(c.islower() and " " not in c for c in CODES)
    assert str(Finding("shard_sha256", "m", SHARD0, "k")) == f"[shard_sha256] {SHARD0} k: m"


def test_schema_is_found() -> None:
    assert schema_path().is_file()


# ----------------------------------------------------------------------------- bytes changed


def test_byte_flip_in_image_names_the_sample(release: Path) -> None:
    key = shard_keys(release, SHARD1)[2]
    off, size = member_offset(release / SHARD1, f"{key}.jpg")
    flip_byte(release / SHARD1, off + size // 2)

    report = audit(release)
    assert not report.ok
    assert {"shard_sha256", "image_sha256", "index_sha256"} <= codes(report)
    sha = report.by_code("shard_sha256")
    assert len(sha) == 1 and sha[0].shard == SHARD1 and sha[0].key == key and key in sha[0].message
    assert report.keys() == {key}
    assert all(f.shard == SHARD1 for f in report.findings)


def test_byte_flip_in_json_names_the_sample(release: Path) -> None:
    key = shard_keys(release, SHARD0)[1]
    off, _ = member_offset(release / SHARD0, f"{key}.json")
    flip_byte(release / SHARD0, off)  # the opening brace

    report = audit(release)
    assert {"shard_sha256", "json_invalid"} <= codes(report)
    assert report.keys() == {key}
    assert report.by_code("shard_sha256")[0].key == key


def test_byte_flip_in_tar_header_is_unsafe_or_named(release: Path) -> None:
    flip_byte(release / SHARD0, 148)  # the first header's checksum field
    report = audit(release)
    assert not report.ok
    assert "shard_unsafe" in codes(report) or "shard_sha256" in codes(report)
    # the samples of an unreadable shard are covered by the shard finding, not listed one by one
    assert "index_extra_key" not in codes(report)


# ----------------------------------------------------------------------------- licence edits


def _edit_license(release: Path, key: str, new_id: str, careful: bool) -> None:
    """Change one sample's licence in its json; a careful attacker keeps url/name/sentence in line."""

    def edit(samples):
        out = []
        for k, group in samples:
            if k == key:
                meta = json.loads(group["json"])
                meta["license"] = new_id
                if careful:
                    lic = licenses.by_id(new_id)
                    meta["license_url"] = lic.url
                    meta["license_name"] = lic.name
                    meta["attribution"] = licenses.attribution_sentence(
                        lic, meta["title"], meta["creator"], meta["landing_url"]
                    )
                group = {**group, "json": json_bytes(meta)}
            out.append((k, group))
        return out

    rewrite_shard(release / SHARD1, edit)


@pytest.mark.parametrize("update_manifest", [False, True], ids=["old-manifest", "manifest-updated"])
@pytest.mark.parametrize("careful", [False, True], ids=["license-only", "consistent-json"])
def test_license_edit_in_json_names_the_sample(release: Path, careful: bool, update_manifest: bool) -> None:
    key = shard_keys(release, SHARD1)[0]
    _edit_license(release, key, "cc-by-nc-2.0", careful)
    if update_manifest:
        update_shard_in_manifest(release, SHARD1)

    report = audit(release)
    found = codes(report)
    assert not report.ok
    assert report.keys() == {key}
    assert "license_not_allowed" in found
    assert "index_mismatch" in found  # index.parquet still has the original licence
    if careful:
        assert "attribution_mismatch" not in found and "license_inconsistent" not in found
    else:
        assert {"attribution_mismatch", "license_inconsistent"} <= found
    if update_manifest:
        assert "shard_sha256" not in found and "shard_size" not in found
    else:
        sha = report.by_code("shard_sha256")
        assert sha and sha[0].shard == SHARD1 and sha[0].key == key


def test_license_swap_to_allowed_licence_still_shows(release: Path) -> None:
    key = next(k for k, g in read_shard(release / SHARD0) if json.loads(g["json"])["license"] == "cc-by-2.0")

    def edit(samples):
        return [
            (
                k,
                {**g, "json": json_bytes({**json.loads(g["json"]), "license": "cc-by-4.0"})}
                if k == key
                else g,
            )
            for k, g in samples
        ]

    rewrite_shard(release / SHARD0, edit)
    update_shard_in_manifest(release, SHARD0)
    report = audit(release)
    assert {"attribution_mismatch", "license_inconsistent", "index_mismatch"} <= codes(report)
    assert report.keys() == {key}


def test_unknown_licence_and_incomplete_tasl(release: Path) -> None:
    keys = shard_keys(release, SHARD0)

    def edit(samples):
        out = []
        for k, g in samples:
            meta = json.loads(g["json"])
            if k == keys[0]:
                meta["license"] = "cc-by-9.9"
            if k == keys[1]:
                meta["creator"] = ""
            out.append((k, {**g, "json": json_bytes(meta)}))
        return out

    rewrite_shard(release / SHARD0, edit)
    report = audit(release)
    assert [f.key for f in report.by_code("license_unknown")] == [keys[0]]
    assert [f.key for f in report.by_code("attribution_incomplete")] == [keys[1]]
    assert "creator" in report.by_code("attribution_incomplete")[0].message


# ----------------------------------------------------------------------------- hostile tars


def _hostile_tar(path: Path, kind: str, outside: Path) -> None:
    ok = jpeg(16, 16, seed=1)
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("aaa.jpg")
        info.size = len(ok)
        tar.addfile(info, io.BytesIO(ok))
        if kind == "traversal":
            info = tarfile.TarInfo("../evil")
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
        elif kind == "absolute":
            info = tarfile.TarInfo(str(outside))  # an absolute path outside the release
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
        elif kind == "symlink":
            info = tarfile.TarInfo("evil.jpg")
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tar.addfile(info)
        elif kind == "hardlink":
            info = tarfile.TarInfo("evil.jpg")
            info.type = tarfile.LNKTYPE
            info.linkname = "../../outside"
            tar.addfile(info)


@pytest.mark.parametrize("kind", ["traversal", "symlink", "absolute", "hardlink"])
def test_hostile_tar_is_unsafe_and_nothing_is_extracted(
    release: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    cwd = tmp_path / "releases" / "test-1.0.0" / "shards" / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    shard = release / SHARD1
    shard.unlink()
    outside = tmp_path / "outside-evil"
    _hostile_tar(shard, kind, outside)
    before = tree(tmp_path)

    report = audit(release)
    assert tree(tmp_path) == before
    assert not outside.exists()
    unsafe = report.by_code("shard_unsafe")
    assert len(unsafe) == 1 and unsafe[0].shard == SHARD1
    assert "evil" in unsafe[0].message
    # the rest of the release is still audited
    assert report.stats.shards_read == 2 and report.stats.samples == 7


# ----------------------------------------------------------------------------- structure


@pytest.mark.parametrize("update_manifest", [False, True])
def test_dropped_sample_is_named(release: Path, update_manifest: bool) -> None:
    keys = shard_keys(release, SHARD1)
    dropped = keys[3]
    rewrite_shard(release / SHARD1, lambda samples: [s for s in samples if s[0] != dropped])
    if update_manifest:
        update_shard_in_manifest(release, SHARD1, samples=4)

    report = audit(release)
    extra = report.by_code("index_extra_key")
    assert [f.key for f in extra] == [dropped] and extra[0].shard == SHARD1
    if not update_manifest:
        assert {"shard_count", "shard_sha256", "shard_size"} <= codes(report)
        sha = report.by_code("shard_sha256")[0]
        assert sha.key == dropped and f"samples missing: {dropped}" in sha.message
    else:
        assert codes(report) == {"index_extra_key"}


def test_half_a_sample(release: Path) -> None:
    key = shard_keys(release, SHARD0)[2]
    rewrite_shard(release / SHARD0, lambda s: [(k, {"jpg": g["jpg"]} if k == key else g) for k, g in s])
    update_shard_in_manifest(release, SHARD0)
    report = audit(release)
    assert [f.key for f in report.by_code("sample_incomplete")] == [key]
    assert f"{key}.json" in report.by_code("sample_incomplete")[0].message


def test_duplicate_key_across_shards(release: Path) -> None:
    first = read_shard(release / SHARD0)[0]
    rewrite_shard(release / SHARD1, lambda s: [*s, first])
    update_shard_in_manifest(release, SHARD1, samples=6)
    report = audit(release)
    dup = report.by_code("key_duplicate")
    assert [f.key for f in dup] == [first[0]] and dup[0].shard == SHARD1 and SHARD0 in dup[0].message
    assert "sample_order" in codes(report) and "index_shard" in codes(report)


def test_missing_and_unlisted_shards(release: Path) -> None:
    shutil.copy(release / SHARD0, release / "shards" / "test-000009.tar")
    (release / SHARD1).unlink()
    report = audit(release)
    assert [f.shard for f in report.by_code("shard_missing")] == [SHARD1]
    assert [f.shard for f in report.by_code("shard_unlisted")] == ["shards/test-000009.tar"]
    assert "index_extra_key" not in codes(report)  # covered by shard_missing


def test_removed_key_still_present(release: Path) -> None:
    key = shard_keys(release, SHARD0)[0]
    m = load_manifest(release)
    m["removals"] = [{"key": key, "reason": "takedown request"}]
    save_manifest(release, m)
    report = audit(release)
    assert codes(report) == {"removed_present"}
    assert report.by_code("removed_present")[0].key == key
    assert "takedown request" in report.by_code("removed_present")[0].message


def test_release_file_tampered(release: Path) -> None:
    with open(release / "ATTRIBUTION.md", "a", encoding="utf-8") as f:
        f.write("- extra\n")
    (release / "attribution.csv").unlink()
    report = audit(release)
    assert codes(report) == {"file_sha256", "file_size", "file_missing"}
    assert "ATTRIBUTION.md" in report.by_code("file_sha256")[0].message


def test_index_rows_must_match(release: Path) -> None:
    import pyarrow.parquet as pq

    table = pq.read_table(release / "index.parquet")
    dropped = table.column("key")[4].as_py()
    pq.write_table(
        table.filter([k != dropped for k in table.column("key").to_pylist()]), release / "index.parquet"
    )
    report = audit(release)
    assert [f.key for f in report.by_code("index_missing_key")] == [dropped]
    assert "file_sha256" in codes(report)  # the manifest recorded the old index


def test_image_with_exif_is_flagged(release: Path) -> None:
    key = shard_keys(release, SHARD0)[0]
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x010E] = "GPS here"
    Image.new("RGB", (64, 48), "red").save(buf, "JPEG", exif=exif.tobytes())
    rewrite_shard(
        release / SHARD0, lambda s: [(k, {**g, "jpg": buf.getvalue()} if k == key else g) for k, g in s]
    )
    report = audit(release)
    assert [f.key for f in report.by_code("image_metadata")] == [key]
    assert {"image_sha256", "index_sha256"} <= codes(report)


def test_progressive_jpeg_is_flagged(release: Path) -> None:
    key = shard_keys(release, SHARD1)[1]
    buf = io.BytesIO()
    Image.open(io.BytesIO(jpeg(64, 48, 3))).save(buf, "JPEG", progressive=True)
    rewrite_shard(
        release / SHARD1, lambda s: [(k, {**g, "jpg": buf.getvalue()} if k == key else g) for k, g in s]
    )
    report = audit(release)
    assert [f.key for f in report.by_code("image_progressive")] == [key]
    assert not report.ok
    assert report.by_code("image_invalid") == []  # a valid JPEG, only not baseline


# ----------------------------------------------------------------------------- manifest


def test_schema_invalid_manifest(release: Path) -> None:
    m = load_manifest(release)
    m["schema_version"] = 2
    del m["spec_hash"]
    m["shards"][0]["sha256"] = "not-a-sha"
    save_manifest(release, m)
    report = audit(release)
    schema = report.by_code("manifest_schema")
    assert len(schema) == 3
    text = " ".join(f.message for f in schema)
    assert "spec_hash" in text and "schema_version" in text and "shards/0/sha256" in text
    assert not report.ok


def test_manifest_missing_or_not_json(release: Path) -> None:
    (release / "manifest.json").write_text("{not json", encoding="utf-8")
    assert codes(audit(release)) == {"manifest_invalid_json"}
    (release / "manifest.json").unlink()
    report = audit(release)
    assert codes(report) == {"manifest_missing"} and not report.ok


def test_unknown_policy(release: Path) -> None:
    m = load_manifest(release)
    m["policy"]["name"] = "anything-goes"
    save_manifest(release, m)
    assert codes(audit(release)) == {"policy_invalid"}


def test_cc_by_policy_refuses_cc0(tmp_path: Path) -> None:
    rel = make_release(tmp_path, n=6, shard_max=6, policy="cc-by")
    report = audit(rel)
    assert codes(report) == {"license_not_allowed"}
    assert len(report.by_code("license_not_allowed")) == 2  # samples 2 and 5 are CC0
    assert report.keys() == {sample_key(2), sample_key(5)}


def test_findings_over_the_limit_are_counted(tmp_path: Path) -> None:
    rel = make_release(tmp_path, n=6, shard_max=6, policy="cc-by")
    report = audit(rel, limit=1)
    assert len(report.by_code("license_not_allowed")) == 1
    assert report.suppressed == {"license_not_allowed": 1}
    assert report.counts() == {"license_not_allowed": 2}
    assert not report.ok


def test_manifest_shard_path_outside_release(release: Path) -> None:
    m = load_manifest(release)
    m["shards"][0]["path"] = "../outside.tar"
    save_manifest(release, m)
    report = audit(release)
    assert "shard_path_invalid" in codes(report) and "manifest_schema" in codes(report)
    assert "shard_unlisted" in codes(report)  # test-000000.tar is now on disk but not listed


# ----------------------------------------------------------------------------- more tampering


def test_swapped_shards_are_caught(release: Path) -> None:
    a, b = release / SHARD0, release / SHARD1
    tmp = a.with_suffix(".swap")
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)
    report = audit(release)
    assert not report.ok
    found = codes(report)
    assert {"shard_sha256", "index_shard", "sample_order"} <= found
    assert {f.shard for f in report.by_code("shard_sha256")} == {SHARD0, SHARD1}
    # every sample of both shards is named as sitting in the wrong shard
    assert len(report.by_code("index_shard")) == 10


def test_shard_from_another_release_is_caught(release: Path, tmp_path: Path) -> None:
    other = make_release(tmp_path / "other", n=12, shard_max=5, name="test", version="9.9.9", license_ids=("cc-by-4.0",))
    shutil.copyfile(other / SHARD1, release / SHARD1)
    report = audit(release)
    assert "shard_sha256" in codes(report) and not report.ok


def _member_tar(path: Path, kind: str) -> None:
    ok = jpeg(16, 16, seed=1)
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("aaa.jpg")
        info.size = len(ok)
        tar.addfile(info, io.BytesIO(ok))
        if kind == "device":
            info = tarfile.TarInfo("evil.jpg")
            info.type = tarfile.CHRTYPE
            info.devmajor, info.devminor = 1, 3
            tar.addfile(info)
        elif kind == "fifo":
            info = tarfile.TarInfo("evil.json")
            info.type = tarfile.FIFOTYPE
            tar.addfile(info)
        elif kind == "oversized":
            info = tarfile.TarInfo("evil.jpg")
            info.size = 300_000
            tar.addfile(info, io.BytesIO(b"\0" * 300_000))


@pytest.mark.parametrize("kind", ["device", "fifo", "oversized"])
def test_devices_and_oversized_members_are_refused_without_extracting(
    release: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    monkeypatch.chdir(tmp_path)
    shard = release / SHARD1
    shard.unlink()
    _member_tar(shard, kind)
    before = tree(tmp_path)
    report = audit(release, max_member=100_000)
    assert tree(tmp_path) == before
    unsafe = report.by_code("shard_unsafe")
    assert len(unsafe) == 1 and "evil" in unsafe[0].message
    if kind == "oversized":
        assert "100000-byte limit" in unsafe[0].message
    assert report.stats.shards_read == 2


def test_removed_image_under_a_new_key_is_caught(release: Path) -> None:
    import hashlib

    samples = read_shard(release / SHARD0)
    victim_key, group = samples[0]
    digest = hashlib.sha256(group["jpg"]).hexdigest()
    m = load_manifest(release)
    m["removals"] = [{"key": "test_gone0000000000", "reason": "creator request", "sha256": digest}]
    save_manifest(release, m)
    report = audit(release)
    assert codes(report) == {"removed_present"}
    f = report.by_code("removed_present")[0]
    assert f.key == victim_key and "test_gone0000000000" in f.message and "creator request" in f.message


def test_truncated_jpeg_with_consistent_checksums_does_not_decode(release: Path) -> None:
    import hashlib

    import pyarrow.parquet as pq

    key = shard_keys(release, SHARD0)[1]

    def edit(samples):
        out = []
        for k, g in samples:
            if k == key:
                bad = g["jpg"][: len(g["jpg"]) // 2]  # header intact, scan data cut
                meta = json.loads(g["json"])
                meta["sha256"] = hashlib.sha256(bad).hexdigest()
                g = {"jpg": bad, "json": json_bytes(meta)}
            out.append((k, g))
        return out

    rewrite_shard(release / SHARD0, edit)
    update_shard_in_manifest(release, SHARD0)
    report = audit(release)
    invalid = report.by_code("image_invalid")
    assert [f.key for f in invalid] == [key] and "does not decode" in invalid[0].message
    assert "image_sha256" not in codes(report)
    assert pq.read_table(release / "index.parquet") is not None


def test_rescan_finds_a_face_the_build_missed(tmp_path: Path) -> None:
    import hashlib

    import pyarrow as pa
    import pyarrow.parquet as pq

    from passkit.demo.photos import catalog_bytes

    rel = make_release(tmp_path, n=4, shard_max=4)
    m = load_manifest(rel)
    m["detectors"] = [{"name": "mtcnn", "threshold": 0.9, "weights": "facenet-pytorch", "sha256": None}]
    save_manifest(rel, m)
    assert audit(rel, rescan=True).ok  # gradients: no face
    face = Image.open(io.BytesIO(catalog_bytes()["astronaut.png"])).convert("RGB").resize((256, 256))
    buf = io.BytesIO()
    face.save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    key = shard_keys(rel, SHARD0)[2]
    digest = hashlib.sha256(data).hexdigest()

    def edit(samples):
        out = []
        for k, g in samples:
            if k == key:
                meta = {**json.loads(g["json"]), "sha256": digest, "width": 256, "height": 256, "bytes": len(data)}
                g = {"jpg": data, "json": json_bytes(meta)}
            out.append((k, g))
        return out

    rewrite_shard(rel / SHARD0, edit)
    update_shard_in_manifest(rel, SHARD0)
    t = pq.read_table(rel / "index.parquet").to_pylist()
    for r in t:
        if r["key"] == key:
            r["sha256"] = digest
    pq.write_table(pa.Table.from_pylist(t, schema=pq.read_schema(rel / "index.parquet")), rel / "index.parquet")
    m = load_manifest(rel)
    m["files"]["index.parquet"] = {"sha256": sha256_file(rel / "index.parquet"),
                                   "bytes": (rel / "index.parquet").stat().st_size}
    save_manifest(rel, m)
    assert audit(rel).ok  # consistent checksums: only the rescan can tell
    report = audit(rel, rescan=True)
    assert [f.key for f in report.by_code("people_detected")] == [key]
    assert "mtcnn" in report.by_code("people_detected")[0].message


def test_rescan_without_usable_detectors_is_a_finding(release: Path) -> None:
    report = audit(release, rescan=True)  # the factory names "yolox", not a registry detector
    assert codes(report) == {"rescan_failed"}


def test_check_sources(tmp_path: Path, http_server) -> None:
    from passkit.config import FetchSpec
    from tests.helpers.staging import basic_items, png_bytes, staged_release, texture

    items = basic_items(5)
    rel = staged_release(tmp_path, items, url_base=http_server.base)
    page = '<html><body><a rel="license" href="{}">licence</a></body></html>'
    by = "https://creativecommons.org/licenses/by/4.0/"
    for it in items:
        lic_url = {"cc-by-4.0": by, "cc-by-2.0": "//creativecommons.org/licenses/by/2.0/deed.en",
                   "cc0-1.0": "https://creativecommons.org/publicdomain/zero/1.0/"}[it.license]
        http_server.serve_bytes(f"/img/{it.source_id}.png", png_bytes(it.image), "image/png")
        http_server.serve_bytes(f"/photos/{it.source_id}", page.format(lic_url).encode(), "text/html")
    # s00 (cc-by-4.0): the page now says NC; s01: image gone; s02: another picture; s03: no licence on the page
    http_server.serve_bytes("/photos/s00", page.format("https://creativecommons.org/licenses/by-nc/4.0/").encode(),
                            "text/html")
    del http_server.routes["/img/s01.png"]
    http_server.serve_bytes("/img/s02.png", png_bytes(texture(4242)), "image/png")
    http_server.serve_bytes("/photos/s03", b"<html>all rights reserved</html>", "text/html")

    spec = FetchSpec(allow_private=["127.0.0.1"], robots=False, retries=0)
    report = audit(rel, check_sources=5, fetch_spec=spec)
    from passkit.records import Candidate

    def k(sid: str) -> str:
        return Candidate("test", sid, "").key

    assert codes(report) == {"source_license_changed"}
    changed = report.by_code("source_license_changed")
    assert [f.key for f in changed] == [k("s00")] and "cc-by-nc-4.0" in changed[0].message
    warn = {(w.code, w.key) for w in report.warnings}
    assert warn == {("source_unreachable", k("s01")), ("source_changed", k("s02")),
                    ("source_license_unverified", k("s03"))}
    assert "http_404" in next(w.message for w in report.warnings if w.code == "source_unreachable")
    # the same samples are picked for the same seed; fewer when asked
    assert len(audit(rel, check_sources=2, fetch_spec=spec).warnings) <= 2


def test_html_report(release: Path, tmp_path: Path) -> None:
    from passkit.audit import write_html

    flip_byte(release / SHARD1, member_offset(release / SHARD1, f"{shard_keys(release, SHARD1)[0]}.jpg")[0] + 50)
    report = audit(release)
    write_html(report, tmp_path / "audit.html")
    text = (tmp_path / "audit.html").read_text()
    assert "FAILED" in text and "shard_sha256" in text and shard_keys(release, SHARD1)[0] in text
    assert CODES["image_sha256"] in text


def test_cli_audit_json_html_and_exit_codes(release: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    html = tmp_path / "a.html"
    p = subprocess.run([sys.executable, "-m", "passkit.cli", "audit", str(release), "--json", "--html", str(html)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and json.loads(p.stdout)["ok"] is True and "OK" in html.read_text()
    (release / SHARD0).unlink()
    p = subprocess.run([sys.executable, "-m", "passkit.cli", "audit", str(release)], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 1 and "shard_missing" in p.stdout and SHARD0 in p.stdout


def test_attribution_csv_edited_together_with_the_manifest(release: Path) -> None:
    import csv

    path = release / "attribution.csv"
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    victim = rows[3]["key"]
    rows[3]["attribution"] = "Photo by someone else"
    dropped = rows.pop(5)["key"]
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    m = load_manifest(release)
    m["files"]["attribution.csv"] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    save_manifest(release, m)
    report = audit(release)
    assert codes(report) == {"attribution_file"}
    msgs = [f.message for f in report.by_code("attribution_file")]
    assert any(dropped in msg for msg in msgs)
    assert [f.key for f in report.by_code("attribution_file") if f.key] == [victim]

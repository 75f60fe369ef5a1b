"""Human review: the SQLite store, the review band through a real build, and decisions applied by the
release (kept after "no person", rejected after "person", withheld while pending), byte for byte."""

from __future__ import annotations

import hashlib
import json
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from passkit.records import Status
from passkit.release.build import apply_reviews
from passkit.review.server import load_queue, make_server
from passkit.review.store import ReviewStore, ReviewStoreError


def test_store_is_durable_and_validates(tmp_path):
    with ReviewStore.of(tmp_path) as s:
        assert s.add(["a", "b"], "review") == 2
        assert s.add(["b", "c"], "spot") == 1  # b keeps its first kind
        s.decide("a", "no_person", "ana")
        s.decide("a", "person", "bob")  # the latest decision wins
        s.decide("c", "no_person")
        with pytest.raises(ReviewStoreError, match="label"):
            s.decide("b", "maybe")
        with pytest.raises(ReviewStoreError, match="not in the review queue"):
            s.decide("zzz", "person")
        with pytest.raises(ReviewStoreError, match="kind"):
            s.add(["d"], "other")
    with ReviewStore.of(tmp_path) as s:  # reopened: everything is still there
        assert s.items() == {"a": "review", "b": "review", "c": "spot"}
        d = s.decisions()
        assert (d["a"].label, d["a"].reviewer, d["a"].kind) == ("person", "bob", "review")
        assert d["c"].kind == "spot"
        s.undo("c")
        assert "c" not in s.decisions()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "review.sqlite").write_bytes(b"not a database" * 100)
    with pytest.raises(ReviewStoreError, match="not a usable review database"):
        ReviewStore.of(tmp_path / "bad")


def test_apply_reviews_rules(tmp_path):
    rows = [
        {"key": "r1", "status": "review", "stage": "people", "reason": "review", "detail": "band"},
        {"key": "r2", "status": "review", "stage": "people", "reason": "review", "detail": "band"},
        {"key": "r3", "status": "review", "stage": "people", "reason": "review", "detail": "band"},
        {"key": "k1", "status": "kept", "stage": None, "reason": None, "detail": None},
        {"key": "k2", "status": "kept", "stage": None, "reason": None, "detail": None},
        {"key": "x", "status": "rejected", "stage": "fetch", "reason": "http_404", "detail": None},
    ]
    same, counts = apply_reviews(rows, tmp_path)  # no store: review rows withheld as pending
    assert [r["reason"] for r in same[:3]] == ["pending_review"] * 3 and counts["pending"] == 3
    with ReviewStore.of(tmp_path) as s:
        s.add(["r1", "r2", "r3"], "review")
        s.add(["k1", "k2"], "spot")
        s.decide("r1", "no_person")
        s.decide("r2", "person")
        s.decide("k1", "person")
        s.decide("k2", "no_person")
    out, counts = apply_reviews(rows, tmp_path)
    by = {r["key"]: r for r in out}
    assert by["r1"]["status"] == Status.KEPT and by["r1"]["reason"] is None
    assert (by["r2"]["status"], by["r2"]["stage"], by["r2"]["reason"]) == ("rejected", "people", "human_review")
    assert by["r3"]["reason"] == "pending_review"
    assert (by["k1"]["status"], by["k1"]["reason"]) == ("rejected", "human_review")
    assert by["k2"]["status"] == "kept" and by["x"] == rows[5]
    assert counts == {"queued": 3, "verified_no_person": 1, "confirmed_person": 1, "pending": 1,
                      "spot_sampled": 2, "spot_checked": 2, "spot_found_person": 1}


def _tree_digest(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_review_band_build_review_and_release(review_build):
    from passkit.build import build
    from passkit.demo.catalog import expected

    base, spec = review_build
    work, release = spec.work_dir(base), spec.release_dir(base)
    ledgers = [r for p in sorted((work / "units").glob("unit-*.parquet")) for r in pq.read_table(p).to_pylist()]
    review_rows = [r for r in ledgers if r["status"] == Status.REVIEW]
    people_ids = {sid for sid, e in expected().items() if e == "people"}
    assert len(review_rows) >= 2 and {r["source_id"] for r in review_rows} <= people_ids
    assert all(r["stage"] == "people" and r["reason"] == "review" for r in review_rows)
    # review images are staged with the kept ones, so a release can take them without a refetch
    staged = {m for p in (work / "units").glob("unit-*.tar") for m in __import__("tarfile").open(p).getnames()}
    assert all(f"{r['key']}.jpg" in staged for r in review_rows)
    # before any decision: pending rows are withheld
    rej = {r["key"]: r for r in pq.read_table(release / "rejected.parquet").to_pylist()}
    assert all(rej[r["key"]]["reason"] == "pending_review" for r in review_rows)
    m = json.loads((release / "manifest.json").read_text())
    assert m["review"]["queued"] == len(review_rows) == m["review"]["pending"]

    items, store = load_queue(work, sample=2, seed=1)
    keys = [it.key for it in items if it.kind == "review"]
    spots = [it.key for it in items if it.kind == "spot"]
    assert sorted(keys) == sorted(r["key"] for r in review_rows) and len(spots) == 2
    assert all(it.boxes for it in items)  # detector boxes from the unit sidecars
    store.decide(keys[0], "no_person")
    store.decide(keys[1], "person")
    store.decide(spots[0], "person")
    store.decide(spots[1], "no_person")
    store.close()

    build(spec, base=base)
    index = {r["key"] for r in pq.read_table(release / "index.parquet").to_pylist()}
    rej = {r["key"]: r for r in pq.read_table(release / "rejected.parquet").to_pylist()}
    assert keys[0] in index
    assert (rej[keys[1]]["stage"], rej[keys[1]]["reason"]) == ("people", "human_review")
    assert rej[spots[0]]["reason"] == "human_review" and spots[1] in index
    for k in keys[2:]:
        assert rej[k]["reason"] == "pending_review"
    m = json.loads((release / "manifest.json").read_text())
    assert m["review"] == {"queued": len(keys), "verified_no_person": 1, "confirmed_person": 1,
                           "pending": len(keys) - 2, "spot_sampled": 2, "spot_checked": 2, "spot_found_person": 1}
    from passkit.audit import audit

    assert audit(release).ok
    # the same inputs (ledgers, staging and decisions) give the same bytes
    first = _tree_digest(release)
    build(spec, base=base)
    assert _tree_digest(release) == first


@pytest.mark.slow
def test_review_server_api(review_build):
    base, spec = review_build
    server, app = make_server(spec.work_dir(base), port=0)
    server.start()
    try:
        url = f"http://127.0.0.1:{server.port}"
        state = json.loads(urllib.request.urlopen(url + "/api/items").read())
        assert state["total"] >= 2
        key = state["items"][0]["key"]
        img = urllib.request.urlopen(f"{url}/image/{key}.jpg").read()
        assert img[:2] == b"\xff\xd8"
        page = urllib.request.urlopen(url + "/").read().decode()
        assert "passkit review" in page

        def post(body: bytes) -> int:
            req = urllib.request.Request(url + "/api/decide", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
            try:
                return urllib.request.urlopen(req).status
            except urllib.error.HTTPError as e:
                return e.code

        assert post(json.dumps({"key": key, "label": "maybe"}).encode()) == 400
        assert post(json.dumps({"key": "not-queued", "label": "person"}).encode()) == 400
        assert post(b"{not json") == 400
        assert post(json.dumps({"key": key, "label": "person"}).encode()) == 200
        with ReviewStore.of(spec.work_dir(base)) as s:
            assert s.decisions()[key].label == "person"
        assert post(json.dumps({"key": key, "label": None}).encode()) == 200  # undo
        with ReviewStore.of(spec.work_dir(base)) as s:
            assert key not in s.decisions()
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(url + "/image/../../etc/passwd.jpg")
    finally:
        server.stop()
        app.store.close()

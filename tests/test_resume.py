"""Ledger and resume: SIGKILL at several points, --retry-failed, a source that grew.

Every scenario ends with a release compared byte for byte to one built in a single clean run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

import passkit.sources as sources
from passkit.build import build
from tests.helpers import ROOT
from tests.helpers.crawl import candidate, jpeg, list_opener, release_files, spec, write_candidates

EPOCH = "1767225600"


class Images:
    """Serves /img/<i>.jpg with a small delay; some paths fail until `heal()`; counts hits."""

    def __init__(self, server, n: int, delay: float = 0.0, transient: dict[int, str] | None = None,
                 missing: set[int] | None = None):
        self.s, self.delay = server, delay
        self.transient, self.missing = dict(transient or {}), set(missing or ())
        self.healed = False
        self.lock = threading.Lock()
        self.bodies = {i: jpeg(1000 + i, (96 + i % 5 * 8, 80)) for i in range(n)}
        for i in range(n):
            server.routes[f"/img/{i}.jpg"] = self.route(i)

    def add(self, n: int) -> None:
        for i in range(len(self.bodies), n):
            self.bodies[i] = jpeg(1000 + i, (96 + i % 5 * 8, 80))
            self.s.routes[f"/img/{i}.jpg"] = self.route(i)

    def heal(self) -> None:
        self.healed = True

    def route(self, i: int):
        def serve(h) -> None:
            if self.delay:
                time.sleep(self.delay)
            if i in self.missing:
                h.send_response(404)
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            if i in self.transient and not self.healed:
                if self.transient[i] == "reset":
                    h.close_connection = True
                    h.connection.shutdown(2)
                    return
                h.send_response(503)
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            body = self.bodies[i]
            h.send_response(200)
            h.send_header("Content-Type", "image/jpeg")
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)

        return serve

    def candidates(self, n: int) -> list:
        return [candidate(f"img{i:03d}", self.s.url(f"/img/{i}.jpg")) for i in range(n)]

    def hits(self, i: int) -> int:
        return self.s.hits.get(f"/img/{i}.jpg", 0)


@pytest.fixture(autouse=True)
def _epoch(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)


def _ledger(base: Path, name: str = "crawl") -> dict[str, dict]:
    rows = {}
    for p in sorted((base / "work" / name / "units").glob("unit-*.parquet")):
        for r in pq.read_table(p).to_pylist():
            rows[r["source_id"]] = r
    return rows


def test_retry_failed_refetches_only_transient_failures(http_server, tmp_path, monkeypatch):
    imgs = Images(http_server, 12, transient={1: "503", 6: "reset"}, missing={2})
    cands = imgs.candidates(12)
    monkeypatch.setitem(sources._OPENERS, "demo", list_opener(cands))
    s = spec(unit_size=4, retries=0)
    first = build(s, base=tmp_path)
    rows = _ledger(tmp_path)
    assert (rows["img001"]["reason"], rows["img001"]["transient"]) == ("http_503", True)
    assert (rows["img006"]["reason"], rows["img006"]["transient"]) == ("connection_reset", True)
    assert (rows["img002"]["reason"], rows["img002"]["transient"]) == ("http_404", False)
    assert first.release.kept == 9 and first.progress.transient == 2

    # A plain rerun resumes: nothing is fetched again, failures stay.
    before = {i: imgs.hits(i) for i in range(12)}
    again = build(s, base=tmp_path)
    assert again.progress.units_skipped == 3 and again.progress.fetched == 0
    assert {i: imgs.hits(i) for i in range(12)} == before

    imgs.heal()
    retried = build(s, base=tmp_path, retry_failed=True)
    assert retried.progress.units_retried == 2 and retried.progress.fetched == 2
    assert retried.release.kept == 11 and retried.progress.transient == 0
    for i in range(12):
        expect = before[i] + (1 if i in (1, 6) else 0)
        assert imgs.hits(i) == expect, f"/img/{i}.jpg fetched {imgs.hits(i)} times, expected {expect}"
    rows = _ledger(tmp_path)
    assert rows["img001"]["status"] == rows["img006"]["status"] == "kept"
    assert rows["img002"]["reason"] == "http_404"

    # Same release as one clean build against the healed server.
    clean = build(s, base=tmp_path / "clean")
    assert release_files(retried.release.path) == release_files(clean.release.path)


def test_grown_source_is_extended_incrementally(http_server, tmp_path, monkeypatch):
    imgs = Images(http_server, 10)
    monkeypatch.setitem(sources._OPENERS, "demo", list_opener(imgs.candidates(10)))
    s = spec(unit_size=4)
    build(s, base=tmp_path)
    assert all(imgs.hits(i) == 1 for i in range(10))

    imgs.add(14)
    monkeypatch.setitem(sources._OPENERS, "demo", list_opener(imgs.candidates(14)))
    grown = build(s, base=tmp_path)
    assert grown.progress.units_skipped == 2  # units 0 and 1 unchanged
    assert grown.progress.fetched == 4  # unit 2 kept its 2 old rows; 2 new there and 2 in unit 3
    assert all(imgs.hits(i) == 1 for i in range(14)), {i: imgs.hits(i) for i in range(14)}
    assert grown.release.kept == 14

    clean = build(s, base=tmp_path / "clean")
    assert release_files(grown.release.path) == release_files(clean.release.path)


DRIVER = """
import json, sys
sys.path.insert(0, {root!r})
from tests.helpers.crawl import candidate, list_opener
import passkit.sources as sources

if __name__ == "__main__":
    rows = json.load(open(sys.argv[1]))
    sources.register("demo", list_opener([candidate(r["sid"], r["url"]) for r in rows]))
    from passkit.cli import main
    sys.exit(main(["build", sys.argv[2], "--workers", "2"]))
"""


def _start(base: Path) -> subprocess.Popen:
    env = {**os.environ, "SOURCE_DATE_EPOCH": EPOCH, "COLUMNS": "120"}
    return subprocess.Popen(
        [sys.executable, str(base / "driver.py"), str(base / "cands.json"), str(base / "spec.yaml")],
        cwd=base, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )


def _ledgers(base: Path) -> list[Path]:
    return sorted((base / "work" / "crawl" / "units").glob("unit-*.parquet"))


N, UNIT = 16, 4


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", ["start", "first_unit", "half", "all_units"])
def test_sigkill_then_rerun_gives_the_same_release(kill_at, http_server, tmp_path, monkeypatch):
    imgs = Images(http_server, N, delay=0.1)
    cands = imgs.candidates(N)
    s = spec(unit_size=UNIT, workers=2, threads=2)
    base = tmp_path / "killed"
    base.mkdir()
    (base / "driver.py").write_text(DRIVER.format(root=str(ROOT)))
    write_candidates(base / "cands.json", cands)
    (base / "spec.yaml").write_text(yaml.safe_dump(s.canonical()))

    proc = _start(base)
    deadline = time.monotonic() + 120
    want = {"first_unit": 1, "half": N // UNIT // 2, "all_units": N // UNIT}.get(kill_at)
    try:
        if want is None:
            time.sleep(0.5)
        else:
            while len(_ledgers(base)) < want and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.005)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    done_before = {p.stem for p in _ledgers(base)}
    assert proc.returncode != 0 or kill_at == "all_units", "the build finished before the kill point"
    hits_before = {i: imgs.hits(i) for i in range(N)}

    rerun = _start(base)
    out, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, out.decode(errors="replace")

    # Nothing twice: the images of units finished before the kill were not downloaded again.
    for unit in done_before:
        k = int(unit.split("-")[1])
        for i in range(k * UNIT, (k + 1) * UNIT):
            assert imgs.hits(i) == hits_before[i] == 1, (kill_at, unit, i)
    # Nothing lost: every candidate is in the release or its rejection list, each once.
    release = base / "releases" / "crawl-1.0.0"
    kept = pq.read_table(release / "index.parquet").column("source_id").to_pylist()
    rejected = pq.read_table(release / "rejected.parquet").column("source_id").to_pylist()
    assert sorted(kept + rejected) == sorted(c.source_id for c in cands) and len(kept) == N
    assert not list(release.parent.glob(".crawl-1.0.0.*")), "a partial release was left behind"
    assert not list((base / "work" / "crawl" / "units").glob(".*tmp*")), "temp files were left behind"

    # Same release as one uninterrupted build.
    monkeypatch.setitem(sources._OPENERS, "demo", list_opener(cands))
    clean = build(s, base=tmp_path / "clean", workers=1)
    assert release_files(release) == release_files(clean.release.path)

"""The Ray executor on a local Ray instance: one task per unit, same release as the local pool."""

from __future__ import annotations

import pytest

import passkit.sources as sources
from passkit.build import build
from tests.helpers.crawl import candidate, jpeg, list_opener, release_files, spec

ray = pytest.importorskip("ray", reason="the ray extra is not installed: pip install -e '.[ray]'")


@pytest.mark.slow  # Ray start-up alone takes 10-20 s on 2 busy cores
def test_ray_executor_builds_the_same_release(local_ray, http_server, tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")
    cands = []
    for i in range(10):
        cands.append(candidate(f"r{i}", http_server.serve_bytes(f"/r/{i}.jpg", jpeg(500 + i, (120, 90)))))
    cands.append(candidate("gone", http_server.url("/r/missing.jpg")))
    monkeypatch.setitem(sources._OPENERS, "demo", list_opener(cands))
    s = spec(unit_size=3)

    on_ray = build(s, base=tmp_path / "ray", executor="ray", workers=2)
    assert on_ray.progress.units_done == 4 and on_ray.release.kept == 10
    assert on_ray.release.by_reason == {"http_404": 1}
    # Each unit was one Ray task: every image fetched once.
    assert all(http_server.hits[f"/r/{i}.jpg"] == 1 for i in range(10))
    stats = (tmp_path / "ray" / "work" / "crawl" / "stats.json").read_text()
    assert '"executor": "ray"' in stats

    local = build(s, base=tmp_path / "local", executor="local", workers=1)
    assert release_files(on_ray.release.path) == release_files(local.release.path)

    # Resume works across executors: a rerun on Ray skips every unit the local run finished.
    again = build(s, base=tmp_path / "local", executor="ray", workers=2)
    assert again.progress.units_skipped == 4 and again.progress.fetched == 0

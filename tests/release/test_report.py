"""report.html: self-contained, loads in headless Chromium without console errors, shows only kept samples."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from passkit.release.report import funnel
from tests.helpers import ROOT
from tests.helpers.staging import Item, basic_items, staged_release, texture

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("report")
    items = basic_items(9) + [Item("face1", texture(201), people=0.99), Item("face2", texture(202), people=0.93),
                              Item("nc", texture(203), license="cc-by-nc-2.0")]
    return staged_release(tmp, items)


def test_report_is_self_contained_and_only_shows_kept_samples(release: Path) -> None:
    page = (release / "report.html").read_text()
    # nothing is loaded from elsewhere: every src/href to a resource is a data: URI
    for attr in re.findall(r'(?:src|href)="([^"]+)"', page):
        assert attr.startswith(("data:", "https://", "http://", "#")), attr
    assert not re.search(r'<(?:script|link)[^>]+(?:src|href)="(?!data:)', page)
    kept = pq.read_table(release / "index.parquet").column("key").to_pylist()
    rejected = pq.read_table(release / "rejected.parquet").to_pylist()
    shown = re.findall(r"<code>([A-Za-z0-9_-]+)</code></figcaption>", page)
    assert sorted(shown) == sorted(kept)
    for r in rejected:
        assert r["key"] not in shown
    assert page.count('src="data:image/jpeg;base64,') == len(kept)
    assert page.count('src="data:image/png;base64,') == 1  # the score histograms; the bars are HTML
    bars = re.findall(r'<div class="bar( bad)?" role="img" aria-label="(\d+) of (\d+)"><span style="width: ([\d.]+)%">', page)
    assert len(bars) >= 6  # funnel rows, reasons, licences, providers
    for _bad, n, of, width in bars:
        assert abs(float(width) - 100 * int(n) / int(of)) < 0.06
    for text in ("Funnel", "Rejection reasons", "Licences and providers", "score histograms", "people"):
        assert text in page


def test_funnel_numbers() -> None:
    f = funnel({"candidates": 10, "by_stage": {"people": 2, "license": 1, "dedup": 3, "zzz": 1}})
    assert [(s["stage"], s["remaining"]) for s in f] == [("license", 9), ("people", 7), ("dedup", 4), ("zzz", 3)]


def test_report_renders_in_headless_chromium(release: Path, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra)")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} missing: run `make browser` (apt-get install chromium)")
    from PIL import Image

    shot = tmp_path / "report.png"
    messages: list[str] = []
    requests: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            pg = browser.new_page(viewport={"width": 1280, "height": 900})
            pg.on("console", lambda m: messages.append(f"{m.type}: {m.text}") if m.type in ("error", "warning")
                  else None)
            pg.on("pageerror", lambda e: messages.append(f"pageerror: {e}"))
            pg.on("requestfailed", lambda r: messages.append(f"requestfailed: {r.url}"))
            pg.on("request", lambda r: requests.append(r.url))
            pg.goto((release / "report.html").as_uri(), wait_until="load")
            n_imgs = pg.evaluate("document.images.length")
            broken = pg.evaluate("[...document.images].filter(i => !i.complete || i.naturalWidth === 0).length")
            title = pg.title()
            pg.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert messages == []
    assert [u for u in requests if not u.startswith(("file://", "data:"))] == []
    assert n_imgs == 1 + 9 and broken == 0
    assert title.startswith("Report — syn-1.0.0")
    px = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert px.shape[0] > 1500 and px.std() > 20, "the screenshot looks blank"
    keep = ROOT / ".pytest_cache" / "report.png"
    keep.parent.mkdir(exist_ok=True)
    shutil.copyfile(shot, keep)  # for a human look after the run


@contextmanager
def _chromium_page() -> Iterator[tuple[Any, list[str]]]:
    """A Chromium page, and the console errors and page errors it reports."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra)")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} missing: run `make browser` (apt-get install chromium)")
    messages: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            pg = browser.new_page()
            pg.on("console", lambda m: messages.append(m.text) if m.type == "error" else None)
            pg.on("pageerror", lambda e: messages.append(str(e)))
            yield pg, messages
        finally:
            browser.close()


def test_attribution_page_renders_without_errors(release: Path) -> None:
    with _chromium_page() as (pg, messages):
        pg.goto((release / "attribution.html").as_uri(), wait_until="load")
        rows = pg.evaluate("document.querySelectorAll('tbody tr[id]').length")
    assert messages == [] and rows == 9


def test_paged_attribution_renders_without_errors(tmp_path: Path) -> None:
    # Above attribution.PAGE_SIZE samples attribution.html is an index of pages: both kinds load cleanly.
    from passkit.release import documents
    from passkit.release.attribution import PAGE_SIZE
    from tests.release.test_documents_scale import make_release

    m = make_release(tmp_path, n=PAGE_SIZE + 10, n_rejected=100, n_shards=2)
    documents.write_all(tmp_path, m, tmp_path / "index.parquet", tmp_path / "rejected.parquet")
    with _chromium_page() as (pg, messages):
        pg.goto((tmp_path / "attribution.html").as_uri(), wait_until="load")
        links = pg.evaluate("[...document.querySelectorAll('a[href^=\"attribution/\"]')].map(a => a.href)")
        pg.goto(links[-1], wait_until="load")
        rows = pg.evaluate("document.querySelectorAll('tbody tr[id]').length")
        pg.click("text=all pages and licences")
        back = pg.url
    assert messages == [] and len(links) == 2 and rows == 10
    assert back == (tmp_path / "attribution.html").as_uri()

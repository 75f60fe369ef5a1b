"""The documents of a release too big to hold in lists: paged attribution.html, streamed credits, bounded memory.

The release here is synthetic (index.parquet and rejected.parquet written directly, shards holding
only the images the report samples), 25,000 samples: enough for several attribution pages and for a
list-of-dicts implementation to show in the memory it takes.
"""

from __future__ import annotations

import gc
import math
import re
import tracemalloc
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from passkit.release import attribution, documents, manifest, report
from passkit.release.escape import is_formula, read_csv
from passkit.release.tables import INDEX_FILE, INDEX_SCHEMA, REJECTED_COLUMNS, REJECTED_FILE, REJECTED_SCHEMA
from passkit.shards import write_tar
from tests.helpers.staging import make_spec

N = 25_000
N_REJECTED = 30_000
N_SHARDS = 25
LICENSES = [("cc-by-4.0", "CC BY 4.0", "https://creativecommons.org/licenses/by/4.0/"),
            ("cc-by-2.0", "CC BY 2.0", "https://creativecommons.org/licenses/by/2.0/"),
            ("cc0-1.0", "CC0 1.0", "https://creativecommons.org/publicdomain/zero/1.0/")]
FORMULAS = {3: "=HYPERLINK(\"https://x\")", 77: " +1 and more", 1234: "\u3000@cmd", 9999: "'=already quoted",
            20000: "-5 degrees"}  # row -> title a spreadsheet would run
DETECTORS = [{"name": "mtcnn", "threshold": 0.9, "weights": "facenet-pytorch"},
             {"name": "hog", "threshold": 0.5, "weights": "opencv"}]
MOD = "resized to at most 128 px on the longer side, re-encoded as JPEG, metadata removed"


def _jpeg() -> bytes:
    import simplejpeg

    px = np.zeros((16, 24, 3), dtype=np.uint8)
    px[:, :12] = (200, 120, 40)
    return simplejpeg.encode_jpeg(px, quality=80, colorspace="RGB")


def make_release(d: Path, n: int = N, n_rejected: int = N_REJECTED, n_shards: int = N_SHARDS) -> dict[str, Any]:
    """index.parquet, rejected.parquet and shards (only the images the report samples) in `d`; the manifest."""
    rng = np.random.default_rng(7)
    keys = [f"syn_{i * 7919:016x}" for i in range(n)]  # ascending, as a release's index is
    per = math.ceil(n / n_shards)
    shard = [f"shards/syn-{i // per:06d}.tar" for i in range(n)]
    lic = [LICENSES[i % 3] for i in range(n)]
    creator_ids = rng.integers(0, 3000, n)
    creators = [("ANN " if c % 7 == 0 else "Ann ") + f"Creator {c}" for c in creator_ids]  # same person, two cases
    creator_urls = [f"https://www.flickr.com/photos/u{c}/" if c % 2 else None for c in creator_ids]
    titles = [FORMULAS.get(i, f"Photo {i} of a quiet street corner") for i in range(n)]
    landing = [f"https://www.flickr.com/photos/u{c}/{i}/" for i, c in enumerate(creator_ids)]
    cols: dict[str, Any] = {
        "key": keys, "shard": shard, "sha256": [f"{i:064x}" for i in range(n)],
        "phash": [f"{i:016x}" for i in range(n)], "width": [128] * n, "height": [96] * n, "bytes": [4000] * n,
        "title": titles, "creator": creators, "creator_url": creator_urls, "landing_url": landing,
        "source_url": [f"https://live.staticflickr.com/{i}.jpg" for i in range(n)],
        "provider": ["flickr" if i % 5 else "wikimedia" for i in range(n)],
        "license": [x[0] for x in lic], "license_spdx": [x[0].upper() for x in lic],
        "license_name": [x[1] for x in lic], "license_url": [x[2] for x in lic],
        "attribution": [f'"{t}" by {c} is licensed under {x[1]}. To view a copy of this license, visit {x[2]}. '
                        f"Source: {u}" for t, c, x, u in zip(titles, creators, lic, landing, strict=True)],
        "modification": [MOD] * n, "source": ["flickr"] * n, "source_id": [str(i) for i in range(n)],
        "query": [None] * n,
        "scores": [[("hog", float(a)), ("mtcnn", float(b))] for a, b in rng.random((n, 2)).round(4)],
    }
    schema = INDEX_SCHEMA
    pq.write_table(pa.table({c: cols[c] for c in schema.names}, schema=schema), d / INDEX_FILE)

    kinds = [("people", "people"), ("fetch", "http_404"), ("license", "license_not_allowed"), ("dedup", "duplicate")]
    rej: dict[str, Any] = {c: [None] * n_rejected for c in REJECTED_COLUMNS}
    rej["key"] = [f"rej_{i:016x}" for i in range(n_rejected)]
    rej["stage"] = [kinds[i % 4][0] for i in range(n_rejected)]
    rej["reason"] = [kinds[i % 4][1] for i in range(n_rejected)]
    rej["transient"] = [False] * n_rejected
    rej["scores"] = [[("hog", float(s)), ("mtcnn", float(s))] if i % 4 == 0 else []
                     for i, s in enumerate(rng.random(n_rejected).round(4))]
    pq.write_table(pa.table(rej, schema=REJECTED_SCHEMA), d / REJECTED_FILE)

    sampled = {keys[int(i * n / report.MAX_THUMBS)] for i in range(report.MAX_THUMBS)}
    jpeg, entries = _jpeg(), []
    for s in range(n_shards):
        rel = f"shards/syn-{s:06d}.tar"
        members = [(f"{k}.jpg", jpeg) for k in keys[s * per : (s + 1) * per] if k in sampled]
        info = write_tar(d / rel, members)
        entries.append({"path": rel, "sha256": info.sha256, "bytes": info.bytes, "samples": len(keys[s * per:(s + 1) * per])})
    by_stage: dict[str, int] = {}
    by_reason: dict[str, int] = {}
    for st, r in zip(rej["stage"], rej["reason"], strict=True):
        by_stage[st] = by_stage.get(st, 0) + 1
        by_reason[r] = by_reason.get(r, 0) + 1
    return manifest.make(
        spec=make_spec(), created="2026-01-01T00:00:00Z", source={"kind": "test"}, detectors=DETECTORS,
        detectors_skipped=[], shards=entries, files={},
        counts={"candidates": n + n_rejected, "kept": n, "rejected": n_rejected,
                "by_stage": dict(sorted(by_stage.items())), "by_reason": dict(sorted(by_reason.items()))},
    )


class _Checker(HTMLParser):
    """Tags open and close in order (void elements aside); collects row ids and links."""

    VOID = {"meta", "link", "img", "br", "hr", "input"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.ids: list[str] = []
        self.hrefs: list[str] = []
        self.errors: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        a = dict(attrs)
        if tag == "tr" and a.get("id"):
            self.ids.append(a["id"] or "")
        if tag == "a":
            self.hrefs.append(a.get("href") or "")
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


def _parse(path: Path) -> _Checker:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    c = _Checker()
    c.feed(text)
    c.close()
    assert c.errors == [] and c.stack == [], (path, c.errors[:3], c.stack)
    return c


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], list[str], int]:
    d = tmp_path_factory.mktemp("big")
    m = make_release(d)
    report.warm_up()  # imports and compiled templates are not the documents' memory
    import cv2  # noqa: F401  (the thumbnails' imports)
    import pyarrow.compute  # noqa: F401
    import simplejpeg  # noqa: F401

    gc.collect()
    tracemalloc.start()
    try:
        names = documents.write_all(d, m, d / INDEX_FILE, d / REJECTED_FILE)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return d, m, names, peak


def test_attribution_html_is_an_index_of_pages(big: tuple[Path, dict[str, Any], list[str], int]) -> None:
    d, _, names, _ = big
    pages = [n for n in names if n.startswith("attribution/")]
    count = math.ceil(N / attribution.PAGE_SIZE)
    assert count > 1 and pages == [f"attribution/page-{i:05d}.html" for i in range(1, count + 1)]
    assert sorted(p.relative_to(d).as_posix() for p in (d / "attribution").iterdir()) == pages
    for doc in documents.DOCUMENTS:
        assert doc in names
    index = _parse(d / "attribution.html")
    assert [h for h in index.hrefs if h.startswith("attribution/")] == pages
    assert "script" not in index.tags
    ranges = re.findall(r'<a href="(attribution/page-\d+\.html)">page \d+</a></td><td><code>(\w+)</code></td>'
                        r'<td><code>(\w+)</code></td><td class="num">(\d+)</td>', (d / "attribution.html").read_text())
    assert [r[0] for r in ranges] == pages
    assert "25000 images" in (d / "attribution.html").read_text()

    keys = pq.read_table(d / INDEX_FILE, columns=["key"]).column("key").to_pylist()
    seen: list[str] = []
    for (name, first, last, n), page in zip(ranges, pages, strict=True):
        assert name == page
        assert (d / page).stat().st_size < 5_000_000, page
        p = _parse(d / page)
        assert "script" not in p.tags
        assert len(p.ids) == int(n) and p.ids[0] == first and p.ids[-1] == last
        assert "../attribution.html" in p.hrefs
        for h in p.hrefs:
            assert h.startswith(("https://", "http://", "../attribution.html", "page-")), h
        seen += p.ids
    assert seen == keys  # every key once, in key order


def test_credit_lists_stream_every_row(big: tuple[Path, dict[str, Any], list[str], int]) -> None:
    d, _, _, _ = big
    table = pq.read_table(d / INDEX_FILE)
    keys = table.column("key").to_pylist()
    md = (d / "ATTRIBUTION.md").read_text(encoding="utf-8").splitlines()
    credits = [line for line in md if line.startswith("- `")]
    assert [c[3 : c.index("`", 3)] for c in credits] == keys
    assert f"This release contains {N} images" in md[2]
    rows = read_csv(d / "attribution.csv")
    assert [r["key"] for r in rows] == keys
    assert [r["title"] for r in rows] == table.column("title").to_pylist()  # formula guards read back off
    cells = sum(1 for r in table.select(attribution.CSV_COLUMNS).to_pylist()
                for c in attribution.CSV_COLUMNS if is_formula(r[c] or ""))
    assert cells == len(FORMULAS)  # leading spaces (" +1", "\u3000@") and a quote ("'=") do not hide a formula
    assert f"In attribution.csv, {cells} cell(s) began with" in "\n".join(md)


def test_card_and_report_carry_the_exact_numbers(big: tuple[Path, dict[str, Any], list[str], int]) -> None:
    d, _, _, _ = big
    table = pq.read_table(d / INDEX_FILE, columns=["creator", "creator_url"]).to_pylist()
    creators = len({(r["creator_url"] or r["creator"] or "").lower() for r in table})
    card = (d / "README.md").read_text(encoding="utf-8")
    assert f"by {creators} creators" in card
    assert "| people | people | 7500 |" in card and "size_categories:\n- 10K<n<100K" in card
    page = (d / "report.html").read_text(encoding="utf-8")
    assert len(page) < 3_000_000
    assert page.count('src="data:image/jpeg;base64,') == report.MAX_THUMBS
    assert page.count('src="data:image/png;base64,') == 1
    assert f"({report.MAX_THUMBS} of {N}, evenly spaced by key)" in page


def test_write_all_memory_stays_bounded(big: tuple[Path, dict[str, Any], list[str], int]) -> None:
    d, _, _, peak = big
    # What holding the tables as Python rows costs, as the documents did before they streamed
    gc.collect()
    tracemalloc.start()
    try:
        rows = pq.read_table(d / INDEX_FILE).to_pylist()
        rejected = pq.read_table(d / REJECTED_FILE).to_pylist()
        lists = tracemalloc.get_traced_memory()[1]
        del rows, rejected
    finally:
        tracemalloc.stop()
    print(f"write_all peak {peak / 1e6:.1f} MB; the two tables as lists of dicts {lists / 1e6:.1f} MB")
    assert lists > 60_000_000  # the comparison means something
    assert peak < 25_000_000 and peak < lists / 3


def test_score_values_switch_to_bin_counts_exactly() -> None:
    rng = np.random.default_rng(3)
    chunks = [rng.random(30_000) for _ in range(5)]
    v = report.ScoreValues()
    for c in chunks:
        v.add(c)
    x, w = v.hist_args()
    everything = np.concatenate(chunks)
    assert v.n == len(everything) and len(x) == len(report.SCORE_BINS) - 1
    assert np.array_equal(np.histogram(x, bins=report.SCORE_BINS, weights=w)[0],
                          np.histogram(everything, bins=report.SCORE_BINS)[0])
    small = report.ScoreValues()
    small.add(chunks[0][:10])
    x, w = small.hist_args()
    assert w is None and np.array_equal(x, chunks[0][:10])  # few values: drawn as they are


def test_thumbnail_sample_without_key_order(tmp_path: Path) -> None:
    # An index not in key order (not one passkit wrote) samples the same rows as sorting it would.
    keys = [f"k{i:04d}" for i in range(500)]
    shuffled = list(np.random.default_rng(1).permutation(keys))
    pq.write_table(pa.table({"key": shuffled, "shard": ["s"] * 500}), tmp_path / "i.parquet")
    got = report._sample_rows(tmp_path / "i.parquet", 7, ["key", "shard"])
    assert [r["key"] for r in got] == [keys[int(i * 500 / 7)] for i in range(7)]
    pq.write_table(pa.table({"key": keys, "shard": ["s"] * 500}), tmp_path / "j.parquet")
    assert report._sample_rows(tmp_path / "j.parquet", 7, ["key", "shard"]) == got


def test_formula_candidates_cover_every_formula_start() -> None:
    # The Arrow pre-test must never miss a cell the exact test would guard: every code point checked.
    chars = [chr(i) for i in range(0x110000) if not 0xD800 <= i < 0xE000]
    cells = [c + "=" for c in chars] + chars
    maybe = attribution.formula_candidates(pa.array(cells)).to_pylist()
    assert not [c for c, m in zip(cells, maybe, strict=True) if is_formula(c) and not m]

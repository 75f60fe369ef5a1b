"""Strangers' text in every output format: a release built from hostile metadata (markup, formulas,
control and bidirectional characters, a megabyte title) has documents that show that text literally and
run none of it, passes its own audit, and `passkit` prints it as text."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from passkit import cli, licenses
from passkit.audit import audit
from passkit.release.attribution import CSV_COLUMNS
from passkit.release.escape import csv_cell, csv_value, is_formula, markdown_text, read_csv, write_csv
from passkit.shards import iter_samples
from tests.helpers import staging
from tests.helpers.staging import Item, basic_items, staged_release, texture

SCRIPT = "<script>alert(1)</script>"
MD_LINK = "[x](javascript:alert(1))"
RICH = "[/][link=http://evil.example]click[/link] [blink]blink[/blink]"
# Field overrides of the hostile candidates (the staging helper makes the rest).
HOSTILE: dict[str, dict[str, Any]] = {
    "h1": {"title": '=HYPERLINK("http://evil.example","click")',
           "creator": "&lt;script&gt;alert(1)&lt;/script&gt; " + MD_LINK + " <img src=x onerror=alert(3)>",
           "provider": "&lt;img src=x onerror=alert(1)&gt; ![i](javascript:alert(2)) &amp;lt;b&amp;gt;",
           "creator_url": "javascript:alert(1)"},
    "h2": {"title": "-2+3", "creator": "@SUM(1+1)*cmd|' /C calc'!A0", "provider": "+cmd " + RICH},
    "h3": {"title": "t" * 1_000_000, "creator": "Ann\u202eevil\u202c Example\x00\u2066x\u2069",
           "provider": "exa\u200fmple\x1b[31m"},
    "h4": {"title": " =1+1 line\n# Heading\n" + SCRIPT, "creator": "| a | b |\n---|---\n" + RICH,
           "provider": "[/]|a|b|", "landing_url": "https://example.org/p/4?q=1|2\n<x>\r\n## Injected"},
}
# What no document may carry (an independent list, not the gate's): controls other than the line feed
# the documents' own lines end with, and the bidirectional controls.
INVISIBLE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("hostile")
    make = staging._candidate

    def candidate(it: Item, url_base: str = "https://example.org") -> Any:
        c = make(it, url_base)
        for k, v in it.extra.items():
            setattr(c, k, v)
        return c

    items = basic_items(3) + [Item(k, texture(300 + i), extra=v) for i, (k, v) in enumerate(HOSTILE.items())]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(staging, "_candidate", candidate)
        return staged_release(tmp, items)


def _index(release: Path) -> dict[str, dict[str, Any]]:
    return {r["source_id"]: r for r in pq.read_table(release / "index.parquet").to_pylist()}


def _metas(release: Path) -> Iterator[dict[str, Any]]:
    for shard in sorted((release / "shards").glob("*.tar")):
        for _, group in iter_samples(shard):
            yield json.loads(group["json"])


def test_hostile_release_is_complete_and_passes_its_own_audit(release: Path) -> None:
    idx = _index(release)
    assert set(idx) == {"s00", "s01", "s02", *HOSTILE}  # nothing hostile was lost or refused
    report = audit(release)
    assert report.ok, [f"{f.code}: {f.message}" for f in report.findings]


def test_text_is_cleaned_and_capped_at_the_gate_and_the_change_is_recorded(release: Path) -> None:
    idx = _index(release)
    h3 = idx["h3"]
    assert len(h3["title"]) == licenses.TEXT_LIMITS["title"] and h3["title"].endswith(licenses.ELLIPSIS)
    assert h3["creator"] == "Annevil Examplex" and h3["provider"] == "example[31m"
    metas = {m["source_id"]: m for m in _metas(release)}
    assert metas["h3"]["text_changes"] == (
        "title: cut from 1000000 to 1000 characters; creator: 5 control or bidirectional character(s) removed; "
        "provider: 2 control or bidirectional character(s) removed")
    assert "landing_url: 3 control" in metas["h4"]["text_changes"]
    for k in ("s00", "s01", "s02", "h1", "h2"):
        assert "text_changes" not in metas[k], k  # ordinary samples keep their exact json
    for m in metas.values():
        for v in m.values():
            assert not (isinstance(v, str) and INVISIBLE.search(v)), v
    for name in ("README.md", "ATTRIBUTION.md", "LICENSES.md", "attribution.csv", "attribution.html", "report.html"):
        assert not INVISIBLE.search((release / name).read_text(encoding="utf-8")), name
    assert (release / "report.html").stat().st_size < 300_000  # no megabyte title in it, twice


def test_hugging_face_loading_takes_the_text_changes_field(release: Path, tmp_path: Path) -> None:
    """Only some samples carry text_changes: the datasets loader must still read every shard."""
    pytest.importorskip("datasets")
    from passkit.stream.hf import dataset

    ds = dataset(release, cache_dir=tmp_path)
    changes = dict(zip(ds["source_id"], ds["text_changes"], strict=True))
    assert changes["s00"] is None and changes["h3"].startswith("title: cut from 1000000 to 1000 characters")


# ----------------------------------------------------------------------------- Markdown


def _markdown_tokens(text: str) -> list[Any]:
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": True}).enable("table")  # html on: raw HTML would show as tokens
    out = []
    for t in md.parse(text):
        out.append(t)
        out.extend(t.children or [])
    return out


def _check_markdown(text: str) -> str:
    """No raw HTML, no image, links to http(s) only; returns the rendered plain text."""
    tokens = _markdown_tokens(text)
    kinds = {t.type for t in tokens}
    assert not kinds & {"html_inline", "html_block", "image"}, kinds
    for t in tokens:
        if t.type == "link_open":
            assert str(t.attrs["href"]).startswith(("http://", "https://")), t.attrs
    return "".join(t.content for t in tokens if t.type in ("text", "code_inline"))


def test_attribution_md_shows_hostile_text_literally(release: Path) -> None:
    md = (release / "ATTRIBUTION.md").read_text(encoding="utf-8")
    shown = _check_markdown(md)
    assert SCRIPT in shown and MD_LINK in shown and RICH in shown and "| a | b |" in shown
    assert "&lt;b&gt;" not in md or "\\&lt;b&gt;" in md  # a character reference stays text too
    tokens = _markdown_tokens(md)
    assert sum(t.type == "list_item_open" for t in tokens) == 7  # one credit line per sample
    headings = [tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "heading_open"]
    assert headings == ["Attribution — syn-1.0.0", "Credits"]  # no field broke out of its line
    # the formula guard of attribution.csv is documented where the file is described
    assert "OWASP" in md and "attribution.csv" in md


def test_dataset_card_escapes_providers_and_keeps_its_yaml_header(release: Path) -> None:
    text = (release / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    header_text, body = text[4:].split("\n---\n", 1)
    header = yaml.safe_load(header_text)
    assert set(header) == {"pretty_name", "license", "size_categories", "task_categories", "tags", "configs"}
    shown = _check_markdown(body)
    assert "<img src=x onerror=alert(1)> ![i](javascript:alert(2))" in shown and "[/]|a|b|" in shown
    assert "&lt;b&gt;" in shown  # the provider's literal "&lt;b&gt;" (entity decoded once, at the gate)
    # the provider table: one row per provider, two cells each, whatever | the names hold
    tables = re.findall(r"^\| provider \| images \|\n(?:\|.*\n)+", body, flags=re.M)
    assert len(tables) == 1
    assert _cells_per_row(_markdown_tokens(tables[0])) == [2] * (1 + 5)  # header, "example", 4 hostile
    headings = [t for t in _markdown_tokens(body) if t.type == "heading_open"]
    assert [t.tag for t in headings] == ["h1"] + ["h2"] * 7
    assert "OWASP" in body


def _cells_per_row(tokens: list[Any]) -> list[int]:
    counts, n = [], 0
    for t in tokens:
        if t.type == "tr_open":
            n = 0
        elif t.type in ("td_open", "th_open"):
            n += 1
        elif t.type == "tr_close":
            counts.append(n)
    return counts


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([*"ab &#;:/<>[]()!*_`\\|~=-+@'\"\n\r\t{}x1", "&lt;", "&#60;", "javascript:"]),
                max_size=40).map("".join))
def test_property_markdown_text_renders_as_exactly_the_text(s: str) -> None:
    line = markdown_text(s)
    assert "\n" not in line and "\r" not in line
    shown = _check_markdown(f"x {line} x")
    assert shown == "x " + re.sub(r"[\r\n\t]", " ", s) + " x"
    row = _markdown_tokens(f"| a | b |\n|---|---|\n| {line} | 1 |\n")
    assert _cells_per_row(row) == [2, 2]


# ----------------------------------------------------------------------------- CSV


def test_attribution_csv_neutralises_formulas_and_reads_back_exactly(release: Path) -> None:
    raw = (release / "attribution.csv").read_bytes().decode("utf-8")
    rows = list(csv.reader(io.StringIO(raw, newline="")))
    assert len(rows) == 1 + 7 and all(len(r) == len(CSV_COLUMNS) for r in rows)
    for r in rows:
        for cell in r:
            assert not re.match(r"\s*[=+\-@\t\r]", cell), cell  # nothing a spreadsheet would run
    by_id = {r["key"]: r for r in _index(release).values()}
    back = read_csv(release / "attribution.csv")
    assert [r["key"] for r in back] == sorted(by_id)
    for r in back:
        want = by_id[r["key"]]
        assert r == {c: want[c] or "" for c in CSV_COLUMNS}
    h1 = next(r for r in rows if r[CSV_COLUMNS.index("title")].startswith("'="))
    assert h1[CSV_COLUMNS.index("title")] == "'" + HOSTILE["h1"]["title"]


@settings(max_examples=500, deadline=None)
@given(st.text(st.sampled_from(list("'= +-@\t\r\n ax\"") + [" "]), max_size=12))
def test_property_csv_cell_is_never_a_formula_and_inverts_exactly(s: str) -> None:
    cell = csv_cell(s)
    assert not re.match(r"\s*[=+\-@\t\r]", cell)
    assert csv_value(cell) == s
    assert is_formula(s) == (cell != s)


def test_csv_rows_survive_carriage_returns_and_quotes(tmp_path: Path) -> None:
    rows = [{"a": "x\ry", "b": 'say "hi"\r\n=1'}, {"a": "\r", "b": "plain"}, {"a": "-1", "b": None}]
    path = tmp_path / "t.csv"
    write_csv(path, ["a", "b"], rows)
    assert path.read_bytes().count(b"\n") == 4 + 1  # header + 3 rows, and one CRLF inside a cell
    assert read_csv(path) == [{"a": "x\ry", "b": 'say "hi"\r\n=1'}, {"a": "\r", "b": "plain"}, {"a": "-1", "b": ""}]
    assert list(csv.reader(io.StringIO(path.read_bytes().decode("utf-8"), newline="")))[3] == ["'-1", ""]


# ----------------------------------------------------------------------------- HTML


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


@pytest.mark.parametrize("name", ["attribution.html", "report.html"])
def test_html_documents_carry_no_live_markup(release: Path, name: str) -> None:
    page = _Page()
    page.feed((release / name).read_text(encoding="utf-8"))
    assert "script" not in {t for t, _ in page.tags}
    for tag, attrs in page.tags:
        for a, v in attrs:
            assert not a.startswith("on"), (tag, a, v)
            if a in ("href", "src"):
                assert (v or "").startswith(("http://", "https://", "data:", "#")), (tag, a, v)
    text = "".join(page.text)
    assert SCRIPT in text  # shown as text
    if name == "attribution.html":
        assert "javascript:alert(1)" not in {v for _, attrs in page.tags for _, v in attrs}


# ----------------------------------------------------------------------------- terminal


@pytest.fixture
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's consoles as a colour terminal would have them, wide enough not to wrap a line."""
    monkeypatch.setattr(cli, "out", Console(width=4000, force_terminal=True, color_system="standard"))
    monkeypatch.setattr(cli, "console", Console(stderr=True, width=4000, force_terminal=True,
                                                color_system="standard"))


def _literal(text: str) -> None:
    assert "\x1b]8;" not in text  # no terminal hyperlink
    assert "\x1b[5m" not in text  # nothing blinks


def test_info_prints_hostile_text_literally(release: Path, wide: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["info", str(release)]) == 0
    printed = capsys.readouterr().out
    assert "[/]|a|b|" in printed and "+cmd " + RICH in printed
    _literal(printed)


def test_query_prints_hostile_text_literally(release: Path, wide: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["query", str(release), "SELECT provider FROM samples ORDER BY key"]) == 0
    printed = capsys.readouterr().out
    assert "[/]|a|b|" in printed and "+cmd " + RICH in printed
    _literal(printed)


def test_spec_errors_print_the_spec_literally(tmp_path: Path, wide: None, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "hostile.yaml"
    spec.write_text(yaml.safe_dump({"name": "h", "version": "1.0.0", "source": {"kind": "demo"},
                                    "work": {"workers": RICH}, "[/][blink]key[/blink]": 1}), encoding="utf-8")
    assert cli.main(["build", str(spec)]) == 2
    err = capsys.readouterr().err
    assert RICH in err and "[/][blink]key[/blink]" in err and "error:" in err
    _literal(err)

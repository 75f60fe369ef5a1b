"""Attribution files: CC BY asks that every copy keeps its credit line and notes modifications.

ATTRIBUTION.md (readable in a repository), attribution.csv (for tools) and attribution.html (a page
with working links to each work, its creator and its licence). All three list the same rows, in key
order, with the same credit sentence as each sample's `<key>.json`. They are written as the rows
stream from index.parquet, after documents.summarize_index has counted what their headers say; above
PAGE_SIZE rows attribution.html is an index of attribution/page-NNNNN.html pages, which a browser can
open where one page of a million credits would not load.

Titles and creators are strangers' text: ATTRIBUTION.md escapes them for Markdown, attribution.html
for HTML (the template autoescapes, and only http(s) URLs become links), and attribution.csv starts a
cell a spreadsheet would run as a formula with a single quote (passkit.release.escape); the audit
reads the csv back through the same module.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from passkit.licenses import http_url, spdx_of
from passkit.release.escape import FORMULA_PREFIX, csv_cell, markdown_text

if TYPE_CHECKING:
    from passkit.release.documents import IndexSummary

CSV_COLUMNS = [
    "key", "title", "creator", "creator_url", "landing_url", "source_url", "provider",
    "license", "license_spdx", "license_name", "license_url", "attribution", "modification",
]

PAGE_SIZE = 5_000  # credits per attribution page: about 3 MB of HTML for typical Flickr metadata

_md = markdown_text


# A cell can start a formula (escape.is_formula) only with a quote, a whitespace character or one of
# =+-@: this test, run by Arrow over a whole column, leaves the exact one a handful of cells. The
# class is Python's str.isspace() set (Unicode Z categories, ASCII and C1 separators) plus those four.
_FORMULA_START = r"^['=+@\-\t-\r\x1c-\x20\x{85}\p{Z}]"


def formula_candidates(column: Any) -> Any:
    """Arrow booleans: which cells of a string column might get a FORMULA_PREFIX (a superset)."""
    import pyarrow.compute as pc

    return pc.fill_null(pc.match_substring_regex(column, _FORMULA_START), False)


def csv_note(formula_cells: int) -> list[str]:
    """The lines saying how attribution.csv keeps spreadsheets from running cells, given how many cells
    needed it; none when none did (the documents of a release with ordinary metadata stay as they were)."""
    n = formula_cells
    if not n:
        return []
    return [
        f"In attribution.csv, {n} cell(s) began with =, +, -, @, a tab or a carriage return, which spreadsheet",
        f"programs run as formulas; as OWASP recommends against CSV injection, each starts with an added `{FORMULA_PREFIX}`",
        "(shown as text). Remove that first character to get the value as the sample's `<key>.json` has it.",
    ]


def write_markdown(path: Path, release: str, rows: Iterable[dict[str, Any]], summary: IndexSummary) -> None:
    """ATTRIBUTION.md: the summary's header, then one credit line per row, written as the rows come."""
    lines = [
        f"# Attribution — {release}",
        "",
        f"This release contains {summary.rows} images by their respective creators. Each image is used under",
        "the licence named beside it; every image was modified: "
        + (summary.modification if summary.rows else "n/a") + ".",
        "Each shard's `<key>.json` carries the same credit line, so attribution travels with every copy.",
        "The same list, with links, is in attribution.html and, for tools, attribution.csv.",
        *csv_note(summary.formula_cells),
        "",
        "| licence | images |",
        "|---|---|",
        *[f"| {_md(name)} | {n} |" for name, n in sorted(summary.license_names.items())],
        "",
        "## Credits",
        "",
    ]
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in lines)
        f.writelines(f"- `{r['key']}`: {_md(r['attribution'])}\n" for r in rows)


def _cell(row: dict[str, Any], column: str) -> str:
    """A row's value for attribution.csv; an index written before license_spdx existed gets it from `license`."""
    if column == "license_spdx" and not row.get(column):
        return spdx_of(row.get("license")) or ""
    return row.get(column) or ""


def write_csv(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """attribution.csv, row by row, in the bytes escape.write_csv gives a list of the same rows.

    escape.write_csv formats each row with "\r\n" (so csv quotes a cell holding either character)
    and writes it with "\n"; a row without a carriage return comes out the same from a "\n" writer,
    which is what nearly every row takes, without the per-row buffer."""
    buf = io.StringIO()
    framed = csv.writer(buf, lineterminator="\r\n")
    with open(path, "w", newline="", encoding="utf-8") as f:
        plain = csv.writer(f, lineterminator="\n")
        for values in itertools.chain([CSV_COLUMNS], ([csv_cell(_cell(r, c)) for c in CSV_COLUMNS] for r in rows)):
            if not any("\r" in v for v in values):
                plain.writerow(values)
                continue
            buf.seek(0)
            buf.truncate()
            framed.writerow(values)
            f.write(buf.getvalue()[:-2] + "\n")


safe_url = http_url  # only http(s) links are rendered as links: a `javascript:` URL stays plain text


@dataclass(slots=True)
class _Credit:
    """One row of an attribution page (attributes, which the templates read faster than dict keys)."""

    key: str
    title: str
    landing: str | None
    creator: str
    creator_link: str | None
    license_name: str
    license_link: str | None
    attribution: str


def _item(r: dict[str, Any]) -> _Credit:
    return _Credit(
        key=r["key"],
        title=r.get("title") or "Untitled",
        landing=safe_url(r.get("landing_url")),
        creator=r.get("creator") or "",
        creator_link=safe_url(r.get("creator_url")),
        license_name=r.get("license_name") or r.get("license") or "",
        license_link=safe_url(r.get("license_url")),
        attribution=r.get("attribution") or "",
    )


class _Items:
    """A page's rows for a template: their count up front, the rows themselves as they are read (the
    first and last key, and how many there were, noted on the way)."""

    def __init__(self, rows: Iterable[dict[str, Any]], n: int) -> None:
        self._rows, self._n = rows, n
        self.first = self.last = ""
        self.seen = 0

    def __len__(self) -> int:
        return self._n

    def __iter__(self) -> Iterator[_Credit]:
        for r in self._rows:
            if not self.seen:
                self.first = r["key"]
            self.last = r["key"]
            self.seen += 1
            yield _item(r)


def _stream(path: Path, template: str, **context: Any) -> None:
    from passkit.release.templates import environment

    with open(path, "w", encoding="utf-8") as f:
        f.writelines(environment().get_template(template).generate(**context))


def write_html(path: Path, release: str, rows: list[dict[str, Any]]) -> None:
    """attribution.html as one page of these rows."""
    lic = Counter(r["license_name"] for r in rows)
    _stream(path, "attribution.html.j2", release=release, rows=_Items(rows, len(rows)),
            licenses=sorted(lic.items()), modification=rows[0]["modification"] if rows else "")


def page_name(number: int) -> str:
    return f"attribution/page-{number:05d}.html"


def write_html_pages(release_dir: Path, release: str, rows: Iterable[dict[str, Any]], summary: IndexSummary,
                     page_size: int | None = None) -> list[str]:
    """attribution.html, and when there are more than `page_size` rows, its pages; returns the pages' names.

    Up to `page_size` rows it is the one page `write_html` makes. Above, a browser could not open one
    page of every credit (a million rows is hundreds of MB of HTML), so attribution.html becomes an index:
    the licences and a table of pages, each with its first and last key (the rows are in key order, so
    the page holding a key is found by its range) and attribution/page-NNNNN.html hold `page_size`
    credits each, linkable by key (page-00001.html#<key>)."""
    d = Path(release_dir)
    page_size = page_size or PAGE_SIZE
    modification = summary.modification if summary.rows else ""
    if summary.rows <= page_size:
        _stream(d / "attribution.html", "attribution.html.j2", release=release, rows=_Items(rows, summary.rows),
                licenses=sorted(summary.license_names.items()), modification=modification)
        return []
    (d / "attribution").mkdir(exist_ok=True)
    count = -(-summary.rows // page_size)
    it = iter(rows)
    pages: list[dict[str, Any]] = []
    for number in range(1, count + 1):
        n = min(page_size, summary.rows - (number - 1) * page_size)
        items = _Items(itertools.islice(it, n), n)
        name = page_name(number)
        _stream(d / name, "attribution_page.html.j2", release=release, rows=items, number=number, count=count,
                index="../attribution.html",
                previous=Path(page_name(number - 1)).name if number > 1 else None,
                next=Path(page_name(number + 1)).name if number < count else None)
        if items.seen != n:
            raise ValueError(f"index.parquet holds fewer rows than its metadata says ({summary.rows})")
        pages.append({"href": name, "number": number, "first": items.first, "last": items.last, "count": n})
    _stream(d / "attribution.html", "attribution_index.html.j2", release=release, total=summary.rows,
            licenses=sorted(summary.license_names.items()), modification=modification, pages=pages,
            page_size=page_size)
    return [p["href"] for p in pages]

"""Attribution files: CC BY asks that every copy keeps its credit line and notes modifications.

ATTRIBUTION.md (readable in a repository), attribution.csv (for tools) and attribution.html (a page
with working links to each work, its creator and its licence). All three list the same rows, in key
order, with the same credit sentence as each sample's `<key>.json`.

Titles and creators are strangers' text: ATTRIBUTION.md escapes them for Markdown, attribution.html
for HTML (the template autoescapes, and only http(s) URLs become links), and attribution.csv starts a
cell a spreadsheet would run as a formula with a single quote (passkit.release.escape); the audit
reads the csv back through the same module.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from passkit.licenses import http_url
from passkit.release import escape
from passkit.release.escape import FORMULA_PREFIX, is_formula, markdown_text

CSV_COLUMNS = [
    "key", "title", "creator", "creator_url", "landing_url", "source_url", "provider",
    "license", "license_name", "license_url", "attribution", "modification",
]

_md = markdown_text


def formula_cells(rows: list[dict[str, Any]]) -> int:
    """How many attribution.csv cells of these rows get a FORMULA_PREFIX."""
    return sum(1 for r in rows for c in CSV_COLUMNS if is_formula(r.get(c) or ""))


def csv_note(rows: list[dict[str, Any]]) -> list[str]:
    """The lines saying how attribution.csv keeps spreadsheets from running cells; none when no cell
    needed it (the documents of a release with ordinary metadata stay as they were)."""
    n = formula_cells(rows)
    if not n:
        return []
    return [
        f"In attribution.csv, {n} cell(s) began with =, +, -, @, a tab or a carriage return, which spreadsheet",
        f"programs run as formulas; as OWASP recommends against CSV injection, each starts with an added `{FORMULA_PREFIX}`",
        "(shown as text). Remove that first character to get the value as the sample's `<key>.json` has it.",
    ]


def write_markdown(path: Path, release: str, rows: list[dict[str, Any]]) -> None:
    lic = Counter(r["license_name"] for r in rows)
    lines = [
        f"# Attribution — {release}",
        "",
        f"This release contains {len(rows)} images by their respective creators. Each image is used under",
        "the licence named beside it; every image was modified: "
        + (rows[0]["modification"] if rows else "n/a") + ".",
        "Each shard's `<key>.json` carries the same credit line, so attribution travels with every copy.",
        "The same list, with links, is in attribution.html and, for tools, attribution.csv.",
        *csv_note(rows),
        "",
        "| licence | images |",
        "|---|---|",
        *[f"| {_md(name)} | {n} |" for name, n in sorted(lic.items())],
        "",
        "## Credits",
        "",
    ]
    for r in rows:
        lines.append(f"- `{r['key']}`: {_md(r['attribution'])}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    escape.write_csv(path, CSV_COLUMNS, rows)


safe_url = http_url  # only http(s) links are rendered as links: a `javascript:` URL stays plain text


def write_html(path: Path, release: str, rows: list[dict[str, Any]]) -> None:
    from passkit.release.templates import render

    lic = Counter(r["license_name"] for r in rows)
    items = [
        {
            "key": r["key"],
            "title": r.get("title") or "Untitled",
            "landing": safe_url(r.get("landing_url")),
            "creator": r.get("creator") or "",
            "creator_link": safe_url(r.get("creator_url")),
            "license_name": r.get("license_name") or r.get("license") or "",
            "license_link": safe_url(r.get("license_url")),
            "attribution": r.get("attribution") or "",
        }
        for r in rows
    ]
    text = render(
        "attribution.html.j2", release=release, rows=items, licenses=sorted(lic.items()),
        modification=rows[0]["modification"] if rows else "",
    )
    path.write_text(text, encoding="utf-8")

"""Attribution files: CC BY asks that every copy keeps its credit line and notes modifications.

ATTRIBUTION.md (readable in a repository), attribution.csv (for tools) and attribution.html (a page
with working links to each work, its creator and its licence). All three list the same rows, in key
order, with the same credit sentence as each sample's `<key>.json`.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path
from typing import Any

CSV_COLUMNS = [
    "key", "title", "creator", "creator_url", "landing_url", "source_url", "provider",
    "license", "license_name", "license_url", "attribution", "modification",
]


def _md(text: Any) -> str:
    s = "" if text is None else str(text)
    for ch in "\\`*_[]<>|":
        s = s.replace(ch, "\\" + ch)
    return s


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
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c) or "" for c in CSV_COLUMNS})


def safe_url(url: Any) -> str | None:
    """Only http(s) links are rendered as links: a `javascript:` URL in metadata stays plain text."""
    return url if isinstance(url, str) and url.lower().startswith(("http://", "https://")) else None


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

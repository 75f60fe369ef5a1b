"""Attribution files: CC BY asks that every copy keeps its credit line and notes modifications."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path
from typing import Any

from passkit.config import PipelineSpec

CSV_COLUMNS = [
    "key", "title", "creator", "creator_url", "landing_url", "source_url", "provider",
    "license", "license_name", "license_url", "attribution", "modification",
]


def _md(text: Any) -> str:
    s = "" if text is None else str(text)
    for ch in "\\`*_[]<>|":
        s = s.replace(ch, "\\" + ch)
    return s


def write_markdown(path: Path, spec: PipelineSpec, rows: list[dict[str, Any]]) -> None:
    lic = Counter(r["license_name"] for r in rows)
    lines = [
        f"# Attribution — {spec.release_name}",
        "",
        f"This release contains {len(rows)} images by their respective creators. Each image is used under",
        "the licence named beside it; every image was modified: "
        + (rows[0]["modification"] if rows else "n/a") + ".",
        "Each shard's `<key>.json` carries the same credit line, so attribution travels with every copy.",
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

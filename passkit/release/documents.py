"""Every human-readable file of a release, derived from the manifest, the index and the rejections.

`write_all` writes ATTRIBUTION.md, attribution.csv, attribution.html (attribution.py), LICENSES.md
and the dataset card README.md (card.py) and report.html (report.py). The builder and a takedown
call it the same way, so documents always agree with the samples they describe. Deterministic:
the same inputs give the same bytes (no clock, no random ids).

Titles, creators and providers are strangers' text, already plain (the licence gate decoded entities,
removed control and bidirectional characters and capped lengths); each writer escapes it for its own
format when it writes it: Markdown and CSV through passkit.release.escape, HTML by the templates'
autoescaping, with links only to http(s) URLs.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from passkit.shards import sha256_file

DOCUMENTS = ("ATTRIBUTION.md", "attribution.csv", "attribution.html", "LICENSES.md", "README.md", "report.html")


def write_all(
    release_dir: Path,
    manifest: dict[str, Any],
    index_rows: list[dict[str, Any]],
    rejected_rows: list[dict[str, Any]],
) -> list[str]:
    """Write the documents into `release_dir` (shards must already be there); returns their names."""
    from passkit.release import attribution, card, report

    d = Path(release_dir)
    # The report's thumbnails decode release images (libjpeg, GIL released) while this thread
    # renders the other documents (Python): the two overlap on a second core.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="passkit-thumbs") as pool:
        thumbs = pool.submit(report.thumbnails, d, index_rows)
        attribution.write_markdown(d / "ATTRIBUTION.md", manifest["release"], index_rows)
        attribution.write_csv(d / "attribution.csv", index_rows)
        attribution.write_html(d / "attribution.html", manifest["release"], index_rows)
        card.write_licenses(d / "LICENSES.md", manifest, index_rows)
        card.write_card(d / "README.md", manifest, index_rows, rejected_rows)
        report.write_report(d / "report.html", d, manifest, index_rows, rejected_rows, thumbs=thumbs.result())
    return list(DOCUMENTS)


def file_entries(release_dir: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    """manifest["files"]: sha256 and size of each named file."""
    d = Path(release_dir)
    return {n: {"sha256": sha256_file(d / n), "bytes": (d / n).stat().st_size} for n in sorted(names)}

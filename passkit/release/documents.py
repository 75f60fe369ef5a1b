"""Every human-readable file of a release, derived from the manifest, index.parquet and rejected.parquet.

`write_all` writes ATTRIBUTION.md, attribution.csv and attribution.html (attribution.py; above
attribution.PAGE_SIZE samples attribution.html is an index of attribution/page-NNNNN.html pages),
LICENSES.md and the dataset card README.md (card.py), report.html (report.py) and the Croissant
metadata croissant.json (croissant.py). The builder and a
takedown call it the same way, so documents always agree with the samples they describe.
Deterministic: the same inputs give the same bytes (no clock, no random ids).

A PASS-sized release has millions of samples and tens of millions of rejected candidates, so the
documents never hold a table's rows: the Parquet files are read in record batches of the columns a
document needs, first into a summary (counters, the distinct-creator count, score histograms) that
fits in memory whatever the release's size, then row by row into the lists of credits.

Titles, creators and providers are strangers' text, already plain (the licence gate decoded entities,
removed control and bidirectional characters and capped lengths); each writer escapes it for its own
format when it writes it: Markdown and CSV through passkit.release.escape, HTML by the templates'
autoescaping, with links only to http(s) URLs.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from passkit import process
from passkit.parquetio import open_parquet
from passkit.shards import sha256_file

DOCUMENTS = ("ATTRIBUTION.md", "attribution.csv", "attribution.html", "LICENSES.md", "README.md", "report.html",
             "croissant.json")
BATCH_ROWS = 4096  # rows per record batch: a few MB of Python objects at a time, whatever the release's size
TRIM_BATCHES = 64  # batches read between two hand-backs of freed memory (process.handing_back)
# The distinct-creator count keeps 16-byte digests, not the names: 32 MB for 2 million distinct creators.
# Two names share a digest with probability n²/2¹²⁹ (1e-26 at 2 million), so the count is exact in practice.
_DIGEST = 16


def iter_rows(path: Path, columns: list[str], batch_rows: int = BATCH_ROWS) -> Iterator[dict[str, Any]]:
    """The rows of a Parquet file as dicts of `columns`, in file order, one record batch in memory at a
    time. A column the file lacks (a release of an older passkit) is left out of the dicts."""
    pf = open_parquet(path)
    have = [c for c in columns if c in pf.schema_arrow.names]
    for batch in process.handing_back(pf.iter_batches(batch_size=batch_rows, columns=have), TRIM_BATCHES):
        values = [batch.column(i).to_pylist() for i in range(batch.num_columns)]
        names = batch.schema.names
        for row in zip(*values, strict=True):
            yield dict(zip(names, row, strict=True))


class _DistinctCount:
    """Exact (see _DIGEST) count of distinct strings in bounded memory: digests, deduplicated as they come."""

    def __init__(self) -> None:
        import numpy as np

        self._seen = np.empty(0, dtype=f"V{_DIGEST}")
        self._new = bytearray()

    def add(self, values: set[str]) -> None:
        self._new += b"".join(hashlib.blake2b(v.encode("utf-8", "surrogatepass"), digest_size=_DIGEST).digest()
                              for v in values)
        if len(self._new) > max(1 << 22, self._seen.nbytes):  # amortised: each merge at least doubles
            self._merge()

    def _merge(self) -> None:
        import numpy as np

        new = np.frombuffer(bytes(self._new), dtype=f"V{_DIGEST}")
        self._seen = np.unique(np.concatenate([self._seen, new]))
        self._new = bytearray()

    def count(self) -> int:
        self._merge()
        return int(self._seen.size)


@dataclass(slots=True)
class IndexSummary:
    """What the documents say about the kept samples as a whole, gathered in one pass over index.parquet."""

    rows: int = 0
    modification: Any = None  # the first row's note (every row has the same), which heads several documents
    license_names: Counter[Any] = field(default_factory=Counter)  # licence_name (attribution files)
    license_ids: Counter[Any] = field(default_factory=Counter)  # licence id (LICENSES.md, the card's header)
    license_labels: Counter[Any] = field(default_factory=Counter)  # name, else id (the card)
    report_licenses: Counter[Any] = field(default_factory=Counter)  # name, else id, else "unknown" (report)
    providers: Counter[Any] = field(default_factory=Counter)  # provider, else "unknown"
    creators: int = 0  # distinct creators: creator URL, else name, case-folded
    formula_cells: int = 0  # attribution.csv cells that get a formula guard
    scores: dict[str, Any] = field(default_factory=dict)  # detector -> report.ScoreValues


@dataclass(slots=True)
class RejectedSummary:
    """The rejections as the documents show them, gathered in one pass over rejected.parquet."""

    rows: int = 0
    reasons: Counter[tuple[str, str]] = field(default_factory=Counter)  # (stage, reason) -> candidates
    people_scores: dict[str, Any] = field(default_factory=dict)  # detector -> report.ScoreValues


def _score_values(col: Any, names: list[str], into: dict[str, Any]) -> None:
    """Add a batch's map<detector, score> column to the per-detector score values."""
    import pyarrow.compute as pc

    from passkit.release.report import ScoreValues

    if not names or len(col) == 0 or col.null_count == len(col):
        return
    for name in names:  # a row's last entry for the name, as dict(row) keeps it
        values = pc.drop_null(pc.map_lookup(col, name, "last"))
        into.setdefault(name, ScoreValues()).add(values.to_numpy(zero_copy_only=False))


def summarize_index(path: Path, detectors: list[str], batch_rows: int = BATCH_ROWS) -> IndexSummary:
    import pyarrow.compute as pc

    from passkit.release.attribution import CSV_COLUMNS, formula_candidates
    from passkit.release.escape import is_formula

    s = IndexSummary(scores={})
    creators = _DistinctCount()
    pf = open_parquet(path)
    have = set(pf.schema_arrow.names)
    text = [c for c in CSV_COLUMNS if c in have]
    for batch in process.handing_back(
            pf.iter_batches(batch_size=batch_rows, columns=[c for c in (*CSV_COLUMNS, "scores") if c in have]),
            TRIM_BATCHES):
        col = {c: batch.column(c) for c in batch.schema.names}

        def values(name: str, col: dict[str, Any] = col, n: int = batch.num_rows) -> list[Any]:
            return col[name].to_pylist() if name in col else [None] * n

        if s.rows == 0 and batch.num_rows:
            s.modification = values("modification")[0]
        s.rows += batch.num_rows
        lic_name, lic, prov = values("license_name"), values("license"), values("provider")
        s.license_names.update(lic_name)
        s.license_ids.update(lic)
        s.license_labels.update(a or b for a, b in zip(lic_name, lic, strict=True))
        s.report_licenses.update(a or b or "unknown" for a, b in zip(lic_name, lic, strict=True))
        s.providers.update(p or "unknown" for p in prov)
        creators.add({(u or c or "").lower() for u, c in zip(values("creator_url"), values("creator"), strict=True)})
        for c in text:  # only the cells the cheap test cannot rule out go through the exact one
            maybe = pc.filter(col[c], formula_candidates(col[c]))
            s.formula_cells += sum(1 for v in maybe.to_pylist() if is_formula(v or ""))
        if "scores" in col:
            _score_values(col["scores"], detectors, s.scores)
    s.creators = creators.count()
    return s


def summarize_rejected(path: Path, detectors: list[str], batch_rows: int = BATCH_ROWS) -> RejectedSummary:
    import pyarrow as pa
    import pyarrow.compute as pc

    s = RejectedSummary(people_scores={})
    pf = open_parquet(path)
    cols = [c for c in ("stage", "reason", "scores") if c in pf.schema_arrow.names]
    for batch in pf.iter_batches(batch_size=batch_rows * 16, columns=cols):  # three narrow columns
        n = batch.num_rows
        s.rows += n
        stage = batch.column("stage") if "stage" in cols else pa.nulls(n, pa.string())
        reason = batch.column("reason") if "reason" in cols else pa.nulls(n, pa.string())
        groups = pa.table({"stage": stage, "reason": reason}).group_by(["stage", "reason"]).aggregate([([], "count_all")])
        for st, re_, c in zip(*(groups.column(i).to_pylist() for i in range(3)), strict=True):
            s.reasons[(str(st), str(re_))] += c
        if "scores" in cols:
            people = pc.fill_null(pc.equal(stage, "people"), False)
            _score_values(pc.filter(batch.column("scores"), people), detectors, s.people_scores)
    return s


def write_all(release_dir: Path, manifest: dict[str, Any], index_path: Path, rejected_path: Path) -> list[str]:
    """Write the documents into `release_dir` (shards, index.parquet and rejected.parquet must already be
    written); returns their names relative to it, pages of attribution.html included."""
    from passkit.release import attribution, card, croissant, report

    d = Path(release_dir)
    detectors = [str(x["name"]) for x in manifest.get("detectors") or []]
    # The report's thumbnails decode release images (libjpeg, GIL released) while this thread
    # reads the tables and renders the other documents (Python): the two overlap on a second core.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="passkit-thumbs") as pool:
        thumbs = pool.submit(report.thumbnails, d, Path(index_path))
        index = summarize_index(Path(index_path), detectors)
        rejected = summarize_rejected(Path(rejected_path), detectors)

        def rows() -> Iterator[dict[str, Any]]:
            return iter_rows(Path(index_path), attribution.CSV_COLUMNS)

        attribution.write_markdown(d / "ATTRIBUTION.md", manifest["release"], rows(), index)
        attribution.write_csv(d / "attribution.csv", rows())
        pages = attribution.write_html_pages(d, manifest["release"], rows(), index)
        card.write_licenses(d / "LICENSES.md", manifest, index)
        card.write_card(d / "README.md", manifest, index, rejected)
        report.write_report(d / "report.html", d, manifest, index, rejected, thumbs=thumbs.result())
    croissant.write_croissant(d, manifest, index)  # after the tables and attribution.csv, whose sha256 it names
    return [*DOCUMENTS, *pages]


def file_entries(release_dir: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    """manifest["files"]: sha256 and size of each named file."""
    d = Path(release_dir)
    return {n: {"sha256": sha256_file(d / n), "bytes": (d / n).stat().st_size} for n in sorted(names)}

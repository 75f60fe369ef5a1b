"""The unit ledgers as the release step reads them: one unit at a time, as Arrow tables of only the
columns a pass needs, with the human review decisions applied.

At PASS scale the ledgers hold tens of millions of rows; the release never holds them all. Each
pass walks the units in order, so a row's position (unit order, then the unit's own order) is its
place in source order, the order every "first one stays" rule uses.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from passkit.ledger import DETECTORS_META, read_ledger, unit_paths
from passkit.records import Status

# Columns apply_reviews reads or rewrites: a pass that applies reviews reads them too.
REVIEW_COLUMNS = ("key", "status", "stage", "reason", "detail")
REVIEW_STATS = ("queued", "verified_no_person", "confirmed_person", "pending",
                "spot_sampled", "spot_checked", "spot_found_person")
NO_DETECTORS = {"detectors": [], "skipped": []}
TRIM_UNITS = 256  # units a pass reads between two hand-backs of freed memory (process.handing_back)


def apply_reviews(rows: list[dict[str, Any]], work_dir: Path) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Apply the human decisions of `work_dir/review.sqlite` (passkit.review) to ledger rows.

    A row in the people filter's review band ("review" status) is kept after a human "no person",
    rejected as people/human_review after "person", and rejected as people/pending_review while
    undecided. A kept row drawn for a spot check and marked "person" is rejected as
    people/human_review. Returns the rows and the counts the manifest records under "review".
    """
    reviews = Reviews.of(work_dir)
    return reviews.rows(rows), reviews.counts()


@dataclass(slots=True)
class Reviews:
    """The review store's queue and decisions (small: only queued and spot-drawn keys)."""

    items: dict[str, str]  # key -> "review" or "spot"
    decided: dict[str, Any]  # key -> passkit.review.store.Decision
    stats: Counter[str] = field(default_factory=Counter)
    spot: pa.Array = field(init=False)  # the spot-drawn keys, for a columnar membership test

    def __post_init__(self) -> None:
        self.spot = pa.array([k for k, v in self.items.items() if v == "spot"], pa.string())

    @classmethod
    def of(cls, work_dir: Path) -> Reviews:
        from passkit.review.store import decisions_for_release

        items, decided = decisions_for_release(work_dir)
        return cls(items, decided)

    def counts(self) -> dict[str, int]:
        out = {k: self.stats[k] for k in REVIEW_STATS}
        out["spot_sampled"] = sum(1 for k in self.items.values() if k == "spot")
        return out

    def rows(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The rows with the decisions applied, counting what was applied into `stats`."""
        stats = self.stats
        out: list[dict[str, Any]] = []
        for r in rows:
            d = self.decided.get(r["key"])
            if r["status"] == Status.REVIEW:
                stats["queued"] += 1
                if d is not None and d.label == "no_person":
                    stats["verified_no_person"] += 1
                    r = {**r, "status": str(Status.KEPT), "stage": None, "reason": None, "detail": None}
                elif d is not None:
                    stats["confirmed_person"] += 1
                    r = {**r, "status": str(Status.REJECTED), "reason": "human_review",
                         "detail": f"human review: person ({r.get('detail') or ''})"}
                else:
                    stats["pending"] += 1
                    r = {**r, "status": str(Status.REJECTED), "reason": "pending_review",
                         "detail": f"awaiting human review (passkit review WORKDIR): {r.get('detail') or ''}"}
            elif r["status"] == Status.KEPT and d is not None and self.items.get(r["key"]) == "spot":
                stats["spot_checked"] += 1
                if d.label == "person":
                    stats["spot_found_person"] += 1
                    r = {**r, "status": str(Status.REJECTED), "stage": "people", "reason": "human_review",
                         "detail": "spot check: a human found a person"}
            out.append(r)
        return out

    def table(self, table: pa.Table) -> pa.Table:
        """`rows` for an Arrow table; a unit with no review row and no spot-drawn key (nearly all of
        them) is returned as it is, without a trip through Python objects."""
        status = table.column("status")
        touched = pc.any(pc.equal(status, str(Status.REVIEW))).as_py()
        if not touched and len(self.spot):
            touched = pc.any(pc.is_in(table.column("key"), value_set=self.spot)).as_py()
        if not touched:
            return table
        rows = self.rows(table.to_pylist())
        return pa.Table.from_pylist(rows, schema=table.schema)


@dataclass(slots=True)
class UnitTable:
    index: int  # the unit's number
    start: int  # source-order position of its first row
    table: pa.Table
    tar: Path  # the unit's staging tar


class Ledgers:
    """The finished units of one build, read unit by unit."""

    def __init__(self, units_dir: Path, indices: Sequence[int], reviews: Reviews):
        self.units_dir = Path(units_dir)
        self.indices = list(indices)
        self.reviews = reviews
        self.candidates = 0  # rows seen by the first full pass
        self.on_unit: Callable[[int], None] | None = None  # called with the units read so far
        self._detectors: dict[str, Any] | None = None

    @property
    def detectors(self) -> dict[str, Any]:
        """The detector description every unit agrees on, checked as the units are read (a full
        pass must have run)."""
        return self._detectors or dict(NO_DETECTORS)

    def _agree(self, ledger: Path, meta: dict[bytes, bytes]) -> None:
        d = json.loads(meta.get(DETECTORS_META, json.dumps(NO_DETECTORS).encode()))
        if self._detectors is None:
            self._detectors = d
        elif d != self._detectors:
            raise RuntimeError(
                f"{ledger}: this unit was filtered with other detectors than the others "
                f"({d} vs {self._detectors}); remove the work folder's units/ or rerun with the same models"
            )

    def units(self, columns: Sequence[str], reviewed: bool = True) -> Iterator[UnitTable]:
        """Each unit's rows (those `columns`, plus what reviews need), in source order."""
        cols = list(dict.fromkeys([*columns, *(REVIEW_COLUMNS if reviewed else ())]))
        start = 0
        for done, idx in enumerate(self.indices):
            tar, ledger = unit_paths(self.units_dir, idx)
            table = read_ledger(ledger, cols)
            self._agree(ledger, table.schema.metadata or {})
            table = table.replace_schema_metadata(None)
            if reviewed:
                table = self.reviews.table(table)
            yield UnitTable(idx, start, table, tar)
            start += table.num_rows
            if self.on_unit:
                self.on_unit(done + 1)

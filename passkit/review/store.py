"""The review store: one SQLite file in the work folder (`review.sqlite`) holding human decisions.

Two kinds of item: "review" (the people filter scored the image inside a review band; it stays out of
the release until a human says "no person") and "spot" (a random kept image drawn by
`passkit review --sample N` for a spot check). A decision is "person" or "no_person"; the latest one
for a key wins. Writes are committed at once with synchronous=FULL, so a decision survives a crash
or a closed browser. The release build reads the store (`decisions_for_release`); the decisions are
inputs of the release like the ledgers, so the same decisions give the same bytes.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

DB_NAME = "review.sqlite"
LABELS = ("person", "no_person")
KINDS = ("review", "spot")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('review', 'spot')),
    added_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS decisions (
    key TEXT PRIMARY KEY,
    label TEXT NOT NULL CHECK (label IN ('person', 'no_person')),
    reviewer TEXT NOT NULL DEFAULT '',
    decided_at TEXT NOT NULL
);
"""


class ReviewStoreError(RuntimeError):
    """The review store cannot be used (not a passkit review database, bad label)."""


@dataclass(frozen=True, slots=True)
class Decision:
    key: str
    kind: str  # review | spot
    label: str  # person | no_person
    reviewer: str


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class ReviewStore:
    """Decisions of a work folder. Use one per thread (sqlite3 connections are not shared)."""

    def __init__(self, path: Path, shared: bool = False):
        """`shared`: the connection may be used from several threads (callers serialise access)."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=not shared)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as e:
            raise ReviewStoreError(f"{self.path} is not a usable review database ({e}); move it away") from None

    @classmethod
    def of(cls, work_dir: Path) -> ReviewStore:
        return cls(Path(work_dir) / DB_NAME)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> ReviewStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, keys: list[str], kind: str) -> int:
        """Queue keys (an item keeps the kind it was first queued with); returns how many are new."""
        if kind not in KINDS:
            raise ReviewStoreError(f"kind must be one of {KINDS}, got {kind!r}")
        now = _now()
        before = self.db.total_changes
        with self.db:
            self.db.executemany("INSERT OR IGNORE INTO items(key, kind, added_at) VALUES (?, ?, ?)",
                                [(k, kind, now) for k in keys])
        return self.db.total_changes - before

    def decide(self, key: str, label: str, reviewer: str = "") -> None:
        if label not in LABELS:
            raise ReviewStoreError(f"label must be one of {LABELS}, got {label!r}")
        if self.db.execute("SELECT 1 FROM items WHERE key = ?", (key,)).fetchone() is None:
            raise ReviewStoreError(f"{key!r} is not in the review queue")
        with self.db:
            self.db.execute(
                "INSERT INTO decisions(key, label, reviewer, decided_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET label = excluded.label, reviewer = excluded.reviewer, "
                "decided_at = excluded.decided_at",
                (key, label, reviewer, _now()),
            )

    def undo(self, key: str) -> None:
        with self.db:
            self.db.execute("DELETE FROM decisions WHERE key = ?", (key,))

    def items(self) -> dict[str, str]:
        """key -> kind of every queued item."""
        return dict(self.db.execute("SELECT key, kind FROM items ORDER BY key").fetchall())

    def decisions(self) -> dict[str, Decision]:
        rows = self.db.execute(
            "SELECT d.key, i.kind, d.label, d.reviewer FROM decisions d JOIN items i ON i.key = d.key ORDER BY d.key"
        ).fetchall()
        return {k: Decision(k, kind, label, reviewer) for k, kind, label, reviewer in rows}


def decisions_for_release(work_dir: Path) -> tuple[dict[str, str], dict[str, Decision]]:
    """(queued items, decisions) of a work folder; empty when no one has opened a review there."""
    path = Path(work_dir) / DB_NAME
    if not path.is_file():
        return {}, {}
    with ReviewStore(path) as store:
        return store.items(), store.decisions()

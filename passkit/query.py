"""SQL over a release's Parquet tables with DuckDB, without loading the release into memory.

    passkit query releases/demo-1.0.0 "SELECT license, count(*) AS n FROM samples GROUP BY 1 ORDER BY 2 DESC"

Views: `samples` (index.parquet, one row per kept sample; also reachable as "index"), `rejected`
(rejected.parquet), `shards` and `removals` (from manifest.json). The database is in memory; the
Parquet files are read where they lie; DuckDB uses at most PASSKIT_QUERY_MEMORY (default 1GB) and
spills the rest to a temporary folder.
"""

from __future__ import annotations

import itertools
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class QueryError(ValueError):
    """The SQL failed; the message carries DuckDB's explanation and the views that exist."""


@dataclass(slots=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool = False  # more rows than max_rows matched; `rows` holds the first max_rows

    def to_dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, r, strict=True)) for r in self.rows]


FETCH_ROWS = 10_000
_SPILL_IDS = itertools.count()
VIEWS = ("samples", "index", "rejected", "shards", "removals")


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


INSERT_ROWS = 500  # rows per INSERT statement


def _insert(con: Any, table: str, rows: list[tuple[Any, ...]]) -> None:
    """Many rows per statement: a PASS manifest lists thousands of shards, and one INSERT per row
    took about a second on its own."""
    for lo in range(0, len(rows), INSERT_ROWS):
        chunk = rows[lo : lo + INSERT_ROWS]
        marks = "(" + ", ".join("?" * len(chunk[0])) + ")"
        con.execute(f"INSERT INTO {table} VALUES " + ", ".join([marks] * len(chunk)), [v for r in chunk for v in r])


def connect(release_dir: Path) -> Any:
    """An in-memory DuckDB connection with the release's views defined."""
    import duckdb

    root = Path(release_dir)
    index = root / "index.parquet"
    if not index.is_file():
        raise FileNotFoundError(f"{root}: no index.parquet — is this a passkit release folder?")
    con = duckdb.connect(":memory:")
    # Bounded memory: past the limit DuckDB spills sorts, joins and aggregates to a private temporary
    # folder (it creates it on demand and deletes it on close). The progress bar would print into
    # the CLI's output.
    spill = Path(tempfile.gettempdir()) / f"passkit-duckdb-{os.getpid()}-{next(_SPILL_IDS)}"
    con.execute(f"SET memory_limit = {_sql_str(os.environ.get('PASSKIT_QUERY_MEMORY', '1GB'))}")
    con.execute(f"SET temp_directory = {_sql_str(str(spill))}")
    con.execute("SET enable_progress_bar = false")
    con.execute(f"CREATE VIEW samples AS SELECT * FROM read_parquet({_sql_str(str(index))})")
    con.execute('CREATE VIEW "index" AS SELECT * FROM samples')
    rej = root / "rejected.parquet"
    if rej.is_file():
        con.execute(f"CREATE VIEW rejected AS SELECT * FROM read_parquet({_sql_str(str(rej))})")
    m_path = root / "manifest.json"
    m = json.loads(m_path.read_text(encoding="utf-8")) if m_path.is_file() else {}
    con.execute("CREATE TABLE shards (path VARCHAR, sha256 VARCHAR, bytes BIGINT, samples BIGINT)")
    _insert(con, "shards", [(s.get("path"), s.get("sha256"), s.get("bytes"), s.get("samples"))
                            for s in m.get("shards") or []])
    con.execute("CREATE TABLE removals (key VARCHAR, reason VARCHAR)")
    _insert(con, "removals", [(r.get("key"), r.get("reason")) for r in m.get("removals") or []])
    return con


def query(release_dir: Path, sql: str, max_rows: int | None = None) -> QueryResult:
    """Run `sql`; rows are fetched a batch at a time, and at most `max_rows` of them (None: all).

    DuckDB streams the Parquet files and spills what does not fit, so the result is what costs
    memory here: `SELECT * FROM rejected` at PASS scale is tens of millions of Python tuples.
    A caller showing rows to a person passes `max_rows` and reads `truncated`.
    """
    import duckdb

    if max_rows is not None and max_rows < 0:
        raise ValueError(f"max_rows={max_rows}: use a count of rows, or None for all")
    con = connect(release_dir)
    try:
        cur = con.execute(sql)
        if cur.description is None:
            return QueryResult([], [])
        cols = [d[0] for d in cur.description]
        rows: list[tuple[Any, ...]] = []
        truncated = False
        while True:
            want = FETCH_ROWS if max_rows is None else min(FETCH_ROWS, max_rows - len(rows) + 1)
            part = cur.fetchmany(want)
            if not part:
                break
            rows.extend(tuple(r) for r in part)
            if max_rows is not None and len(rows) > max_rows:
                del rows[max_rows:]
                truncated = True
                break
        return QueryResult(cols, rows, truncated)
    except duckdb.Error as e:
        raise QueryError(f"{e}\nviews: samples (index.parquet; also \"index\"), rejected, shards, removals") from None
    finally:
        con.close()

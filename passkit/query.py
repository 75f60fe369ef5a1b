"""SQL over a release's Parquet tables with DuckDB, without loading the release into memory.

    passkit query releases/demo-1.0.0 "SELECT license, count(*) AS n FROM samples GROUP BY 1 ORDER BY 2 DESC"

Views: `samples` (index.parquet, one row per kept sample; also reachable as "index"), `rejected`
(rejected.parquet), `shards` and `removals` (from manifest.json). The database is in memory; the
Parquet files are read where they lie.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class QueryError(ValueError):
    """The SQL failed; the message carries DuckDB's explanation and the views that exist."""


@dataclass(slots=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]

    def to_dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, r, strict=True)) for r in self.rows]


VIEWS = ("samples", "index", "rejected", "shards", "removals")


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def connect(release_dir: Path) -> Any:
    """An in-memory DuckDB connection with the release's views defined."""
    import duckdb

    root = Path(release_dir)
    index = root / "index.parquet"
    if not index.is_file():
        raise FileNotFoundError(f"{root}: no index.parquet — is this a passkit release folder?")
    con = duckdb.connect(":memory:")
    con.execute(f"CREATE VIEW samples AS SELECT * FROM read_parquet({_sql_str(str(index))})")
    con.execute('CREATE VIEW "index" AS SELECT * FROM samples')
    rej = root / "rejected.parquet"
    if rej.is_file():
        con.execute(f"CREATE VIEW rejected AS SELECT * FROM read_parquet({_sql_str(str(rej))})")
    m_path = root / "manifest.json"
    m = json.loads(m_path.read_text(encoding="utf-8")) if m_path.is_file() else {}
    con.execute("CREATE TABLE shards (path VARCHAR, sha256 VARCHAR, bytes BIGINT, samples BIGINT)")
    for s in m.get("shards") or []:
        con.execute("INSERT INTO shards VALUES (?, ?, ?, ?)", [s.get("path"), s.get("sha256"), s.get("bytes"),
                                                              s.get("samples")])
    con.execute("CREATE TABLE removals (key VARCHAR, reason VARCHAR)")
    for r in m.get("removals") or []:
        con.execute("INSERT INTO removals VALUES (?, ?)", [r.get("key"), r.get("reason")])
    return con


def query(release_dir: Path, sql: str) -> QueryResult:
    import duckdb

    con = connect(release_dir)
    try:
        cur = con.execute(sql)
        if cur.description is None:
            return QueryResult([], [])
        cols = [d[0] for d in cur.description]
        return QueryResult(cols, [tuple(r) for r in cur.fetchall()])
    except duckdb.Error as e:
        raise QueryError(f"{e}\nviews: samples (index.parquet; also \"index\"), rejected, shards, removals") from None
    finally:
        con.close()

"""passkit query: DuckDB SQL over a release's index."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from passkit.query import QueryError, query
from tests.helpers.staging import Item, basic_items, staged_release, texture


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("q")
    return staged_release(tmp, basic_items(7) + [Item("face", texture(70), people=0.99)])


def test_counts_by_license_match_the_index(release: Path) -> None:
    res = query(release, "SELECT license, count(*) AS n FROM samples GROUP BY 1 ORDER BY 1")
    expected = Counter(pq.read_table(release / "index.parquet").column("license").to_pylist())
    assert res.columns == ["license", "n"]
    assert dict(res.rows) == dict(expected)
    assert query(release, 'SELECT count(*) FROM "index"').rows == [(7,)]


def test_rejected_shards_and_removals_views(release: Path) -> None:
    assert query(release, "SELECT reason, count(*) FROM rejected GROUP BY 1").rows == [("people", 1)]
    assert query(release, "SELECT sum(samples) FROM shards").rows == [(7,)]
    assert query(release, "SELECT count(*) FROM removals").rows == [(0,)]
    sc = query(release, "SELECT key, scores['mtcnn'] AS s FROM samples ORDER BY key LIMIT 1").to_dicts()
    assert sc[0]["s"] == 0.0


def test_bad_sql_and_missing_release(release: Path, tmp_path: Path) -> None:
    with pytest.raises(QueryError, match="views: samples"):
        query(release, "SELECT nope FROM samples")
    with pytest.raises(FileNotFoundError, match="no index.parquet"):
        query(tmp_path, "SELECT 1")


def test_cli_json(release: Path) -> None:
    p = subprocess.run([sys.executable, "-m", "passkit.cli", "query", str(release),
                        "SELECT license, count(*) AS n FROM samples GROUP BY 1 ORDER BY 2 DESC, 1", "--json"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    rows = json.loads(p.stdout)
    assert sum(r["n"] for r in rows) == 7 and set(rows[0]) == {"license", "n"}
    bad = subprocess.run([sys.executable, "-m", "passkit.cli", "query", str(release), "SELEC"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "syntax error" in bad.stderr.lower()

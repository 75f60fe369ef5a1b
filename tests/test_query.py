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
from tests.helpers.releases import load_manifest, make_release, save_manifest
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


def test_max_rows_stops_fetching_and_says_so(release: Path) -> None:
    res = query(release, "SELECT key FROM samples ORDER BY key", max_rows=3)
    assert len(res.rows) == 3 and res.truncated
    full = query(release, "SELECT key FROM samples ORDER BY key")
    assert not full.truncated and full.rows[:3] == res.rows and len(full.rows) == 7
    assert not query(release, "SELECT key FROM samples", max_rows=7).truncated
    assert query(release, "SELECT key FROM samples", max_rows=0).rows == []
    with pytest.raises(ValueError, match="max_rows"):
        query(release, "SELECT 1", max_rows=-1)


def test_many_shards_and_removals_reach_their_tables(tmp_path: Path) -> None:
    root = make_release(tmp_path, n=3, shard_max=3)
    m = load_manifest(root)
    m["shards"] = [{"path": f"shards/x-{i:06d}.tar", "sha256": f"{i:064x}", "bytes": i, "samples": i % 7}
                   for i in range(1203)]
    m["removals"] = [{"key": f"gone{i}", "reason": "asked"} for i in range(501)] + [{"key": "odd"}]
    save_manifest(root, m)
    assert query(root, "SELECT count(*), sum(samples), max(path), sum(bytes) FROM shards").rows == [
        (1203, sum(i % 7 for i in range(1203)), "shards/x-001202.tar", sum(range(1203)))]
    assert query(root, "SELECT count(*), count(reason) FROM removals").rows == [(502, 501)]


def test_cli_table_stops_at_max_rows_and_says_so(release: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from passkit import cli

    assert cli.main(["query", str(release), "SELECT key FROM samples ORDER BY key", "--max-rows", "2"]) == 0
    out = capsys.readouterr().out
    assert "2 row(s) (more rows matched" in out
    assert cli.main(["query", str(release), "SELECT key FROM samples", "--max-rows", "0"]) == 0
    assert "7 row(s)\n" in capsys.readouterr().out
    assert cli.main(["query", str(release), "SELECT 1", "--max-rows", "-1"]) == 2

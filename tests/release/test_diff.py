"""passkit diff: added, removed and changed samples between two releases."""

from __future__ import annotations

import json
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from passkit.records import Candidate
from passkit.release import manifest
from passkit.release.diff import COMPARED, ReleaseDiff, diff
from tests.helpers.releases import load_manifest, make_release, save_manifest
from tests.helpers.staging import Item, basic_items, staged_release, texture


def key(source_id: str) -> str:
    return Candidate("test", source_id, "").key


def test_added_removed_changed(tmp_path: Path) -> None:
    items = basic_items(6)
    a = staged_release(tmp_path, items, name="a")
    newer = [it for it in items if it.source_id != "s02"]  # s02 gone
    newer[0] = Item("s00", items[0].image, items[0].creator, items[0].license, title="A better title")
    newer[1] = Item("s01", texture(999), items[1].creator, items[1].license)  # new bytes
    newer.append(Item("s99", texture(77)))
    b = staged_release(tmp_path, newer, name="b")

    d = diff(a, b)
    assert d.added == [key("s99")]
    assert [r["key"] for r in d.removed] == [key("s02")]
    assert "no reason recorded" in d.removed[0]["reason"]
    changed = {c["key"]: c["fields"] for c in d.changed}
    assert set(changed) == {key("s00"), key("s01")}
    assert set(changed[key("s00")]) == {"title", "attribution"}
    assert changed[key("s00")]["title"] == ["Picture s00", "A better title"]
    assert set(changed[key("s01")]) == {"sha256"}
    assert d.unchanged == 3 and not d.identical


def test_identical_and_reason_from_rejections(tmp_path: Path) -> None:
    items = basic_items(5)
    a = staged_release(tmp_path, items, name="a")
    assert diff(a, a).identical and diff(a, a).unchanged == 5
    b = staged_release(tmp_path, items, name="b", max_per_creator=1)
    d = diff(a, b)
    assert d.removed and all(r["reason"].startswith("creator_cap: creator_cap") for r in d.removed)


# ----------------------------------------------------------------------------- columnar = row dicts


def reference_diff(a: Path, b: Path) -> dict[str, Any]:
    """The row-dict implementation the columnar one replaced: the meaning of every field."""
    def rows(release: Path) -> dict[str, dict[str, Any]]:
        path = release / "index.parquet"
        names = set(pq.read_schema(path).names)
        cols = ["key", *[c for c in COMPARED if c in names]]
        return {r["key"]: r for r in pq.read_table(path, columns=cols).to_pylist()}

    mb = manifest.load(b)
    ra, rb = rows(a), rows(b)
    why: dict[str, str] = {}
    rej = b / "rejected.parquet"
    if rej.is_file():
        names = set(pq.read_schema(rej).names)
        for r in pq.read_table(rej, columns=[c for c in ("key", "stage", "reason", "detail") if c in names]).to_pylist():
            if r.get("key"):
                detail = f" ({r['detail']})" if r.get("detail") else ""
                why[r["key"]] = f"{r.get('stage')}: {r.get('reason')}{detail}"
    for r in mb.get("removals") or []:
        why[r["key"]] = f"takedown: {r.get('reason', '')}"
    changed, unchanged = [], 0
    for k in sorted(set(ra) & set(rb)):
        fields = {c: [ra[k].get(c), rb[k].get(c)] for c in COMPARED
                  if c in ra[k] and c in rb[k] and ra[k].get(c) != rb[k].get(c)}
        if fields:
            changed.append({"key": k, "fields": fields})
        else:
            unchanged += 1
    return {"added": sorted(set(rb) - set(ra)),
            "removed": [{"key": k, "reason": why.get(k, "not in the newer release (no reason recorded)")}
                        for k in sorted(set(ra) - set(rb))],
            "changed": changed, "unchanged": unchanged}


def edit_index(root: Path, edit: Callable[[list[dict[str, Any]]], list[dict[str, Any]]],
               schema: pa.Schema | None = None) -> None:
    path = root / "index.parquet"
    table = pq.read_table(path)
    rows = edit(table.to_pylist())
    pq.write_table(pa.Table.from_pylist(rows, schema=schema or table.schema), path, row_group_size=7)


def check_same(a: Path, b: Path) -> ReleaseDiff:
    d = diff(a, b)
    got = d.to_dict()
    assert {k: got[k] for k in ("added", "removed", "changed", "unchanged")} == reference_diff(a, b)
    assert json.loads(json.dumps(got)) == got  # what `passkit diff --json` prints
    return d


@pytest.fixture()
def pair(tmp_path: Path) -> tuple[Path, Path]:
    a = make_release(tmp_path / "a", n=40, shard_max=9)
    b = make_release(tmp_path / "b", n=40, shard_max=9, n_rejected=6)
    return a, b


def test_columnar_diff_matches_row_dicts_on_edits(pair: tuple[Path, Path]) -> None:
    a, b = pair
    check_same(a, b)  # identical indexes
    edit_index(a, lambda rows: rows)  # many small row groups: batch edges everywhere

    def newer(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        rows = [r for i, r in enumerate(rows) if i not in (3, 17, 30)]  # removed
        rows[0]["title"] = "A better title"
        rows[1]["creator_url"] = None if rows[1]["creator_url"] else "https://example.org/x"  # None <-> value
        rows[2]["creator_url"] = ""
        rows[5]["sha256"], rows[5]["license_url"] = "f" * 64, "https://example.org/l"
        rows.append({**rows[6], "key": "zz_new", "title": "new"})
        rows.insert(0, {**rows[7], "key": "aa_new"})
        return rows

    edit_index(b, newer)
    rej = pq.read_table(b / "rejected.parquet").to_pylist()
    gone = [r["key"] for r in pq.read_table(a / "index.parquet", columns=["key"]).to_pylist()]
    rej[0]["key"], rej[0]["detail"] = gone[3], ""
    rej[1]["key"] = gone[17]
    rej[2]["key"], rej[2]["stage"] = gone[17], "dedup"  # the last row of a key wins
    rej[3]["key"] = ""
    pq.write_table(pa.Table.from_pylist(rej, schema=pq.read_schema(b / "rejected.parquet")), b / "rejected.parquet")
    m = load_manifest(b)
    m["removals"] = [{"key": gone[30], "reason": "asked"}, {"key": gone[17], "reason": "both"}]
    save_manifest(b, m)
    d = check_same(a, b)
    assert d.added == ["aa_new", "zz_new"] and len(d.removed) == 3 and len(d.changed) == 4
    assert {r["reason"] for r in d.removed} == {"people: people", "takedown: asked", "takedown: both"}
    d = check_same(b, a)  # the other way: no rejected rows name the removed keys
    assert len(d.removed) == 2


def test_columnar_diff_unsorted_duplicates_and_missing_columns(pair: tuple[Path, Path]) -> None:
    a, b = pair
    # not the format, but what a dict made of it: unsorted rows, a repeated key (its last row counts)
    edit_index(a, lambda rows: rows[::-1] + [{**rows[4], "title": "later copy"}])
    edit_index(b, lambda rows: rows[10:] + rows[:10])
    d = check_same(a, b)
    assert len(d.changed) == 1 and d.changed[0]["fields"]["title"][0] == "later copy"
    # a column one release lacks is not compared
    schema = pq.read_schema(b / "index.parquet").remove(pq.read_schema(b / "index.parquet").get_field_index("title"))
    edit_index(b, lambda rows: [{k: v for k, v in r.items() if k != "title"} for r in rows], schema)
    check_same(a, b)
    (b / "rejected.parquet").unlink()
    check_same(a, b)


def test_diff_of_200k_rows_is_columnar(tmp_path: Path) -> None:
    """200,000 samples: as row dicts this held ~400 MB of Python objects and took tens of seconds."""
    n = 200_000
    a = make_release(tmp_path / "a", n=2, shard_max=2)
    b = make_release(tmp_path / "b", n=2, shard_max=2)
    ids = np.arange(n)
    keys = pc.binary_join_element_wise("k", pc.utf8_lpad(pc.cast(pa.array(ids), pa.string()), 7, "0"), "")
    cols = {"key": keys, "sha256": pc.cast(pa.array(ids * 7), pa.string()),
            **{c: pc.binary_join_element_wise(c, pc.cast(pa.array(ids % 1000), pa.string()), "-")
               for c in COMPARED if c != "sha256"}}
    table = pa.table(cols)
    pq.write_table(table, a / "index.parquet")
    title = table.column("title").to_numpy(zero_copy_only=False).copy()
    title[[5, 50_000, 150_001]] = "changed"
    pq.write_table(table.set_column(table.schema.get_field_index("title"), "title", pa.array(title))
                   .slice(1), b / "index.parquet")
    tracemalloc.start()
    t0 = time.perf_counter()
    d = diff(a, b)
    seconds = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(d.removed) == 1 and [c["key"] for c in d.changed] == ["k0000005", "k0050000", "k0150001"]
    assert d.unchanged == n - 4 and d.added == []
    assert peak < 40 << 20, f"{peak / 2**20:.0f} MiB of Python/numpy allocations"
    assert seconds < 15

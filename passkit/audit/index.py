"""index.parquet: read once before the shards (their samples are checked against it), rows left over after."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from passkit.audit.context import INDEX, AuditContext

# index.parquet columns compared with the json (present ones only; key, shard, sha256 are required).
INDEX_COMPARED = ("title", "creator", "landing_url", "license", "license_url", "attribution")
INDEX_REQUIRED = ("key", "shard", "sha256")


def read_index(path: Path, add: Callable[..., None]) -> dict[str, dict[str, Any]] | None:
    """index.parquet's rows by key (the first of duplicates), or None when it cannot be used."""
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
        missing = [c for c in INDEX_REQUIRED if c not in names]
        if missing:
            add("index_unreadable", f"{INDEX} lacks required column(s) {missing}")
            return None
        cols = [*INDEX_REQUIRED, *(c for c in INDEX_COMPARED if c in names)]
        table = pq.read_table(path, columns=cols)
    except Exception as e:  # pyarrow raises several types for corrupt files
        add("index_unreadable", f"{INDEX} cannot be read: {e}")
        return None
    rows: dict[str, dict[str, Any]] = {}
    for batch in table.to_batches():
        for row in batch.to_pylist():
            k = row["key"]
            if k in rows:
                add("index_duplicate", f"{INDEX} has key {k!r} more than once", key=k)
                continue
            rows[k] = row
    return rows


def check_index(ctx: AuditContext) -> None:
    """Load index.parquet into `ctx.index` (and `ctx.index_by_shard`) for the per-sample checks."""
    index_path = ctx.root / INDEX
    if index_path.is_file():
        ctx.index = read_index(index_path, ctx.add)
        for k, row in (ctx.index or {}).items():
            ctx.index_by_shard.setdefault(row.get("shard"), set()).add(k)
    else:
        ctx.add("index_missing", f"the release has no {INDEX}")


def check_index_rows(ctx: AuditContext) -> None:
    """Index rows no scanned shard holds: removed samples still listed, or rows with no sample."""
    if ctx.index is None:
        return
    for key, row in ctx.index.items():
        if key in ctx.seen:
            continue
        shard = row.get("shard")
        if shard in ctx.dead_shards:
            continue  # the shard finding covers its samples
        if key in ctx.removed:
            ctx.add(
                "removed_present",
                f"removed ({ctx.removed[key] or 'no reason given'}) but still in {INDEX}",
                shard,
                key,
            )
        else:
            ctx.add("index_extra_key", f"{INDEX} row (shard {shard}) has no sample in the shards", shard, key)

"""The kept samples in key order, whatever their number: an external merge sort.

The first pass wrote every staged candidate's key and staging offsets to a spill file in source
order. Here the kept ones (a flag per staged row) are read back a batch at a time, sorted in runs
of RUN_ROWS rows (Arrow sorts a run in memory), each run written to a Parquet file beside the release, and the runs merged
(heapq over one batch of each): the memory is one run while sorting and one batch per run while
merging, at any release size. Keys are unique (the release rules drop repeated ones), and Python
orders strings by code point, as Arrow orders UTF-8 bytes: both steps agree on the order.
"""

from __future__ import annotations

import heapq
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from passkit.parquetio import open_parquet

RUN_ROWS = 262_144  # rows sorted in memory at once: about 20 MB of keys and offsets
BATCH_ROWS = 4096  # rows per batch read, merged and given out


def sorted_by_key(staged: Path, keep: np.ndarray, columns: list[str], work: Path) -> Iterator[pa.RecordBatch]:
    """`columns` (with "key") of the rows of `staged` where `keep` (a flag per row) is set, in key
    order, in batches; runs go to `work`, removed at the end."""
    runs: list[Path] = []
    pending: list[pa.RecordBatch] = []
    rows = 0
    at = 0
    try:
        for batch in open_parquet(staged).iter_batches(batch_size=BATCH_ROWS, columns=columns):
            hit = keep[at : at + batch.num_rows]
            at += batch.num_rows
            if hit.any():
                pending.append(batch.filter(pa.array(hit)))
                rows += int(hit.sum())
            if rows >= RUN_ROWS:
                runs.append(_write_run(_sorted(pending), work, len(runs)))
                pending, rows = [], 0
        if not runs:  # one run: sorted in memory, no files
            yield from _sorted(pending, columns).to_batches(BATCH_ROWS)
            return
        if pending:
            runs.append(_write_run(_sorted(pending), work, len(runs)))
        yield from _merge(runs, columns)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _sorted(batches: list[pa.RecordBatch], columns: list[str] | None = None) -> pa.Table:
    if not batches:
        return pa.table({c: [] for c in columns or []})
    table = pa.Table.from_batches(batches)
    return table.take(pc.sort_indices(table.column("key")))


def _write_run(table: pa.Table, work: Path, n: int) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"run-{n:05d}.parquet"
    pq.write_table(table, path, row_group_size=BATCH_ROWS)
    return path


def _rows(path: Path) -> Iterator[tuple]:
    for batch in open_parquet(path).iter_batches(batch_size=BATCH_ROWS):
        yield from zip(*(col.to_pylist() for col in batch.columns), strict=True)


def _merge(runs: list[Path], columns: list[str]) -> Iterator[pa.RecordBatch]:
    key = columns.index("key")
    schema = pq.read_schema(runs[0])
    out: list[tuple] = []
    for row in heapq.merge(*(_rows(p) for p in runs), key=lambda r: r[key]):
        out.append(row)
        if len(out) == BATCH_ROWS:
            yield _batch(out, schema)
            out = []
    if out:
        yield _batch(out, schema)


def _batch(rows: list[tuple], schema: pa.Schema) -> pa.RecordBatch:
    columns = zip(*rows, strict=True)
    return pa.RecordBatch.from_arrays([pa.array(c, type=f.type) for c, f in zip(columns, schema, strict=True)],
                                      schema=schema)

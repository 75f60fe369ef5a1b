"""The release's two tables, index.parquet and rejected.parquet: their columns, and a writer that
streams rows into fixed-size row groups.

Row groups hold ROW_GROUP rows whatever sizes the rows arrive in, so a table's bytes depend only
on its rows, not on how many workers produced them or in which batches; a table of fewer rows is
one row group, byte-identical to `pq.write_table` of the same rows.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

import pyarrow as pa
import pyarrow.parquet as pq

from passkit.ledger import LEDGER_SCHEMA

INDEX_FILE = "index.parquet"  # the kept samples, one row each
REJECTED_FILE = "rejected.parquet"  # every candidate that did not make it, with stage and reason
ROW_GROUP = 16_384  # rows per row group: ~15 MB of index rows in memory while writing, ~5 MB on disk

INDEX_COLUMNS = [
    "key", "shard", "sha256", "phash", "width", "height", "bytes", "title", "creator", "creator_url",
    "landing_url", "source_url", "provider", "license", "license_spdx", "license_name", "license_url", "attribution",
    "modification", "source", "source_id", "query", "scores",
]
REJECTED_COLUMNS = [
    "key", "source", "source_id", "query", "url", "stage", "reason", "detail", "transient", "scores",
    "title", "creator", "landing_url", "license_raw", "license", "sha256",
]


def _index_schema() -> pa.Schema:
    ledger = {f.name: f.type for f in LEDGER_SCHEMA}
    # license_spdx is the SPDX id of `license` (licenses.License.spdx), made when the index is written
    types = {**ledger, "shard": pa.string(), "source_url": pa.string(), "modification": pa.string(),
             "license_spdx": pa.string()}
    return pa.schema([(c, types[c]) for c in INDEX_COLUMNS])


INDEX_SCHEMA = _index_schema()
REJECTED_SCHEMA = pa.schema([(c, LEDGER_SCHEMA.field(c).type) for c in REJECTED_COLUMNS])


class RowGroupWriter:
    """Append tables (or record batches) of `schema`; row groups of exactly `rows_per_group` rows.

    The file is opened on the first write or at close, so an unused writer costs nothing and a
    table with no rows is still written (with its schema)."""

    def __init__(self, path: Path, schema: pa.Schema, rows_per_group: int | None = None):
        self.path = Path(path)
        self.schema = schema
        self.rows_per_group = rows_per_group or ROW_GROUP
        self.rows = 0
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._writer: pq.ParquetWriter | None = None

    def write(self, data: pa.Table | pa.RecordBatch) -> None:
        table = data if isinstance(data, pa.Table) else pa.Table.from_batches([data])
        if table.num_rows == 0:
            return
        if table.schema != self.schema:
            table = table.select(self.schema.names).cast(self.schema)
        self._pending.append(table)
        self._pending_rows += table.num_rows
        self.rows += table.num_rows
        while self._pending_rows >= self.rows_per_group:
            self._flush(self.rows_per_group)

    def _flush(self, n: int) -> None:
        # The chunks are written as they are (no combined copy): the bytes are the same as for one
        # chunk, and the memory of a row group is held once.
        table = pa.concat_tables(self._pending)
        head, rest = table.slice(0, n), table.slice(n)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.path, self.schema)
        self._writer.write_table(head, row_group_size=n)
        self._pending = [rest] if rest.num_rows else []
        self._pending_rows = rest.num_rows

    def close(self) -> None:
        if self._pending_rows:
            self._flush(self._pending_rows)
        if self._writer is None:
            pq.write_table(self.schema.empty_table(), self.path)
        else:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> RowGroupWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        elif self._writer is not None:
            self._writer.close()

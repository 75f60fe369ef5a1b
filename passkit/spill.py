"""What the release step and the audit keep on disk instead of in memory: records split into part
files, numeric columns, and rows of a Parquet file looked up by number, each read back a bounded
piece at a time.

At PASS scale a release has millions of samples; a Python or numpy structure per sample would make
memory grow with the dataset. Curation reads its columns in chunks and groups equal values one
part at a time; the audit compares key hashes one hash range at a time; both write what they
decide to part files. Memory then stays the same from thousands of samples to tens of millions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa

from passkit.parquetio import open_parquet


class ColumnStore:
    """Fixed-width numeric columns in raw files, one per column, appended in row order.

    Raw files, not Parquet: a chunk of rows is one `np.fromfile` at a known offset, and nothing is
    decoded or buffered beyond the chunk asked for."""

    def __init__(self, folder: Path, dtypes: dict[str, Any]):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.dtypes = {k: np.dtype(v) for k, v in dtypes.items()}
        self.rows = 0
        self._files: dict[str, BinaryIO] = {}

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.bin"

    def append(self, cols: dict[str, np.ndarray]) -> None:
        n = {len(v) for v in cols.values()}
        if set(cols) != set(self.dtypes) or len(n) != 1:
            raise ValueError(f"append needs equal-length columns {sorted(self.dtypes)}, got {sorted(cols)}")
        for k, v in cols.items():
            f = self._files.get(k)
            if f is None:
                f = self._files[k] = open(self.path(k), "ab")  # noqa: SIM115 (closed by close())
            f.write(np.ascontiguousarray(v, dtype=self.dtypes[k]).tobytes())
        self.rows += n.pop()

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()
        for k in self.dtypes:  # a store with no rows still has its (empty) columns
            self.path(k).touch()

    def read(self, name: str, lo: int, hi: int) -> np.ndarray:
        """Rows lo..hi-1 of column `name`."""
        dt = self.dtypes[name]
        lo, hi = max(lo, 0), min(hi, self.rows)
        if hi <= lo:
            return np.zeros(0, dt)
        return np.fromfile(self.path(name), dtype=dt, count=hi - lo, offset=lo * dt.itemsize)

    def __enter__(self) -> ColumnStore:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


BUFFER_ROWS = 1 << 16  # records a Partitioned holds before writing them to their parts


class Partitioned:
    """Records of one numpy dtype on disk, one file per part (`part_of` gives each record's part
    number, 0..parts-1), each file in the order its records were added; a bounded number of them
    buffered in memory."""

    def __init__(self, folder: Path, dtype: np.dtype, parts: int,
                 part_of: Callable[[np.ndarray], np.ndarray]):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.dtype, self.parts, self.part_of = np.dtype(dtype), int(parts), part_of
        self.added = 0
        self._pending: list[np.ndarray] = []
        self._buffered = 0

    def add(self, records: np.ndarray) -> None:
        if not len(records):
            return
        self._pending.append(np.asarray(records, dtype=self.dtype))
        self._buffered += len(records)
        self.added += len(records)
        if self._buffered >= BUFFER_ROWS:
            self.flush()

    def flush(self) -> None:
        """Append the buffered records to their parts' files (stable: a file keeps the order added)."""
        if not self._pending:
            return
        recs = np.concatenate(self._pending)
        self._pending, self._buffered = [], 0
        part = np.asarray(self.part_of(recs), dtype=np.int64)
        order = np.argsort(part, kind="stable")
        recs, part = recs[order], part[order]
        bounds = np.searchsorted(part, np.arange(self.parts + 1))
        for i in np.flatnonzero(np.diff(bounds)).tolist():
            with open(self.path(i), "ab") as f:
                f.write(recs[bounds[i] : bounds[i + 1]].tobytes())

    def load(self, i: int) -> np.ndarray:
        """Part i's records, in the order they were added."""
        self.flush()
        path = self.path(i)
        return np.fromfile(path, dtype=self.dtype) if path.is_file() else np.zeros(0, dtype=self.dtype)

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(self.parts):
            yield self.load(i)

    def path(self, i: int) -> Path:
        return self.folder / f"part-{i:06d}.bin"


class RangeSpill(Partitioned):
    """Records partitioned by a dense integer field (`by`) into one part per `span` values of it,
    so the records of a range come back together, sorted by that field, with the memory of one
    range; the order they were added in does not matter."""

    def __init__(self, folder: Path, dtype: np.dtype, by: str, span: int, limit: int):
        """`limit`: one past the largest value of `by` a record may have."""
        self.by, self.span = by, int(span)
        super().__init__(folder, dtype, max(1, -(-int(limit) // self.span)), lambda r: r[by] // self.span)
        self._cached: tuple[int, np.ndarray] | None = None

    def add(self, records: np.ndarray) -> None:
        self._cached = None
        super().add(records)

    def _range(self, r: int) -> np.ndarray:
        if self._cached is None or self._cached[0] != r:
            recs = self.load(r)
            self._cached = (r, recs[np.argsort(recs[self.by], kind="stable")])
        return self._cached[1]

    def between(self, lo: int, hi: int) -> np.ndarray:
        """The records with lo <= `by` < hi, sorted by `by`."""
        hi = min(hi, self.parts * self.span)
        if hi <= lo:
            return np.zeros(0, self.dtype)
        parts = []
        for r in range(lo // self.span, (hi - 1) // self.span + 1):
            recs = self._range(r)
            a, b = np.searchsorted(recs[self.by], [lo, hi])
            parts.append(recs[a:b])
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


class RowLookup:
    """Values of a Parquet file's rows by row number, read a row group at a time: for many rows at
    once (sorted or not), each row group they fall in is read once."""

    def __init__(self, path: Path):
        self.file = open_parquet(path)
        md = self.file.metadata
        self.starts = np.cumsum([0, *(md.row_group(g).num_rows for g in range(md.num_row_groups))])

    def take(self, rows: np.ndarray, columns: Sequence[str]) -> dict[str, list[Any]]:
        """`columns` of `rows`, as Python lists in the order of `rows`."""
        rows = np.asarray(rows, dtype=np.int64)
        out: dict[str, list[Any]] = {c: [None] * len(rows) for c in columns}
        if not len(rows):
            return out
        order = np.argsort(rows, kind="stable")
        groups = np.searchsorted(self.starts, rows[order], side="right") - 1
        for g in np.unique(groups):
            sel = order[groups == g]
            table = self.file.read_row_group(int(g), columns=list(columns))
            local = pa.array(rows[sel] - self.starts[g])
            for c in columns:
                values = table.column(c).take(local).to_pylist()
                dest = out[c]
                for i, v in zip(sel.tolist(), values, strict=True):
                    dest[i] = v
        return out

    def close(self) -> None:
        self.file.close()


def chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    """(lo, hi) row ranges of at most `size` rows covering 0..n-1."""
    for lo in range(0, n, size):
        yield lo, min(n, lo + size)

"""What the release's passes keep on disk instead of in memory: numeric columns, record ranges and
the staged candidates' table, each read back a bounded piece at a time.

At PASS scale a release has millions of staged candidates; a Python or numpy structure per candidate
would make the build's memory grow with the dataset. The curation rules read their columns in
chunks, write what they decide to range files, and look up keys by row in the staged table, so the
release step's memory stays the same from thousands of candidates to tens of millions.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
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
        hi = min(hi, self.rows)
        if hi <= lo:
            return np.zeros(0, dt)
        return np.fromfile(self.path(name), dtype=dt, count=hi - lo, offset=lo * dt.itemsize)

    def __enter__(self) -> ColumnStore:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class RangeSpill:
    """Records partitioned by a dense integer field (`by`) into one file per `span` values of it,
    so the records of a range come back together, sorted by that field, with the memory of one
    range; the order they were added in does not matter."""

    def __init__(self, folder: Path, dtype: np.dtype, by: str, span: int):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.dtype, self.by, self.span = np.dtype(dtype), by, int(span)
        self.count = 0
        self._cached: tuple[int, np.ndarray] | None = None

    def _path(self, r: int) -> Path:
        return self.folder / f"range-{r:06d}.bin"

    def add(self, records: np.ndarray) -> None:
        if not len(records):
            return
        ranges = records[self.by] // self.span
        order = np.argsort(ranges, kind="stable")
        records, ranges = records[order], ranges[order]
        cuts = np.flatnonzero(np.diff(ranges)) + 1
        for part in np.split(records, cuts):
            with open(self._path(int(part[self.by][0] // self.span)), "ab") as f:
                f.write(part.astype(self.dtype, copy=False).tobytes())
        self.count += len(records)
        self._cached = None

    def _range(self, r: int) -> np.ndarray:
        if self._cached is None or self._cached[0] != r:
            path = self._path(r)
            recs = np.fromfile(path, dtype=self.dtype) if path.exists() else np.zeros(0, self.dtype)
            self._cached = (r, recs[np.argsort(recs[self.by], kind="stable")])
        return self._cached[1]

    def between(self, lo: int, hi: int) -> np.ndarray:
        """The records with lo <= `by` < hi, sorted by `by`."""
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

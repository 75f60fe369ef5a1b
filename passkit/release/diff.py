"""What changed between two releases: samples added, removed and changed, and which shards moved.

Trainers ask "what is new in 1.0.1?", auditors "why did this sample go?". Samples are matched by
key (keys are stable: a hash of source and source id). A sample is *changed* when its image bytes
(sha256) or any attribution field differs. Removed samples carry the reason the newer release
records (a takedown, a near-duplicate, a policy change), when it records one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from passkit.parquetio import open_parquet
from passkit.release import manifest

COMPARED = ("sha256", "title", "creator", "creator_url", "landing_url", "source_url", "provider", "license",
            "license_url", "attribution", "modification")


@dataclass(slots=True)
class ReleaseDiff:
    a: str
    b: str
    added: list[str] = field(default_factory=list)
    removed: list[dict[str, Any]] = field(default_factory=list)  # {key, reason}
    changed: list[dict[str, Any]] = field(default_factory=list)  # {key, fields: {name: [old, new]}}
    unchanged: int = 0
    shards_same: list[str] = field(default_factory=list)
    shards_changed: list[str] = field(default_factory=list)
    shards_added: list[str] = field(default_factory=list)
    shards_removed: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "identical": self.identical}


BATCH_ROWS = 65_536  # rows decoded at a time: what bounds memory besides the two key columns


def _index_path(release: Path) -> Path:
    path = Path(release) / "index.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{release}: no index.parquet — is this a passkit release folder?")
    return path


class _Side:
    """One release's index as a stream of rows in ascending, unique key order.

    A release's index is sorted by key with one row per key (the format), so the file is streamed
    as it lies and only its key column is held whole (as Arrow, not Python objects). Another file
    (hand-made, damaged) is read whole into Arrow and put in that order, keeping the last row of a
    repeated key, which is what matching rows through a dict did.
    """

    def __init__(self, path: Path, compared: list[str]):
        self.path = path
        self.columns = ["key", *compared]
        keys = open_parquet(path).read(columns=["key"]).column("key")
        self.order: pa.Array | None = None  # row numbers in key order, when the file is not in it
        if keys.null_count == 0 and _strictly_ascending(keys):
            self.keys = keys.combine_chunks() if keys.num_chunks != 1 else keys.chunk(0)
        else:
            self.order = _last_of_each_key(keys)
            self.keys = pc.take(keys, self.order).combine_chunks()

    def batches(self, keep: np.ndarray) -> Iterator[pa.Table]:
        """The rows (in key order) whose position in `self.keys` is set in `keep`."""
        if self.order is None:
            pos = 0
            # a buffered stream, not the whole row group's column chunks (a million rows) at once
            pf = open_parquet(self.path)
            for b in pf.iter_batches(batch_size=BATCH_ROWS, columns=self.columns):
                part = keep[pos : pos + b.num_rows]
                pos += b.num_rows
                if part.all():
                    yield pa.Table.from_batches([b])
                elif part.any():
                    yield pa.Table.from_batches([b]).filter(pa.array(part))
            return
        table = pq.read_table(self.path, columns=self.columns)
        rows = np.asarray(self.order)[keep]
        for lo in range(0, len(rows), BATCH_ROWS):
            yield table.take(pa.array(rows[lo : lo + BATCH_ROWS]))


def _strictly_ascending(keys: pa.ChunkedArray) -> bool:
    """True when every key sorts after the one before it (Arrow compares UTF-8 bytes, the order
    of Python's str comparison)."""
    n = len(keys)
    for lo in range(0, max(n - 1, 0), 1 << 20):
        hi = min(lo + (1 << 20), n - 1)
        if not pc.all(pc.less(keys.slice(lo, hi - lo), keys.slice(lo + 1, hi - lo))).as_py():
            return False
    return True


def _last_of_each_key(keys: pa.ChunkedArray) -> pa.Array:
    """Row numbers of the last row of each non-null key, in ascending key order."""
    t = pa.table({"key": keys, "row": pa.array(np.arange(len(keys), dtype=np.int64))})
    t = t.filter(pc.is_valid(t.column("key")))
    t = t.take(pc.sort_indices(t, [("key", "ascending"), ("row", "descending")]))
    k = t.column("key").combine_chunks()
    first = np.ones(len(k), dtype=bool)
    if len(k) > 1:
        first[1:] = np.asarray(pc.not_equal(k.slice(1), k.slice(0, len(k) - 1)))
    return t.column("row").combine_chunks().filter(pa.array(first))


def _zip(left: Iterator[pa.Table], right: Iterator[pa.Table]) -> Iterator[tuple[pa.Table, pa.Table]]:
    """Equal-length pieces of two streams holding the same number of rows, batch edges ignored."""
    lbuf: pa.Table | None = None
    rbuf: pa.Table | None = None
    while True:
        if lbuf is None or lbuf.num_rows == 0:
            lbuf = next(left, None)
        if rbuf is None or rbuf.num_rows == 0:
            rbuf = next(right, None)
        if lbuf is None or rbuf is None:
            return
        n = min(lbuf.num_rows, rbuf.num_rows)
        yield lbuf.slice(0, n), rbuf.slice(0, n)
        lbuf, rbuf = lbuf.slice(n), rbuf.slice(n)


def _differs(old: pa.ChunkedArray, new: pa.ChunkedArray) -> np.ndarray:
    """Per row: the two values are not equal as Python values (None equals only None)."""
    if old.type == new.type:
        o, n = old.combine_chunks(), new.combine_chunks()
        ne = pc.fill_null(pc.not_equal(o, n), True)
        return np.asarray(pc.and_not(ne, pc.and_(pc.is_null(o), pc.is_null(n))), dtype=bool)
    return np.array([a != b for a, b in zip(old.to_pylist(), new.to_pylist(), strict=True)], dtype=bool)


def _changed(sa: _Side, sb: _Side, in_b: np.ndarray, in_a: np.ndarray, compared: list[str]) -> tuple[
        list[dict[str, Any]], int]:
    """Rows present in both releases, compared column by column a piece at a time."""
    changed: list[dict[str, Any]] = []
    unchanged = 0
    for ta, tb in _zip(sa.batches(in_b), sb.batches(in_a)):
        hit = np.zeros(ta.num_rows, dtype=bool)
        per_col = {}
        for c in compared:
            d = _differs(ta.column(c), tb.column(c))
            per_col[c] = d
            hit |= d
        rows = np.flatnonzero(hit)
        unchanged += ta.num_rows - len(rows)
        if not len(rows):
            continue
        idx = pa.array(rows)
        keys = ta.column("key").take(idx).to_pylist()
        old = {c: ta.column(c).take(idx).to_pylist() for c in compared}
        new = {c: tb.column(c).take(idx).to_pylist() for c in compared}
        for n, r in enumerate(rows.tolist()):
            changed.append({"key": keys[n], "fields": {c: [old[c][n], new[c][n]] for c in compared
                                                         if per_col[c][r]}})
    return changed, unchanged


def _common(ka: pa.Array, kb: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Per key of each side: whether the other side has it. DuckDB's parallel hash join does this
    several times faster than Arrow's is_in on millions of strings."""
    import duckdb

    con = duckdb.connect(":memory:")
    try:
        con.register("a", pa.table({"key": ka, "i": np.arange(len(ka), dtype=np.int64)}))
        con.register("b", pa.table({"key": kb, "j": np.arange(len(kb), dtype=np.int64)}))
        both = con.execute("SELECT a.i, b.j FROM a JOIN b ON a.key = b.key").fetchnumpy()
    finally:
        con.close()
    in_b, in_a = np.zeros(len(ka), dtype=bool), np.zeros(len(kb), dtype=bool)
    in_b[np.asarray(both["i"], dtype=np.int64)] = True
    in_a[np.asarray(both["j"], dtype=np.int64)] = True
    return in_b, in_a


def _reasons(release: Path, m: dict[str, Any], keys: pa.Array) -> dict[str, str]:
    """key -> why the release left it out, for the given keys: its manifest removals, then
    rejected.parquet (its last row for the key). The rejected table has tens of millions of rows
    at PASS scale: DuckDB scans it in parallel and hands back only the rows of these keys."""
    out: dict[str, str] = {}
    rej = Path(release) / "rejected.parquet"
    if rej.is_file() and len(keys):
        names = set(pq.read_schema(rej).names)
        if "key" in names:
            import duckdb

            cols = ", ".join(c if c in names else f"NULL AS {c}" for c in ("stage", "reason", "detail"))
            path = "'" + str(rej).replace("'", "''") + "'"
            con = duckdb.connect(":memory:")
            try:
                con.register("gone", pa.table({"key": keys}))
                rows = con.execute(
                    f"SELECT key, {cols} FROM read_parquet({path}, file_row_number = true) "
                    "WHERE key IN (SELECT key FROM gone) ORDER BY file_row_number").fetchall()
            finally:
                con.close()
            for key, stage, reason, detail in rows:
                if key:
                    out[key] = f"{stage}: {reason}" + (f" ({detail})" if detail else "")
    for r in m.get("removals") or []:
        out[r["key"]] = f"takedown: {r.get('reason', '')}"
    return out


def diff(a: Path, b: Path) -> ReleaseDiff:
    """Compare release `a` (older) with release `b` (newer).

    Columnar, so that two PASS-size releases (millions of rows, a rejected table ten times that)
    compare in seconds and bounded memory: the key columns decide what was added and removed, and
    the rows both hold are streamed side by side in key order and compared a batch at a time.
    """
    ma, mb = manifest.load(a), manifest.load(b)
    pa_path, pb_path = _index_path(a), _index_path(b)
    names_a, names_b = set(pq.read_schema(pa_path).names), set(pq.read_schema(pb_path).names)
    compared = [c for c in COMPARED if c in names_a and c in names_b]
    sa = _Side(pa_path, compared)
    sb = _Side(pb_path, compared)
    in_b, in_a = _common(sa.keys, sb.keys)
    pa.default_memory_pool().release_unused()
    d = ReleaseDiff(ma.get("release", str(a)), mb.get("release", str(b)))
    d.added = sb.keys.filter(pa.array(~in_a)).to_pylist()
    gone = sa.keys.filter(pa.array(~in_b))
    why = _reasons(b, mb, gone)
    d.removed = [{"key": k, "reason": why.get(k, "not in the newer release (no reason recorded)")}
                 for k in gone.to_pylist()]
    d.changed, d.unchanged = _changed(sa, sb, in_b, in_a, compared)
    sa = {s["path"]: s["sha256"] for s in ma.get("shards") or []}
    sb = {s["path"]: s["sha256"] for s in mb.get("shards") or []}
    for p in sorted(set(sa) | set(sb)):
        if p not in sb:
            d.shards_removed.append(p)
        elif p not in sa:
            d.shards_added.append(p)
        elif sa[p] == sb[p]:
            d.shards_same.append(p)
        else:
            d.shards_changed.append(p)
    return d

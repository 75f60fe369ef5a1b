"""index.parquet: read once, in batches, before the shards; rows no shard holds, after them.

The index is never held as Python rows. One streaming pass (`check_index`) keeps a few numpy
arrays per row (salted key hash, shard number, attribution hash: ~28 bytes) and writes each
shard's rows to a small Arrow file in a scratch folder, its "slice": a shard check then reads
only its own rows, whatever order the index is in (a release writes it sorted by key with each
shard's rows together, but an audit must not depend on that). A sample whose key is not in its
shard's slice is resolved afterwards by the merging process (`IndexFacts.row`), through the hash
arrays and the slice that holds the key.

Duplicated keys: as a dict built in file order would, the first row of a key is the key's row;
later ones are reported (`index_duplicate`) and left out of every slice (`IndexFacts.skipped`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from passkit.audit.context import INDEX, AuditContext
from passkit.audit.keyhash import ABSENT, EMPTY, h64, hashes, isin
from passkit.parquetio import open_parquet

# index.parquet columns compared with the json (present ones only; key, shard, sha256 are required).
INDEX_COMPARED = ("title", "creator", "landing_url", "license", "license_url", "attribution")
INDEX_REQUIRED = ("key", "shard", "sha256")
ROW = "_row"  # a slice's column: the row's number in index.parquet
BATCH_ROWS = 8192  # larger batches fragment the Arrow allocator: +120 MB RSS at 65,536


@dataclass(slots=True)
class IndexFacts:
    """What the audit keeps of index.parquet: per-row arrays in file order, and the slice files."""

    scratch: Path
    salt: bytes
    columns: list[str]  # the INDEX_COMPARED columns the index has
    shard_names: list[Any] = field(default_factory=list)  # shard number -> the index's shard value
    shard_ids: dict[Any, int] = field(default_factory=dict)  # and back
    slices: dict[int, list[Path]] = field(default_factory=dict)  # shard number -> its slice files
    row_shard: np.ndarray = field(default_factory=lambda: EMPTY)  # int32 per row
    sorted_hash: np.ndarray = field(default_factory=lambda: EMPTY)  # the key hashes, sorted
    order: np.ndarray = field(default_factory=lambda: EMPTY)  # row numbers in sorted_hash's order (file order among equal hashes)
    attr_hash: np.ndarray = field(default_factory=lambda: EMPTY)  # per row: hash of the attribution (ABSENT: no such column)
    skipped: np.ndarray = field(default_factory=lambda: EMPTY)  # sorted rows left out: later rows of a duplicated key
    _cache: OrderedDict[int, dict[int, dict[str, Any]]] = field(default_factory=OrderedDict)

    @property
    def rows(self) -> int:
        return len(self.row_shard)

    def shard_number(self, name: str) -> int | None:
        return self.shard_ids.get(name)

    def first_rows(self) -> np.ndarray:
        """A mask over rows: True for each key's row (its first one)."""
        keep = np.ones(self.rows, dtype=bool)
        keep[self.skipped] = False
        return keep

    def slice_rows(self, sid: int) -> dict[int, dict[str, Any]]:
        """Row number -> row (a dict) of one slice, a few slices cached."""
        if sid in self._cache:
            self._cache.move_to_end(sid)
            return self._cache[sid]
        table = read_slice(self.slices.get(sid, []))
        rows = {r[ROW]: r for r in table.to_pylist()}
        for r in self.skipped[np.isin(self.skipped, table.column(ROW).to_numpy())].tolist():
            del rows[r]  # a later row of a duplicated key is nobody's row
        self._cache[sid] = rows
        if len(self._cache) > 8:
            self._cache.popitem(last=False)
        return rows

    def rows_of(self, h: int) -> np.ndarray:
        """The rows whose key hashes to h, in file order."""
        v = np.uint64(h)
        return self.order[np.searchsorted(self.sorted_hash, v, "left"):np.searchsorted(self.sorted_hash, v, "right")]

    def row(self, key: str) -> dict[str, Any] | None:
        """The key's row (its first one), or None when the index has no row for it."""
        for r in self.rows_of(h64(key, self.salt)):
            got = self.slice_rows(int(self.row_shard[r])).get(int(r))
            if got is not None and got["key"] == key:  # None: a skipped duplicate row
                return got
        return None

    def keys_at(self, rows: np.ndarray) -> Iterator[tuple[int, dict[str, Any]]]:
        """(row number, row) for the given rows, in the order given."""
        for r in rows:
            yield int(r), self.slice_rows(int(self.row_shard[r]))[int(r)]


def read_slice(files: list[Path] | list[bytes] | tuple[Any, ...]) -> Any:
    """One shard's index rows (an Arrow table) from its slice files or their bytes."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    tables = []
    for f in files:
        src = pa.BufferReader(f) if isinstance(f, bytes) else pa.memory_map(str(f))
        with ipc.open_file(src) as reader:
            tables.append(reader.read_all())
    if not tables:
        return pa.table({ROW: pa.array([], pa.int64()), "key": pa.array([], pa.string())})
    return pa.concat_tables(tables)


def check_index(ctx: AuditContext) -> None:
    """Read index.parquet once: per-row hashes into `ctx.ix`, each shard's rows to its slice file."""
    path = ctx.root / INDEX
    if not path.is_file():
        ctx.add("index_missing", f"the release has no {INDEX}")
        return
    assert ctx.scratch is not None
    try:
        ix, dups = _scan(path, ctx.scratch / "index", ctx.salt, ctx.add)
    except _Unusable:
        return
    except Exception as e:  # pyarrow raises several types for corrupt files
        ctx.add("index_unreadable", f"{INDEX} cannot be read: {e}")
        return
    for _, key in dups:
        ctx.add("index_duplicate", f"{INDEX} has key {key!r} more than once", key=key)
    ctx.ix = ix


class _Unusable(Exception):
    pass


def _scan(path: Path, folder: Path, salt: bytes, add: Callable[..., None]) -> tuple[IndexFacts, list[tuple[int, Any]]]:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.ipc as ipc

    pf = open_parquet(path)
    names = pf.schema_arrow.names
    missing = [c for c in INDEX_REQUIRED if c not in names]
    if missing:
        add("index_unreadable", f"{INDEX} lacks required column(s) {missing}")
        raise _Unusable
    compared = [c for c in INDEX_COMPARED if c in names]
    cols = [*INDEX_REQUIRED, *compared]
    ix = IndexFacts(folder, salt, compared)
    folder.mkdir(parents=True, exist_ok=True)
    numbers: dict[Any, int] = {}
    key_h, row_shard, attr_h = [], [], []
    start = 0
    opts = ipc.IpcWriteOptions(compression="zstd")
    for b, batch in enumerate(pf.iter_batches(batch_size=BATCH_ROWS, columns=cols, use_threads=False)):
        n = batch.num_rows
        keys = batch.column("key").to_pylist()
        key_h.append(hashes(keys, salt, n))
        attr_h.append(hashes(batch.column("attribution").to_pylist(), salt, n) if "attribution" in compared
                      else np.full(n, ABSENT, dtype=np.uint64))
        enc = pc.dictionary_encode(batch.column("shard"))
        local = [numbers.setdefault(v, len(numbers)) for v in enc.dictionary.to_pylist()]
        codes = enc.indices.to_numpy(zero_copy_only=False)
        if enc.null_count:
            none = numbers.setdefault(None, len(numbers))
            codes = np.where(enc.is_null().to_numpy(zero_copy_only=False), len(local), codes)
            local.append(none)
        sids = np.asarray(local, dtype=np.int32)[codes] if n else np.zeros(0, dtype=np.int32)
        row_shard.append(sids)
        table = pa.Table.from_batches([batch]).append_column(ROW, pa.array(np.arange(start, start + n)))
        for sid in np.unique(sids):
            part = table.filter(pa.array(sids == sid))
            file = folder / f"{sid:06d}-{b:06d}.arrow"
            with ipc.new_file(str(file), part.schema, options=opts) as w:
                w.write_table(part)
            ix.slices.setdefault(int(sid), []).append(file)
        start += n
    ix.shard_names = list(numbers)
    ix.shard_ids = numbers
    ix.row_shard = np.concatenate(row_shard) if row_shard else np.zeros(0, dtype=np.int32)
    all_h = np.concatenate(key_h) if key_h else EMPTY
    ix.attr_hash = np.concatenate(attr_h) if attr_h else EMPTY
    ix.order = np.argsort(all_h, kind="stable").astype(np.int64)
    ix.sorted_hash = all_h[ix.order]
    del all_h
    return ix, _duplicates(ix)


def _duplicates(ix: IndexFacts) -> list[tuple[int, Any]]:
    """(row, key) of every row whose key an earlier row has, in file order; sets `ix.skipped`."""
    same = np.flatnonzero(ix.sorted_hash[1:] == ix.sorted_hash[:-1])
    if not len(same):
        return []
    rows = np.unique(np.concatenate([ix.order[same], ix.order[same + 1]]))
    first: dict[Any, int] = {}
    dups: list[tuple[int, Any]] = []
    for r, row in ix.keys_at(rows):  # ascending row numbers: file order
        if row["key"] in first:
            dups.append((r, row["key"]))
        else:
            first[row["key"]] = r
    ix.skipped = np.asarray([r for r, _ in dups], dtype=np.int64)
    ix._cache.clear()  # slices read before the duplicates were known still hold them
    return dups


def check_index_rows(ctx: AuditContext) -> None:
    """Index rows no scanned shard holds: removed samples still listed, or rows with no sample."""
    ix = ctx.ix
    if ix is None or not ix.rows:
        return
    left = np.zeros(ix.rows, dtype=bool)
    left[ix.order[~isin(ix.sorted_hash, ctx.seen.sorted_hashes())]] = True
    left &= ix.first_rows()
    dead = [sid for sid, name in enumerate(ix.shard_names) if name in ctx.dead_shards]
    if dead:
        left &= ~np.isin(ix.row_shard, dead)  # the shard's own finding covers its samples
    for _, row in ix.keys_at(np.flatnonzero(left)):
        key, shard = row["key"], row["shard"]
        if key in ctx.removed:
            ctx.add("removed_present", f"removed ({ctx.removed[key] or 'no reason given'}) but still in {INDEX}",
                    shard, key)
        else:
            ctx.add("index_extra_key", f"{INDEX} row (shard {shard}) has no sample in the shards", shard, key)


def smallest(items: Iterable[str], n: int) -> list[str]:
    """The n smallest distinct strings, in order, holding only n of them."""
    top: list[str] = []
    for s in items:
        if (len(top) < n or s < top[-1]) and s not in top:
            top.append(s)
            top.sort()
            del top[n:]
    return top

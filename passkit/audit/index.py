"""index.parquet: read once, in batches, before the shards; rows no shard holds, after them.

The index is never held in memory, as Python rows or as per-row arrays. One streaming pass
(`check_index`) writes each shard's rows to a small Arrow file in a scratch folder, its "slice",
and each row's salted key hash, row number, shard number and attribution hash to disk by hash
range (`IndexFacts.records`, spill.Buckets). A shard check then reads only its own slice, whatever
order the index is in (a release writes it sorted by key with each shard's rows together, but an
audit must not depend on that). A sample whose key is not in its shard's slice is resolved
afterwards by the merging process (`IndexFacts.row`), through its hash's range and the slice that
holds the key. The checks that span the release read one range of hashes at a time (`ranges`).

Duplicated keys: as a dict built in file order would, the first row of a key is the key's row;
later ones are reported (`index_duplicate`) and left out of every slice and range (`skipped`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from passkit.audit.context import INDEX, AuditContext
from passkit.audit.keyhash import ABSENT, h64, hashes, isin
from passkit.audit.spill import Buckets, bits_for
from passkit.licenses import spdx_of
from passkit.parquetio import open_parquet

# index.parquet columns compared with the json (present ones only; key, shard, sha256 are required).
INDEX_COMPARED = ("title", "creator", "landing_url", "license", "license_url", "attribution")
INDEX_REQUIRED = ("key", "shard", "sha256")
SPDX = "license_spdx"  # checked against `license` as the index is read
ROW = "_row"  # a slice's column: the row's number in index.parquet
# Arrow's allocator (mimalloc) keeps the pages a batch freed: small batches, handed back after each one,
# hold the index pass to ~120 MB over the imports (8,192 rows, kept: ~170 MB; 65,536: ~290 MB).
BATCH_ROWS = 2048
# one index row on disk: salted key hash, row number, shard number, attribution hash (ABSENT: no such column)
INDEXED = np.dtype([("h", "<u8"), ("row", "<i8"), ("shard", "<i4"), ("attr", "<u8")])
ROWREF = np.dtype([("row", "<i8"), ("shard", "<i4")])  # where a row's values are: its number and slice


def refs(records: np.ndarray) -> np.ndarray:
    """The (row, shard) of records that have both fields, sorted by row."""
    out = np.zeros(len(records), dtype=ROWREF)
    out["row"], out["shard"] = records["row"], records["shard"]
    return np.sort(out, order="row")


def concat_refs(parts: list[np.ndarray]) -> np.ndarray:
    return np.sort(np.concatenate(parts), order="row") if parts else np.zeros(0, dtype=ROWREF)


@dataclass(slots=True)
class IndexFacts:
    """What the audit keeps of index.parquet: its rows' hashes on disk by range, and the slice files."""

    scratch: Path
    salt: bytes
    columns: list[str]  # the INDEX_COMPARED columns the index has
    records: Buckets  # every row as an INDEXED record, by range of key hash
    rows: int = 0
    shard_names: list[Any] = field(default_factory=list)  # shard number -> the index's shard value
    shard_ids: dict[Any, int] = field(default_factory=dict)  # and back
    slices: dict[int, list[Path]] = field(default_factory=dict)  # shard number -> its slice files
    skipped: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=ROWREF))  # later rows of a duplicated key
    _cache: OrderedDict[int, dict[int, dict[str, Any]]] = field(default_factory=OrderedDict)
    _range: tuple[int, np.ndarray] | None = None  # the range `row` read last

    def shard_number(self, name: str) -> int | None:
        return self.shard_ids.get(name)

    def skipped_in(self, sid: int) -> np.ndarray:
        """The skipped rows of one shard's slice."""
        return self.skipped["row"][self.skipped["shard"] == sid]

    def sorted_range(self, i: int) -> np.ndarray:
        """Range i's records without the skipped rows, sorted by hash (file order among equal hashes)."""
        recs = self.records.load(i)
        if len(self.skipped):
            recs = recs[~np.isin(recs["row"], self.skipped["row"])]
        return recs[np.argsort(recs["h"], kind="stable")]

    def ranges(self) -> Iterator[np.ndarray]:
        """Every range's `sorted_range`, in the order of the ranges."""
        for i in range(self.records.count):
            yield self.sorted_range(i)

    def slice_rows(self, sid: int) -> dict[int, dict[str, Any]]:
        """Row number -> row (a dict) of one slice, a few slices cached."""
        if sid in self._cache:
            self._cache.move_to_end(sid)
            return self._cache[sid]
        table = read_slice(self.slices.get(sid, []))
        rows = {r[ROW]: r for r in table.to_pylist()}
        for r in self.skipped_in(sid).tolist():
            rows.pop(r, None)  # a later row of a duplicated key is nobody's row
        self._cache[sid] = rows
        if len(self._cache) > 8:
            self._cache.popitem(last=False)
        return rows

    def row(self, key: str) -> dict[str, Any] | None:
        """The key's row (its first one), or None when the index has no row for it."""
        h = np.uint64(h64(key, self.salt))
        i = int(self.records.bucket_of(np.asarray([h]))[0])
        if self._range is None or self._range[0] != i:
            self._range = (i, self.sorted_range(i))
        recs = self._range[1]
        same = recs[np.searchsorted(recs["h"], h, "left"):np.searchsorted(recs["h"], h, "right")]
        for r, sid in zip(same["row"].tolist(), same["shard"].tolist(), strict=True):
            got = self.slice_rows(sid).get(r)
            if got is not None and got["key"] == key:
                return got
        return None

    def keys_at(self, at: np.ndarray) -> Iterator[tuple[int, dict[str, Any]]]:
        """(row number, row) for the given ROWREFs, in the order given."""
        for r, sid in zip(at["row"].tolist(), at["shard"].tolist(), strict=True):
            yield r, self.slice_rows(sid)[r]


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
    """Read index.parquet once: per-row hashes to disk by range, each shard's rows to its slice file."""
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
    import pyarrow.ipc as ipc

    pf = open_parquet(path)
    names = pf.schema_arrow.names
    missing = [c for c in INDEX_REQUIRED if c not in names]
    if missing:
        add("index_unreadable", f"{INDEX} lacks required column(s) {missing}")
        raise _Unusable
    compared = [c for c in INDEX_COMPARED if c in names]
    cols = [*INDEX_REQUIRED, *compared]
    spdx = [SPDX] if SPDX in names and "license" in names else []  # read to be checked, kept out of the slices
    folder.mkdir(parents=True, exist_ok=True)
    ix = IndexFacts(folder, salt, compared, Buckets(folder / "hashes", INDEXED, bits_for(pf.metadata.num_rows)))
    opts = ipc.IpcWriteOptions(compression="zstd")
    pool = pa.default_memory_pool()
    for b, batch in enumerate(pf.iter_batches(batch_size=BATCH_ROWS, columns=cols + spdx, use_threads=False)):
        pool.release_unused()
        if spdx:
            _check_spdx(batch, add)
            batch = batch.select(cols)
        recs = _records(batch, ix, salt, "attribution" in compared)
        ix.records.add(recs)
        table = pa.Table.from_batches([batch]).append_column(ROW, pa.array(recs["row"]))
        for sid in np.unique(recs["shard"]).tolist():
            part = table.filter(pa.array(recs["shard"] == sid))
            file = folder / f"{sid:06d}-{b:06d}.arrow"
            with ipc.new_file(str(file), part.schema, options=opts) as w:
                w.write_table(part)
            ix.slices.setdefault(sid, []).append(file)
        ix.rows += batch.num_rows
    ix.records.flush()
    ix.shard_names = list(ix.shard_ids)
    return ix, _duplicates(ix)


def _check_spdx(batch: Any, add: Callable[..., None]) -> None:
    """license_spdx must be the SPDX id of the row's licence (tools read it instead of `license`)."""
    import pyarrow as pa

    pairs = pa.table({"license": batch.column("license"), SPDX: batch.column(SPDX)})
    distinct = pairs.group_by(["license", SPDX]).aggregate([]).to_pylist()
    wrong = {(p["license"], p[SPDX]) for p in distinct if p[SPDX] != spdx_of(p["license"])}
    if not wrong:
        return
    for key, shard, lic, got in zip(*(batch.column(c).to_pylist() for c in ("key", "shard", "license", SPDX)),
                                    strict=True):
        if (lic, got) in wrong:
            add("index_license_spdx", f"{INDEX} gives licence {lic!r} the SPDX id {got!r}, not {spdx_of(lic)!r}",
                shard, key)


def _records(batch: Any, ix: IndexFacts, salt: bytes, attribution: bool) -> np.ndarray:
    """One batch's INDEXED records; numbers the shards it names in `ix.shard_ids`."""
    import pyarrow.compute as pc

    n = batch.num_rows
    recs = np.zeros(n, dtype=INDEXED)
    recs["h"] = hashes(batch.column("key").to_pylist(), salt, n)
    recs["row"] = np.arange(ix.rows, ix.rows + n)
    recs["attr"] = hashes(batch.column("attribution").to_pylist(), salt, n) if attribution else ABSENT
    enc = pc.dictionary_encode(batch.column("shard"))
    numbers = ix.shard_ids
    local = [numbers.setdefault(v, len(numbers)) for v in enc.dictionary.to_pylist()]
    codes = enc.indices.to_numpy(zero_copy_only=False)
    if enc.null_count:
        none = numbers.setdefault(None, len(numbers))
        codes = np.where(enc.is_null().to_numpy(zero_copy_only=False), len(local), codes)
        local.append(none)
    if n:
        recs["shard"] = np.asarray(local, dtype=np.int32)[codes]
    return recs


def _duplicates(ix: IndexFacts) -> list[tuple[int, Any]]:
    """(row, key) of every row whose key an earlier row has, in file order; sets `ix.skipped`."""
    same: list[np.ndarray] = []
    for recs in ix.ranges():  # nothing is skipped yet
        eq = np.flatnonzero(recs["h"][1:] == recs["h"][:-1])
        if len(eq):
            same.append(refs(recs[np.unique(np.concatenate([eq, eq + 1]))]))
    candidates = concat_refs(same)
    first: dict[Any, int] = {}
    dups: list[tuple[int, Any]] = []
    for r, row in ix.keys_at(candidates):  # ascending row numbers: file order
        if row["key"] in first:
            dups.append((r, row["key"]))
        else:
            first[row["key"]] = r
    if dups:
        ix.skipped = candidates[np.isin(candidates["row"], [r for r, _ in dups])]
        ix._cache.clear()  # slices read before the duplicates were known still hold them
    return dups


def check_index_rows(ctx: AuditContext) -> None:
    """Index rows no scanned shard holds: removed samples still listed, or rows with no sample."""
    ix = ctx.ix
    if ix is None or not ix.rows or ctx.seen is None:
        return
    dead = [sid for sid, name in enumerate(ix.shard_names) if name in ctx.dead_shards]
    left: list[np.ndarray] = []
    for i, recs in enumerate(ix.ranges()):
        met = np.sort(ctx.seen.buckets.load(i)["h"])
        out = recs[~isin(recs["h"], met)]
        if dead:
            out = out[~np.isin(out["shard"], dead)]  # the shard's own finding covers its samples
        left.append(refs(out))
    for _, row in ix.keys_at(concat_refs(left)):
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

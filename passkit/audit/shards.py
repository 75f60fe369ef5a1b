"""Shards: size and sha256 against the manifest, tar safety, then every sample, streamed.

Each shard is checked on its own (`check_shard`), in this process or in a worker, from a small
`Shared` (the manifest's policy and removals, the limits) and its `ShardJob` (its manifest entry and
its slice of index.parquet). It records what it finds as a list of operations, in the order a
single pass over the release would make them; `merge_shard` replays them here, in shard order,
through the report's Collector, and adds what needs the other shards: a key met in an earlier
shard (`key_duplicate`), the order across the shard boundary (`sample_order`), and the index rows of
samples whose key is not in their shard's slice. So the report (order, messages, per-code limit)
is the same whether one process checks every shard or many check them at once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from passkit import licenses, process
from passkit.audit.context import INDEX, AuditContext, inside, short
from passkit.audit.index import INDEX_COMPARED, read_slice
from passkit.audit.keyhash import EMPTY, SeenKeys, hashes
from passkit.audit.rescan import Rescan, rescan_problem
from passkit.audit.samples import check_sample
from passkit.audit.spill import bits_for
from passkit.shards import UnsafeTarError, sha256_file
from passkit.shards.reader import index_tar
from passkit.shards.wdsindex import format_index, index_path, parse_index


@dataclass(frozen=True, slots=True)
class Shared:
    """What every shard check needs from the audit, sent once to each worker."""

    root: str
    max_member: int
    limit: int | None
    policy: licenses.Policy | None
    removed: dict[str, str]
    removed_sha: dict[str, str]
    salt: bytes
    detectors: Any = None  # --rescan: the manifest's detectors (None: no rescan)
    models_dir: str | None = None
    remote: str | None = None  # the release's URL: each shard is downloaded for its check


@dataclass(frozen=True, slots=True)
class ShardJob:
    rel: str
    entry: dict[str, Any]
    index: bool = False  # index.parquet was read: samples are checked against their slice
    slices: tuple[Any, ...] = ()  # its index rows: Arrow files, as paths (str) or their bytes
    skipped: tuple[int, ...] = ()  # rows of those files that repeat an earlier key
    full: bool = True  # False (--sample): hash it, and read its samples only when the hash differs
    wds_index: str | bytes | None = None  # its index file, as a path (str) or its bytes; None: none to check


@dataclass(slots=True)
class ShardResult:
    rel: str
    ops: list[tuple[Any, ...]]
    bytes: int = 0
    scanned: bool = False  # its samples were read
    dead: bool = False  # absent or unsafe: its samples are covered by the shard's finding
    keys: list[str] = field(default_factory=list)  # in tar order
    hashes: np.ndarray = field(default_factory=lambda: EMPTY)  # their salted hashes (keyhash)


class ShardScan:
    """One shard's check in progress: its slice of the index and the operations recorded so far.

    An operation is a tuple (sample number, kind, ...): "add" a finding (or "over", a finding over
    the per-code limit, only counted), "mark" where shard-level findings are inserted, "row",
    "sha", "mismatch" for an index check the merging process completes, "shard_sha" for the
    shard_sha256 finding it words.
    """

    def __init__(self, shared: Shared, rel: str):
        self.shared = shared
        self.rel = rel
        self.ops: list[tuple[Any, ...]] = []
        self.i = -1  # the sample being checked (-1: none yet)
        self.per_code: Counter[str] = Counter()
        self.rows: dict[str, dict[str, Any]] | None = None
        self.prev_key: str | None = None
        self.rescan: Rescan | None = None

    def add(self, code: str, message: str, key: str | None = None, at: bool = False) -> None:
        self.per_code[code] += 1
        limit = self.shared.limit
        if limit is not None and self.per_code[code] > limit:  # over the limit here, so over it in the report
            self.ops.append((self.i, "over", code))
        else:
            self.ops.append((self.i, "add", code, message, key, at))

    def defer(self, kind: str, key: str, *payload: Any) -> None:
        self.ops.append((self.i, kind, key, *payload))


def _slice_rows(job: ShardJob) -> dict[str, dict[str, Any]]:
    table = read_slice(job.slices)
    skipped = set(job.skipped)
    return {r["key"]: r for r in table.to_pylist() if r["_row"] not in skipped}


def _samples(path: Path, entries: list[Any]) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {ext: bytes}) for consecutive members sharing a key, read at the offsets index_tar found."""
    key: str | None = None
    group: dict[str, bytes] = {}
    with open(path, "rb") as f:
        for e in entries:
            k, _, ext = e.name.partition(".")
            if k != key and key is not None:
                yield key, group
                group = {}
            key = k
            f.seek(e.offset_data)
            data = f.read(e.size)
            if len(data) != e.size:
                raise EOFError(f"unexpected end of data in {e.name}")
            group[ext] = data
    if key is not None:
        yield key, group


def check_shard(shared: Shared, job: ShardJob) -> ShardResult:
    """Check one shard on its own; runs in a worker process or Ray task as well as here.

    What the check freed goes back to the OS after it: without that, the allocators' leftovers of
    decoded images and slices made a process's RSS creep up shard after shard (~20 MB in 75 shards)."""
    try:
        return _check_shard(shared, job)
    finally:
        process.hand_back_freed_memory()


def _check_shard(shared: Shared, job: ShardJob) -> ShardResult:
    process.skip_pandas_probe()
    if shared.remote is None:
        return _check_file(shared, job, Path(shared.root) / job.rel)
    import tempfile

    from passkit.remote import download, join

    # one shard on disk at a time per worker, in the worker's own temporary folder (a Ray node's too)
    with tempfile.TemporaryDirectory(prefix="passkit-audit-shard-") as tmp:
        path = Path(tmp) / Path(job.rel).name
        try:
            download(join(shared.remote, job.rel), path)
        except FileNotFoundError:
            path.unlink(missing_ok=True)  # absent from the store: reported as shard_missing
        except Exception as e:  # the store's own errors (network, permissions): that shard cannot be checked
            sc = ShardScan(shared, job.rel)
            sc.add("shard_unreadable", f"{job.rel} could not be downloaded from {shared.remote}: {type(e).__name__}: {e}")
            return ShardResult(job.rel, sc.ops, dead=True)
        return _check_file(shared, job, path)


def _check_file(shared: Shared, job: ShardJob, path: Path) -> ShardResult:
    rel, entry = job.rel, job.entry
    sc = ShardScan(shared, rel)
    res = ShardResult(rel, sc.ops)
    if not path.is_file():
        sc.add("shard_missing", f"{rel} is listed in the manifest but absent")
        res.dead = True
        return res
    size = path.stat().st_size
    res.bytes = size
    if isinstance(entry.get("bytes"), int) and size != entry["bytes"]:
        sc.add("shard_size", f"{rel} is {size} bytes, the manifest says {entry['bytes']}")
    digest = sha256_file(path)
    sha_differs = digest != entry.get("sha256")
    if not job.full and not sha_differs:
        return res
    try:
        entries = index_tar(path, shared.max_member)
    except UnsafeTarError as e:
        sc.add("shard_unsafe", "; ".join(e.problems))
        res.dead = True
        if sha_differs:
            sc.add("shard_sha256", f"{rel} sha256 is {digest}, the manifest says {entry.get('sha256')}")
        return res

    if job.index:
        sc.rows = _slice_rows(job)
    if shared.detectors is not None:
        sc.rescan = Rescan(sc, shared.detectors, shared.models_dir)
    sc.ops.append((-1, "mark"))  # shard-level findings found after the samples go here
    changed: list[int] = []  # samples whose bytes no longer match their json / index
    keys = res.keys
    try:
        for key, group in _samples(path, entries):
            sc.i = len(keys)
            keys.append(key)
            if check_sample(sc, key, group):
                changed.append(sc.i)
    except Exception as e:  # a tar that passed the safety check but breaks mid-read
        sc.i = len(keys)
        sc.add("shard_unreadable", f"{rel} could not be read to the end after {len(keys)} samples: {e}")
    sc.i = len(keys)
    if sc.rescan is not None:
        sc.rescan.flush()
    res.scanned = True
    res.hashes = hashes(keys, shared.salt, len(keys))

    if isinstance(entry.get("samples"), int) and len(keys) != entry["samples"]:
        sc.add("shard_count", f"{rel} holds {len(keys)} samples, the manifest says {entry['samples']}", at=True)
    problem = _wds_index_problem(job.wds_index, entries)
    if problem:
        sc.add("shard_index_mismatch", f"{index_path(rel)} {problem}", at=True)
    if sha_differs:
        found = set(keys)
        expected = set(sc.rows) if sc.rows is not None else found
        sc.ops.append((sc.i, "shard_sha", digest, entry.get("sha256"), changed,
                       sorted(expected - found), sorted(found - expected)))
    return res


def _wds_index_problem(listed: str | bytes | None, entries: list[Any]) -> str | None:
    """How a shard's index file differs from the one its tar's headers give (None: equal, or no file
    to compare: a listed file that is absent is reported as file_missing)."""
    if listed is None:
        return None
    if isinstance(listed, str):
        path = Path(listed)
        if not path.is_file():
            return None
        listed = path.read_bytes()
    derived = format_index((e.name, e.offset_data, e.size) for e in entries)
    if listed == derived:
        return None
    try:
        have = parse_index(listed)
    except (ValueError, UnicodeDecodeError) as e:
        return f"is not an index file in DALI's format: {e}"
    want = parse_index(derived)
    for i, (a, b) in enumerate(zip(have, want, strict=False)):
        if a != b:
            return (f"differs from the tar at sample {i} ({b[0][3].partition('.')[0]}): the file lists "
                    f"{' '.join(f'{x[3]}@{x[1]}+{x[2]}' for x in a)}, the tar holds "
                    f"{' '.join(f'{x[3]}@{x[1]}+{x[2]}' for x in b)}")
    if len(have) != len(want):
        return f"lists {len(have)} samples, the tar holds {len(want)}"
    return "differs from the one derived from the tar (its bytes, not the members it lists)"


# ----------------------------------------------------------------------------- merging, in shard order


def _cross_shard(ctx: AuditContext, number: int, res: ShardResult) -> dict[int, list[tuple[str, str, str]]]:
    """Findings about a shard's samples that need the shards before it: (code, message, key) by sample."""
    extra: dict[int, list[tuple[str, str, str]]] = {}
    if not res.keys:
        return extra
    assert ctx.seen is not None
    h = res.hashes
    prior = ctx.seen.first_shard(res.keys, h)
    where = {i: ctx.shards[s][0] for i, s in enumerate(prior.tolist()) if s >= 0}
    if len(np.unique(h)) < len(h):  # a key twice in this shard
        met: set[int] = set()
        for i, v in enumerate(h.tolist()):
            if prior[i] < 0:
                if v in met:
                    where[i] = res.rel
                met.add(v)
    for i in sorted(where):
        key = res.keys[i]
        extra[i] = [("key_duplicate", f"key {key} also appears in {where[i]}", key)]
    first = res.keys[0]
    if ctx.prev_key is not None and first <= ctx.prev_key:
        extra.setdefault(0, []).append(
            ("sample_order", f"key {first} comes after {ctx.prev_key}; samples must be sorted by key", first))
    ctx.prev_key = res.keys[-1]
    ctx.seen.add(res.keys, h[prior < 0], number)
    return extra


def merge_shard(ctx: AuditContext, number: int, res: ShardResult) -> None:
    """Replay one shard's operations into the report, adding the cross-shard findings."""
    rel, out, report = res.rel, ctx.out, ctx.report
    report.stats.bytes += res.bytes
    if res.scanned:
        report.stats.shards_read += 1
        report.stats.samples += len(res.keys)
    else:
        ctx.dead_shards.add(rel)  # absent, unsafe or not sampled: no sample of it was seen
    extra = _cross_shard(ctx, number, res)
    pending = sorted(extra)
    p = 0
    at: int | None = None
    rows: dict[str, dict[str, Any] | None] = {}
    fired: set[int] = set()  # samples whose deferred index checks found a difference

    def row_of(key: str) -> dict[str, Any] | None:
        if key not in rows:
            assert ctx.ix is not None
            rows[key] = ctx.ix.row(key)
        return rows[key]

    for op in res.ops:
        i, kind = op[0], op[1]
        while p < len(pending) and pending[p] <= i:
            for code, msg, key in extra[pending[p]]:
                out.add(code, msg, rel, key)
            p += 1
        if kind == "add":
            _, _, code, msg, key, at_mark = op
            out.add(code, msg, rel, key, at=at if at_mark else None)
        elif kind == "over":
            out.suppress(op[2])
        elif kind == "mark":
            at = len(report.findings)
        elif kind == "row":
            row = row_of(op[2])
            if row is None:
                out.add("index_missing_key", f"no {INDEX} row for this sample", rel, op[2])
            elif row.get("shard") != rel:
                out.add("index_shard", f"{INDEX} places it in {row.get('shard')!r}", rel, op[2])
        elif kind == "sha":
            row = row_of(op[2])
            if row is not None and row.get("sha256") != op[3]:
                out.add("index_sha256", f".jpg sha256 {op[3]} but {INDEX} says {row.get('sha256')}", rel, op[2])
                fired.add(i)
        elif kind == "mismatch":
            row = row_of(op[2])
            diff = [c for c in INDEX_COMPARED if row is not None and c in row and row[c] != op[3].get(c)]
            if diff:
                out.add("index_mismatch", f"{INDEX} and json differ in {diff}", rel, op[2])
                fired.add(i)
        elif kind == "shard_sha":
            _, _, digest, want, changed_at, missing, added = op
            changed = [res.keys[j] for j in sorted({*changed_at, *fired})]
            msg = f"{rel} sha256 is {digest}, the manifest says {want}"
            parts = [f"{label}: {short(keys)}" for label, keys in (
                ("samples whose bytes differ", changed), ("samples missing", missing), ("samples added", added)) if keys]
            msg += "; " + ("; ".join(parts) if parts else "no sample differs from its json and index "
                           "(tar headers or padding changed, or a sample was rewritten consistently)")
            named = {*changed, *missing, *added}
            out.add("shard_sha256", msg, rel, next(iter(named)) if len(named) == 1 else None, at=at)
    for q in pending[p:]:
        for code, msg, key in extra[q]:
            out.add(code, msg, rel, key)


# ----------------------------------------------------------------------------- the check over all shards


def start_shard_checks(ctx: AuditContext) -> None:
    """Start the workers (ctx.runner) now, so they come up while the release files and index are read.

    With --rescan, the detectors are built here first: when they cannot be, that is one finding."""
    from passkit.audit.parallel import ShardRunner

    assert ctx.m is not None
    detectors = None
    models = str(ctx.models_dir) if ctx.models_dir is not None else None
    if ctx.rescan:
        problem = rescan_problem(ctx.m.get("detectors"), models)
        if problem:
            ctx.add("rescan_failed", problem)
        else:
            detectors = ctx.m.get("detectors")
    shared = Shared(str(ctx.root), ctx.max_member, ctx.out.limit, ctx.policy, ctx.removed, ctx.removed_sha,
                    ctx.salt, detectors, models, ctx.remote)
    ctx.runner = ShardRunner(shared, ctx.workers, ctx.executor, ctx.address)
    ctx.runner.start()


def check_shards(ctx: AuditContext) -> None:
    """Every shard the manifest lists, checked here or by workers, merged in the manifest's order."""
    import random

    assert ctx.runner is not None
    n = len(ctx.shards)
    ctx.report.stats.shards = n
    full = set(range(n))
    if ctx.sample is not None:
        k = min(n, max(1, int(np.ceil(ctx.sample * n)))) if n else 0
        full = set(random.Random(ctx.seed).sample(range(n), k))
    inline = ctx.runner.inline
    assert ctx.scratch is not None
    ctx.seen = SeenKeys(ctx.scratch / "seen", ctx.ix.records.bits if ctx.ix is not None else bits_for(_listed_samples(ctx)))

    def jobs() -> Iterator[ShardJob]:
        ix = ctx.ix
        for j, (rel, entry) in enumerate(ctx.shards):
            files: tuple[Any, ...] = ()
            skipped: tuple[int, ...] = ()
            if ix is not None and (sid := ix.shard_number(rel)) is not None:
                paths = ix.slices.get(sid, [])
                files = tuple(p.read_bytes() for p in paths) if inline else tuple(str(p) for p in paths)
                skipped = tuple(ix.skipped_in(sid).tolist())
            wds: str | bytes | None = None
            if rel in ctx.wds_indexes and (p := inside(ctx.root, ctx.wds_indexes[rel])) is not None and p.is_file():
                wds = p.read_bytes() if inline else str(p)
            yield ShardJob(rel, entry, ix is not None, files, skipped, j in full, wds)

    for number, res in enumerate(ctx.runner.run(jobs())):
        merge_shard(ctx, number, res)
        del res
        process.hand_back_freed_memory()  # results are unpickled on another thread: its arena's leftovers too
        if ctx.on_progress is not None:
            ctx.on_progress(number + 1, n)


def _listed_samples(ctx: AuditContext) -> int:
    """The samples the manifest says its shards hold (sizes the seen keys' ranges when there is no index)."""
    return sum(e["samples"] for _, e in ctx.shards if isinstance(e.get("samples"), int) and e["samples"] > 0)

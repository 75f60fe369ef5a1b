"""Release-time curation: which staged samples a release keeps, decided over the whole release.

The units decide each candidate alone; some rules need every sample at once, so they run here, as
an ordered list of rules over the staged candidates (RULES; each candidate ends in exactly one
stage, in the funnel's order):

1. ``source``          the same source id in two units (``duplicate_candidate``);
2. ``quality``         blank and single-colour images (passkit.filters.quality);
3. ``decontamination`` pHash within ``exclude_near_hamming`` of an evaluation set (``near_eval_set``);
4. ``dedup``           exact duplicates (same bytes, ``duplicate``), then near-duplicates
                       (pHash within ``near_dup_hamming``, ``near_duplicate``), first in source order stays;
5. ``creator_cap``     more than ``max_per_creator`` samples by one creator (``creator_cap``);
6. ``takedown``        removal requests from the spec (``takedown``), recorded in the manifest's removals.

A rule is one function `(kept, context)` that yields what it rejects, a bounded chunk at a time;
what it does not reject stays kept for the next rule. The memory does not grow with the release:
the staged candidates' numbers (position, hashes of key, bytes and creator, pHash, flags) are
columns on disk (spill.ColumnStore), read a chunk at a time; in memory is one byte per staged
candidate (its fate: kept, or the rule that rejected it). Rules that group equal values (repeated
source ids, exact duplicates, the creator cap) partition the kept rows by hash into buckets on disk
and sort one bucket at a time; the near-duplicate search indexes the pHashes a part at a time and
queries each part's index with the later parts. Rejections go to range files by position, for the
rejection list.

Pure: the result depends only on the ledger rows (in source order), the staged bytes and the spec.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from passkit import process, spill
from passkit.config import PipelineSpec, TakedownSpec
from passkit.records import Stage, Status
from passkit.release.ledgers import TRIM_UNITS, Ledgers
from passkit.release.tables import RowGroupWriter
from passkit.shards import index_tar
from passkit.spill import ColumnStore, Partitioned, RangeSpill, RowLookup

# Stage names in funnel order (the unit stages first, then the release stages above).
STAGE_ORDER = tuple(str(s) for s in Stage)
NEAR_DUP_MEMORY = 16 << 20  # the near-duplicate search's probe temporaries (smaller: more, smaller probes)
QUALITY_CHUNK = 512  # staged images decoded at once by the quality check of older ledgers
CHUNK_ROWS = 1 << 18  # staged rows a rule reads at once (2 MB of each 8-byte column)
BUCKET_ROWS = 1 << 18  # kept rows a grouping rule sorts at once (about 12 MB with its temporaries)
NEAR_DUP_ROWS = 1 << 19  # staged rows whose pHashes one near-duplicate index holds
PAIR_SPAN = 1 << 20  # staged rows per range file of near-duplicate pairs
REJECTION_SPAN = 1 << 20  # candidate positions per rejection range file
KEPT = -1  # the fate of a staged candidate no rule rejected

# What the first pass reads from each ledger.
SCAN_COLUMNS = ["key", "status", "sha256", "phash", "creator", "creator_url", "url", "landing_url",
                "flat_fraction", "flat_colour"]
# The numbers it writes of each staged candidate, one column file each (about 40 bytes a candidate).
# Strings are compared through 64-bit hashes (a false match, which would drop a sample as a
# duplicate, is a 1 in 10^7 event at 2 million samples).
STORE_COLUMNS = {"pos": np.int64, "key": np.uint64, "sha": np.uint64, "phash": np.uint64,
                 "creator": np.uint64, "takedown": np.int16, "blank": np.bool_}
# What it writes to the staged table of each staged candidate: for the shards (key, staging
# offsets) and the rejection details (the key a duplicate names, a blank image's verdict).
STAGED_SCHEMA = pa.schema([
    ("pos", pa.int64()), ("key", pa.string()), ("unit", pa.int32()),
    ("jpg_offset", pa.int64()), ("jpg_size", pa.int64()), ("json_offset", pa.int64()), ("json_size", pa.int64()),
    ("blank_reason", pa.string()), ("blank_detail", pa.string()),
])
# One rejection: the candidate's position and staged row, the rule (its place in RULES), and what
# its detail refers to (`ref`: the staged row it duplicates, the evaluation image or the takedown
# request; `distance`: Hamming bits). The detail text is made when the rejection is written.
REJECTION = np.dtype([("pos", "<i8"), ("row", "<i8"), ("ref", "<i8"), ("distance", "<i2"), ("rule", "i1")])
# A pair of kept pHashes within the near-duplicate threshold: the later staged row, the earlier one.
PAIR = np.dtype([("j", "<i8"), ("i", "<i8"), ("distance", "<i2")])
SOURCE_RULE = 0  # its rejections stay in source order among the units' own (see build.py)


def creator_identity(row: dict[str, Any]) -> str:
    """Who made a sample, for caps and takedowns: the creator URL when known, else the name."""
    return (row.get("creator_url") or row.get("creator") or "").strip().lower()


def takedown_matches(row: dict[str, Any], t: TakedownSpec) -> bool:
    """Whether one removal request covers a sample (key, creator name/URL, image or landing URL)."""
    if t.key and row.get("key") == t.key:
        return True
    if t.creator:
        want = t.creator.strip().lower()
        names = {(row.get("creator") or "").strip().lower(), (row.get("creator_url") or "").strip().lower()}
        if want in names:
            return True
    if t.source_url:
        want = t.source_url.strip()
        urls = {row.get("source_url"), row.get("url"), row.get("landing_url")}
        if want in urls:
            return True
    return False


class StagingError(RuntimeError):
    """A unit's staging tar lacks a sample its ledger says was kept."""


def hash64(text: str | None) -> int:
    """A string's 64-bit fingerprint; 0 only for the empty string (and None)."""
    if not text:
        return 0
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(),
                          "little") or 1


def rejections(rows: np.ndarray, pos: np.ndarray, rule: int, ref: np.ndarray | None = None,
               distance: np.ndarray | None = None) -> np.ndarray:
    """REJECTION records of staged `rows` (at candidate positions `pos`) by `rule`."""
    out = np.zeros(len(rows), REJECTION)
    out["row"], out["pos"], out["rule"] = rows, pos, rule
    out["ref"] = -1 if ref is None else ref
    if distance is not None:
        out["distance"] = distance
    return out


class Kept:
    """The staged candidates, in source order: their numbers on disk (a ColumnStore, one row each)
    and in memory each one's fate, one byte a candidate (KEPT, or the rule that rejected it)."""

    def __init__(self, store: ColumnStore):
        self.store = store
        self.fate = np.full(store.rows, KEPT, np.int8)

    def __len__(self) -> int:
        return int(np.count_nonzero(self.fate == KEPT))

    def chunks(self, columns: list[str]) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
        """(staged rows, their `columns`) of the kept candidates, CHUNK_ROWS staged rows at a time."""
        for lo, hi in spill.chunks(self.store.rows, CHUNK_ROWS):
            rows, cols = self.part(columns, lo, hi)
            if len(rows):
                yield rows, cols

    def part(self, columns: list[str], lo: int, hi: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The kept rows among staged rows lo..hi-1, and their `columns`."""
        sel = np.flatnonzero(self.fate[lo:hi] == KEPT)
        return sel + lo, {c: self.store.read(c, lo, hi)[sel] for c in columns}

    def take(self, name: str, rows: np.ndarray) -> np.ndarray:
        """Column `name` at sorted staged `rows`, read a chunk at a time."""
        out = np.empty(len(rows), self.store.dtypes[name])
        for lo, hi in spill.chunks(self.store.rows, CHUNK_ROWS):
            a, b = np.searchsorted(rows, [lo, hi])
            if b > a:
                out[a:b] = self.store.read(name, lo, hi)[rows[a:b] - lo]
        return out


@dataclass(slots=True)
class Scan:
    store: ColumnStore  # the staged candidates' numbers (STORE_COLUMNS), row for row with the staged table
    work: Path  # where the rules spill


# ----------------------------------------------------------------------------- the first pass


def scan(ledgers: Ledgers, spec: PipelineSpec, staged: Path, work: Path) -> Scan:
    """Every candidate a unit kept (after human review), in source order: its numbers to a column
    store in `work`, its key, staging offsets and quality verdict to the table `staged`.

    Reads only SCAN_COLUMNS of each ledger and the headers of the staging tars; the quality verdict
    comes from the flat fraction the image check measured, or, for ledgers older than that column,
    from decoding the image at 1/8 scale on a thread pool (Pillow releases the GIL while decoding).
    """
    rs = spec.release
    candidates = 0
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool, \
            RowGroupWriter(staged, STAGED_SCHEMA) as out, ColumnStore(work / "columns", STORE_COLUMNS) as store:
        for u in process.handing_back(ledgers.units(SCAN_COLUMNS), TRIM_UNITS):
            candidates += u.table.num_rows
            kept_mask = pc.equal(u.table.column("status"), str(Status.KEPT))
            where = np.flatnonzero(kept_mask.to_numpy(zero_copy_only=False))
            if len(where) == 0:
                continue
            rows = u.table.take(pa.array(where)).to_pylist()
            pos = where + u.start
            entries = {e.name: e for e in index_tar(u.tar)}
            located = [_locate(entries, r["key"], u.tar) for r in rows]
            verdicts = _blank_verdicts(rows, located, u.tar, rs.drop_blank, rs.blank_fraction, pool)
            takedowns = rs.takedowns
            store.append({
                "pos": pos,
                "key": np.array([hash64(r["key"]) for r in rows], dtype=np.uint64),
                "sha": np.array([hash64(r["sha256"]) for r in rows], dtype=np.uint64),
                "phash": np.array([int(r["phash"], 16) if r["phash"] else 0 for r in rows], dtype=np.uint64),
                "creator": np.array([hash64(creator_identity(r)) for r in rows], dtype=np.uint64),
                "takedown": np.array(
                    [next((i for i, t in enumerate(takedowns) if takedown_matches(r, t)), -1) for r in rows],
                    dtype=np.int16),
                "blank": np.array([bool(v) for v in verdicts], dtype=np.bool_),
            })
            out.write(pa.table({
                "pos": pos, "key": [r["key"] for r in rows], "unit": np.full(len(rows), u.index, np.int32),
                "jpg_offset": [j[0] for j, _ in located], "jpg_size": [j[1] for j, _ in located],
                "json_offset": [m[0] for _, m in located], "json_size": [m[1] for _, m in located],
                "blank_reason": [v.reason if v else None for v in verdicts],
                "blank_detail": [v.detail if v else None for v in verdicts],
            }, schema=STAGED_SCHEMA))
    ledgers.candidates = candidates
    return Scan(store, work)


def _locate(entries: dict[str, Any], key: str, tar: Path) -> tuple[tuple[int, int], tuple[int, int]]:
    out = []
    for name in (f"{key}.jpg", f"{key}.json"):
        e = entries.get(name)
        if e is None:
            raise StagingError(f"{tar} has no {name}, though its ledger kept {key}; delete this unit's "
                               ".tar and .parquet from the work folder and build again to refetch it")
        out.append((e.offset_data, e.size))
    return out[0], out[1]


def _blank_verdicts(rows: list[dict[str, Any]], located: list[Any], tar: Path, drop_blank: bool,
                    fraction: float, pool: ThreadPoolExecutor) -> list[Any]:
    from passkit.filters import quality

    if not drop_blank:
        return [None] * len(rows)
    verdicts: list[Any] = [
        quality.verdict(r["flat_fraction"], tuple(r["flat_colour"]), fraction)
        if r["flat_fraction"] is not None and r["flat_colour"] else False
        for r in rows
    ]
    old = [i for i, v in enumerate(verdicts) if v is False]
    if old:
        with open(tar, "rb") as f:
            for lo in range(0, len(old), QUALITY_CHUNK):
                part = old[lo : lo + QUALITY_CHUNK]
                chunk = []
                for i in part:
                    f.seek(located[i][0][0])
                    chunk.append(f.read(located[i][0][1]))
                for i, v in zip(part, pool.map(lambda b: quality.check_bytes(b, fraction), chunk), strict=True):
                    verdicts[i] = v
    return verdicts


# ----------------------------------------------------------------------------- the rules


@dataclass(slots=True)
class Context:
    spec: PipelineSpec
    base: Path | None
    work: Path  # where rules spill their buckets
    curation: dict[str, Any] = field(default_factory=dict)  # settings and numbers for the manifest
    eval_names: list[str] = field(default_factory=list)  # the evaluation images near_eval_set names


Rule = Callable[[Kept, Context], Iterator[np.ndarray]]
GROUP_RECORD = np.dtype([("value", "<u8"), ("row", "<i8"), ("pos", "<i8")])


def later_in_group(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For rows in order, grouped by equal `values`: each row's rank in its group (1 = first) and
    the row of its group's first."""
    n = len(values)
    small = np.int32 if n < 2**31 else np.int64  # half the temporaries
    idx = np.argsort(values, kind="stable").astype(small)  # stable: within a group, rows stay in order
    same = np.zeros(n, dtype=bool)
    if n > 1:
        sv = values[idx]
        same[1:] = sv[1:] == sv[:-1]
        del sv
    at = np.arange(n, dtype=small)
    run_start = np.maximum.accumulate(np.where(same, 0, at))
    rank = np.empty(n, dtype=small)
    rank[idx] = at - run_start + 1
    first = np.empty(n, dtype=small)
    first[idx] = idx[run_start]
    return rank, first


def groups(kept: Kept, column: str, ctx: Context, skip_zero: bool = False
           ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """The kept rows grouped by equal `column` values (0s left out with `skip_zero`), a bucket of
    groups at a time: (staged rows, positions, rank in the group in source order (1 = first), the
    staged row of the group's first).

    The rows are partitioned by value into files of about BUCKET_ROWS rows, in source order within
    each, and one bucket is sorted at a time: a group never spans buckets, so ranks are exact."""
    n = max(1, -(-len(kept) // BUCKET_ROWS))
    buckets = Partitioned(ctx.work / f"groups-{column}", GROUP_RECORD, n,
                          lambda r: (r["value"] % np.uint64(n)).astype(np.int64))
    for rows, cols in kept.chunks([column, "pos"]):
        values = cols[column]
        if skip_zero:
            nz = values != 0
            rows, values, cols["pos"] = rows[nz], values[nz], cols["pos"][nz]
        recs = np.empty(len(rows), GROUP_RECORD)
        recs["value"], recs["row"], recs["pos"] = values, rows, cols["pos"]
        buckets.add(recs)
    for i in range(n):
        recs = buckets.load(i)
        buckets.path(i).unlink(missing_ok=True)
        if len(recs):
            rank, first = later_in_group(recs["value"])
            yield recs["row"], recs["pos"], rank, recs["row"][first]
    shutil.rmtree(buckets.folder)


def source_duplicates(kept: Kept, ctx: Context) -> Iterator[np.ndarray]:
    for rows, pos, rank, _ in groups(kept, "key", ctx):
        later = rank > 1
        yield rejections(rows[later], pos[later], SOURCE_RULE)


def blank_images(kept: Kept, ctx: Context) -> Iterator[np.ndarray]:
    rs = ctx.spec.release
    if not (rs.drop_blank and len(kept)):
        return
    ctx.curation["blank_fraction"] = rs.blank_fraction
    for rows, cols in kept.chunks(["blank", "pos"]):
        hit = cols["blank"]
        yield rejections(rows[hit], cols["pos"][hit], 1)


def evaluation_sets(kept: Kept, ctx: Context) -> Iterator[np.ndarray]:
    from passkit.filters import dedup

    rs = ctx.spec.release
    if not (rs.exclude_near and len(kept)):
        return
    paths = [Path(p) if Path(p).is_absolute() else (ctx.base or Path.cwd()) / p for p in rs.exclude_near]
    ref = dedup.load_reference(paths, ctx.spec.image)
    ctx.eval_names = ref.names
    ctx.curation["exclude_near"] = {
        "sets": [str(p) for p in rs.exclude_near], "hashes": len(ref.names),
        "unreadable": len(ref.skipped), "hamming": rs.exclude_near_hamming,
    }
    for rows, cols in kept.chunks(["phash", "pos"]):
        hits = dedup.nearest_matches(cols["phash"], ref.hashes, rs.exclude_near_hamming)
        if hits:
            at = np.array(sorted(hits), dtype=np.int64)
            yield rejections(rows[at], cols["pos"][at], 2, [hits[i][0] for i in at.tolist()],
                             [hits[i][1] for i in at.tolist()])


def exact_duplicates(kept: Kept, ctx: Context) -> Iterator[np.ndarray]:
    for rows, pos, rank, first in groups(kept, "sha", ctx):
        later = rank > 1
        yield rejections(rows[later], pos[later], 3, first[later])


def near_duplicates(kept: Kept, ctx: Context) -> Iterator[np.ndarray]:
    """Greedy in source order (dedup.first_kept), over pairs found a part against a part.

    The kept pHashes are indexed NEAR_DUP_ROWS staged rows at a time: each part's index is
    searched for pairs within the part, then queried with every later part's hashes, so no more
    than two parts' hashes and one index are in memory. The pairs go to range files by their later
    row, and are decided range by range in that order, with a flag per staged row for the
    candidates already dropped."""
    from passkit.filters import dedup

    rs = ctx.spec.release
    ctx.curation["near_dup_hamming"] = rs.near_dup_hamming
    if rs.near_dup_hamming is None or not len(kept):
        return
    pairs = RangeSpill(ctx.work / "near-pairs", PAIR, "j", PAIR_SPAN, kept.store.rows)
    parts = list(spill.chunks(kept.store.rows, NEAR_DUP_ROWS))
    for a, (lo, hi) in enumerate(parts):
        rows_a, cols_a = kept.part(["phash"], lo, hi)
        index = dedup.HashIndex(cols_a.pop("phash"), rs.near_dup_hamming, budget=NEAR_DUP_MEMORY, cache=False)
        found = index.self_pairs()
        pairs.add(_pair_records(rows_a[found.base], rows_a[found.query], found.distance))
        for lo_b, hi_b in parts[a + 1 :]:
            rows_b, cols_b = kept.part(["phash"], lo_b, hi_b)
            found = index.query(cols_b["phash"])
            pairs.add(_pair_records(rows_b[found.query], rows_a[found.base], found.distance))
        del index, found
    removed = bytearray(kept.store.rows)
    for lo, hi in spill.chunks(kept.store.rows, PAIR_SPAN):
        recs = pairs.between(lo, hi)
        drop, keeper, distance = dedup.first_kept(dedup.Pairs(recs["i"], recs["j"], recs["distance"]), removed)
        if len(drop):
            yield rejections(drop, kept.take("pos", drop), 4, keeper, distance)


def _pair_records(j: np.ndarray, i: np.ndarray, distance: np.ndarray) -> np.ndarray:
    out = np.empty(len(j), PAIR)
    out["j"], out["i"], out["distance"] = j, i, distance
    return out


def creator_cap(kept: Kept, ctx: Context) -> Iterator[np.ndarray]:
    cap = ctx.spec.release.max_per_creator
    if cap is None:
        return
    ctx.curation["max_per_creator"] = cap
    for rows, pos, rank, _ in groups(kept, "creator", ctx, skip_zero=True):  # 0: no creator known
        over = rank > cap
        yield rejections(rows[over], pos[over], 5)


def takedowns(kept: Kept, ctx: Context) -> Iterator[np.ndarray]:
    if not ctx.spec.release.takedowns:
        return
    for rows, cols in kept.chunks(["takedown", "pos"]):
        hit = cols["takedown"] >= 0
        yield rejections(rows[hit], cols["pos"][hit], 6, cols["takedown"][hit])


# In the order they run; a rule's place here is its `rule` number in REJECTION, and the rejection
# list gives each rule's rejections after the units' own, in this order.
RULES: tuple[Rule, ...] = (source_duplicates, blank_images, evaluation_sets, exact_duplicates,
                           near_duplicates, creator_cap, takedowns)


class Outcome(NamedTuple):
    stage: Stage
    reason: str | None  # None: the reason comes with the rejection (the quality verdict)


OUTCOMES: tuple[Outcome, ...] = (
    Outcome(Stage.SOURCE, "duplicate_candidate"), Outcome(Stage.QUALITY, None),
    Outcome(Stage.DECONTAMINATION, "near_eval_set"), Outcome(Stage.DEDUP, "duplicate"),
    Outcome(Stage.DEDUP, "near_duplicate"), Outcome(Stage.CREATOR_CAP, "creator_cap"),
    Outcome(Stage.TAKEDOWN, "takedown"),
)
TAKEDOWN_RULE = 6


@dataclass(slots=True)
class Curated:
    fate: np.ndarray  # per staged row: KEPT, or the rule that rejected it
    rejected: RangeSpill  # REJECTION records by candidate position
    curation: dict[str, Any]
    context: Context

    @property
    def kept(self) -> int:
        return int(np.count_nonzero(self.fate == KEPT))

    def outcomes(self, recs: np.ndarray, creators: list[str | None], staged: RowLookup
                 ) -> tuple[list[str], list[str], list[str]]:
        """(stages, reasons, details) of the rejections `recs`; `creators`: their rows' creator
        names; `staged`: the staged table, for the keys duplicates name and the blank verdicts."""
        stages: list[str] = [""] * len(recs)
        reasons: list[str] = [""] * len(recs)
        details: list[str] = [""] * len(recs)
        ctx = self.context
        for rule in np.unique(recs["rule"]).tolist():
            at = np.flatnonzero(recs["rule"] == rule)
            sel = recs[at]
            refs, dist = sel["ref"].tolist(), sel["distance"].tolist()
            stage, reason = OUTCOMES[rule]
            why: list[str | None] = [reason] * len(at)
            if rule == SOURCE_RULE:
                text = ["the same source id appeared in two work units"] * len(at)
            elif rule == 1:
                verdicts = staged.take(sel["row"], ["blank_reason", "blank_detail"])
                why, text = verdicts["blank_reason"], verdicts["blank_detail"]
            elif rule == 2:
                text = [f"pHash within {d} bits of evaluation image {ctx.eval_names[r]}"
                        for r, d in zip(refs, dist, strict=True)]
            elif rule == 3:
                text = [f"same image bytes as {k}" for k in staged.take(sel["ref"], ["key"])["key"]]
            elif rule == 4:
                text = [f"near-duplicate of {k} (Hamming distance {d})"
                        for k, d in zip(staged.take(sel["ref"], ["key"])["key"], dist, strict=True)]
            elif rule == 5:
                cap = ctx.spec.release.max_per_creator
                text = [f"creator {creators[i]!r} already has {cap} samples" for i in at.tolist()]
            else:
                text = [ctx.spec.release.takedowns[r].reason for r in refs]
            for i, w, t in zip(at.tolist(), why, text, strict=True):
                stages[i], reasons[i], details[i] = str(stage), str(w), t
        return stages, reasons, details


def curate(found: Scan, spec: PipelineSpec, base: Path | None = None,
           on_rule: Callable[[int], None] | None = None) -> Curated:
    """Run RULES over the staged candidates scan() found; `base` resolves relative `exclude_near`
    paths; `on_rule(n)` after the first n rules."""
    ctx = Context(spec, base, found.work)
    kept = Kept(found.store)
    last = found.store.read("pos", found.store.rows - 1, found.store.rows)  # the last staged position, if any
    rejected = RangeSpill(found.work / "rejections", REJECTION, "pos", REJECTION_SPAN, int(last.max(initial=-1)) + 1)
    for i, rule in enumerate(RULES):
        for out in rule(kept, ctx):
            kept.fate[out["row"]] = out["rule"]
            rejected.add(out)
        if on_rule:
            on_rule(i + 1)
    process.hand_back_freed_memory()  # the near-duplicate search's working memory goes back now
    return Curated(kept.fate, rejected, ctx.curation, ctx)

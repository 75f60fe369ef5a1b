"""Release-time curation: which staged samples a release keeps, decided over the whole release.

The units decide each candidate alone; some rules need every sample at once, so they run here, as
an ordered list of rules over one columnar table of the staged candidates (RULES; each candidate
ends in exactly one stage, in the funnel's order):

1. ``source``          the same source id in two units (``duplicate_candidate``);
2. ``quality``         blank and single-colour images (passkit.filters.quality);
3. ``decontamination`` pHash within ``exclude_near_hamming`` of an evaluation set (``near_eval_set``);
4. ``dedup``           exact duplicates (same bytes, ``duplicate``), then near-duplicates
                       (pHash within ``near_dup_hamming``, ``near_duplicate``), first in source order stays;
5. ``creator_cap``     more than ``max_per_creator`` samples by one creator (``creator_cap``);
6. ``takedown``        removal requests from the spec (``takedown``), recorded in the manifest's removals.

A rule is one function `(kept, context) -> (kept, rejected)` over Arrow tables. The table holds a few
dozen bytes per staged candidate (position, key, hashes, creator, where its bytes sit): never the
ledger rows themselves, which stay on disk until the rejection list is written (see build.py).

Pure: the result depends only on the ledger rows (in source order), the staged bytes and the spec.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from passkit import process
from passkit.config import PipelineSpec, TakedownSpec
from passkit.records import Stage, Status
from passkit.release.ledgers import Ledgers
from passkit.release.tables import RowGroupWriter
from passkit.shards import index_tar

# Stage names in funnel order (the unit stages first, then the release stages above).
STAGE_ORDER = tuple(str(s) for s in Stage)
NEAR_DUP_MEMORY = 64 << 20  # the near-duplicate search's working memory (it runs slower, not bigger)
QUALITY_CHUNK = 512  # staged images decoded at once by the quality check of older ledgers

# What the first pass reads from each ledger.
SCAN_COLUMNS = ["key", "status", "sha256", "phash", "creator", "creator_url", "url", "landing_url",
                "flat_fraction", "flat_colour"]
# What it keeps in memory of each staged candidate: 8-byte numbers, about 40 bytes a candidate
# (80 MB for PASS's 2 million). Strings are compared through 64-bit hashes (a false match,
# which would drop a sample as a duplicate, is a 1 in 10^7 event at 2 million samples).
KEPT_COLUMNS = ("pos", "key", "sha", "phash", "creator", "takedown")
# What it writes to disk of each staged candidate, for the shards and the rejection details.
STAGED_SCHEMA = pa.schema([
    ("pos", pa.int64()), ("key", pa.string()), ("unit", pa.int32()),
    ("jpg_offset", pa.int64()), ("jpg_size", pa.int64()), ("json_offset", pa.int64()), ("json_size", pa.int64()),
])
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


class Kept:
    """Columns of numbers, one row per staged candidate still in the release, in source order."""

    def __init__(self, cols: dict[str, np.ndarray]):
        self.cols = cols

    def __len__(self) -> int:
        return len(self.cols["pos"])

    def __getitem__(self, name: str) -> np.ndarray:
        return self.cols[name]

    def without(self, rows: np.ndarray) -> Kept:
        """These columns without `rows`, compacted in place one column at a time: a rule that drops
        rows costs one column's copy, not the table's (so a rule reads what it rejects first)."""
        if len(rows):
            mask = np.ones(len(self), dtype=bool)
            mask[rows] = False
            for k in list(self.cols):
                self.cols[k] = self.cols[k][mask]
        return self


@dataclass(slots=True)
class Scan:
    kept: Kept
    blank: dict[int, tuple[str, str]]  # position -> (reason, detail) of blank and one-colour images


# ----------------------------------------------------------------------------- the first pass


def scan(ledgers: Ledgers, spec: PipelineSpec, staged: Path) -> Scan:
    """Every candidate a unit kept (after human review), in source order: its numbers in memory,
    its key and staging offsets written to `staged`.

    Reads only SCAN_COLUMNS of each ledger and the headers of the staging tars; the quality verdict
    comes from the flat fraction the image check measured, or, for ledgers older than that column,
    from decoding the image at 1/8 scale on a thread pool (Pillow releases the GIL while decoding).
    """
    rs = spec.release
    parts: dict[str, list[np.ndarray]] = {k: [] for k in KEPT_COLUMNS}
    blank: dict[int, tuple[str, str]] = {}
    candidates = 0
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool, \
            RowGroupWriter(staged, STAGED_SCHEMA) as out:
        for u in ledgers.units(SCAN_COLUMNS):
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
            blank.update((int(p), (v.reason, v.detail)) for p, v in zip(pos, verdicts, strict=True) if v)
            takedowns = rs.takedowns
            parts["pos"].append(pos.astype(np.int64))
            parts["key"].append(np.array([hash64(r["key"]) for r in rows], dtype=np.uint64))
            parts["sha"].append(np.array([hash64(r["sha256"]) for r in rows], dtype=np.uint64))
            parts["phash"].append(np.array([int(r["phash"], 16) if r["phash"] else 0 for r in rows], dtype=np.uint64))
            parts["creator"].append(np.array([hash64(creator_identity(r)) for r in rows], dtype=np.uint64))
            parts["takedown"].append(np.array(
                [next((i for i, t in enumerate(takedowns) if takedown_matches(r, t)), -1) for r in rows],
                dtype=np.int16))
            out.write(pa.table({
                "pos": pos, "key": [r["key"] for r in rows], "unit": np.full(len(rows), u.index, np.int32),
                "jpg_offset": [j[0] for j, _ in located], "jpg_size": [j[1] for j, _ in located],
                "json_offset": [m[0] for _, m in located], "json_size": [m[1] for _, m in located],
            }, schema=STAGED_SCHEMA))
    ledgers.candidates = candidates
    empty = {"pos": np.int64, "key": np.uint64, "sha": np.uint64, "phash": np.uint64, "creator": np.uint64,
             "takedown": np.int16}
    cols = {}
    for k in KEPT_COLUMNS:  # a column's pieces go as it is joined: one column's copy at a time
        pieces = parts.pop(k)
        cols[k] = np.concatenate(pieces) if pieces else np.zeros(0, empty[k])
        del pieces
    return Scan(Kept(cols), blank)


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
    blank: dict[int, tuple[str, str]]
    curation: dict[str, Any] = field(default_factory=dict)  # settings and numbers for the manifest
    eval_names: list[str] = field(default_factory=list)  # the evaluation images near_eval_set names


@dataclass(slots=True)
class Rejections:
    """Release rejections: which candidate (position), by which rule (its place in RULES), and
    what its detail refers to (`ref`: the earlier position it duplicates, the evaluation image or
    the takedown request; `distance`: Hamming bits). The detail text is made when the rejection is
    written (build.write_rejected), from the row and, for duplicates, the key at `ref`."""

    pos: np.ndarray
    rule: np.ndarray
    ref: np.ndarray
    distance: np.ndarray

    @classmethod
    def of(cls, pos: np.ndarray, rule: int, ref: np.ndarray | None = None,
           distance: np.ndarray | None = None) -> Rejections:
        n = len(pos)
        return cls(np.asarray(pos, np.int64), np.full(n, rule, np.int8),
                   np.full(n, -1, np.int64) if ref is None else np.asarray(ref, np.int64),
                   np.zeros(n, np.int16) if distance is None else np.asarray(distance, np.int16))

    @classmethod
    def join(cls, parts: list[Rejections]) -> Rejections:
        """All parts, sorted by position."""
        if not parts:
            return cls.of(np.zeros(0, np.int64), 0)
        pos = np.concatenate([p.pos for p in parts])
        order = np.argsort(pos, kind="stable")
        return cls(pos[order], *(np.concatenate([getattr(p, f) for p in parts])[order]
                                 for f in ("rule", "ref", "distance")))

    def __len__(self) -> int:
        return len(self.pos)


NONE = Rejections.of(np.zeros(0, np.int64), 0)
Rule = Callable[[Kept, Context], tuple[Kept, Rejections]]


def later_in_group(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For rows in order, grouped by equal `values`: each row's rank in its group (1 = first) and
    the row of its group's first."""
    n = len(values)
    small = np.int32 if n < 2**31 else np.int64  # half the temporaries at PASS scale
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


def source_duplicates(kept: Kept, ctx: Context) -> tuple[Kept, Rejections]:
    drop = np.flatnonzero(later_in_group(kept["key"])[0] > 1)
    rejected = Rejections.of(kept["pos"][drop], SOURCE_RULE)
    return kept.without(drop), rejected


def blank_images(kept: Kept, ctx: Context) -> tuple[Kept, Rejections]:
    rs = ctx.spec.release
    if not (rs.drop_blank and len(kept)):
        return kept, NONE
    ctx.curation["blank_fraction"] = rs.blank_fraction
    marked = np.array(sorted(ctx.blank), dtype=np.int64)
    drop = np.flatnonzero(np.isin(kept["pos"], marked))
    rejected = Rejections.of(kept["pos"][drop], 1)
    return kept.without(drop), rejected


def evaluation_sets(kept: Kept, ctx: Context) -> tuple[Kept, Rejections]:
    from passkit.filters import dedup

    rs = ctx.spec.release
    if not (rs.exclude_near and len(kept)):
        return kept, NONE
    paths = [Path(p) if Path(p).is_absolute() else (ctx.base or Path.cwd()) / p for p in rs.exclude_near]
    ref = dedup.load_reference(paths, ctx.spec.image)
    hits = dedup.nearest_matches(kept["phash"], ref.hashes, rs.exclude_near_hamming)
    ctx.eval_names = ref.names
    ctx.curation["exclude_near"] = {
        "sets": [str(p) for p in rs.exclude_near], "hashes": len(ref.names),
        "unreadable": len(ref.skipped), "hamming": rs.exclude_near_hamming,
    }
    drop = np.array(sorted(hits), dtype=np.int64)
    rejected = Rejections.of(kept["pos"][drop], 2, [hits[i][0] for i in drop.tolist()],
                                             [hits[i][1] for i in drop.tolist()])
    return kept.without(drop), rejected


def exact_duplicates(kept: Kept, ctx: Context) -> tuple[Kept, Rejections]:
    rank, first = later_in_group(kept["sha"])
    drop = np.flatnonzero(rank > 1)
    rejected = Rejections.of(kept["pos"][drop], 3, kept["pos"][first[drop]])
    return kept.without(drop), rejected


def near_duplicates(kept: Kept, ctx: Context) -> tuple[Kept, Rejections]:
    from passkit.filters import dedup

    rs = ctx.spec.release
    ctx.curation["near_dup_hamming"] = rs.near_dup_hamming
    if rs.near_dup_hamming is None or not len(kept):
        return kept, NONE
    near = sorted(dedup.near_duplicates(kept["phash"], rs.near_dup_hamming, budget=NEAR_DUP_MEMORY),
                  key=lambda n: n.index)
    drop = np.array([n.index for n in near], dtype=np.int64)
    keeper = np.array([n.kept for n in near], dtype=np.int64)
    rejected = Rejections.of(kept["pos"][drop], 4, kept["pos"][keeper],
                                             [n.distance for n in near])
    return kept.without(drop), rejected


def creator_cap(kept: Kept, ctx: Context) -> tuple[Kept, Rejections]:
    cap = ctx.spec.release.max_per_creator
    if cap is None:
        return kept, NONE
    ctx.curation["max_per_creator"] = cap
    rank, _ = later_in_group(kept["creator"])
    drop = np.flatnonzero((rank > cap) & (kept["creator"] != 0))  # 0: no creator known
    rejected = Rejections.of(kept["pos"][drop], 5)
    return kept.without(drop), rejected


def takedowns(kept: Kept, ctx: Context) -> tuple[Kept, Rejections]:
    if not ctx.spec.release.takedowns:
        return kept, NONE
    drop = np.flatnonzero(kept["takedown"] >= 0)
    rejected = Rejections.of(kept["pos"][drop], 6, kept["takedown"][drop])
    return kept.without(drop), rejected


# In the order they run; a rule's place here is its `rule` number in Rejections, and the rejection
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
# Rules whose detail names the key of an earlier candidate (`ref` is its position).
NAMES_EARLIER = frozenset({3, 4})


@dataclass(slots=True)
class Curated:
    kept: np.ndarray  # positions of the candidates that stay, in source order
    rejected: Rejections  # sorted by position
    curation: dict[str, Any]
    context: Context

    def outcome(self, i: int, row: dict[str, Any], earlier: dict[int, str]) -> tuple[str, str, str]:
        """(stage, reason, detail) of rejection `i`, whose ledger row is `row`; `earlier`: the keys
        at the positions duplicates refer to."""
        rule, ref, d = int(self.rejected.rule[i]), int(self.rejected.ref[i]), int(self.rejected.distance[i])
        stage, reason = OUTCOMES[rule]
        ctx = self.context
        if rule == SOURCE_RULE:
            detail = "the same source id appeared in two work units"
        elif rule == 1:
            reason, detail = ctx.blank[int(self.rejected.pos[i])]
        elif rule == 2:
            detail = f"pHash within {d} bits of evaluation image {ctx.eval_names[ref]}"
        elif rule == 3:
            detail = f"same image bytes as {earlier[ref]}"
        elif rule == 4:
            detail = f"near-duplicate of {earlier[ref]} (Hamming distance {d})"
        elif rule == 5:
            detail = f"creator {row.get('creator')!r} already has {ctx.spec.release.max_per_creator} samples"
        else:
            detail = ctx.spec.release.takedowns[ref].reason
        return str(stage), str(reason), detail


def curate(found: Scan, spec: PipelineSpec, base: Path | None = None,
           on_rule: Callable[[int], None] | None = None) -> Curated:
    """Run RULES over the staged candidates scan() found; `base` resolves relative `exclude_near`
    paths; `on_rule(n)` after the first n rules."""
    ctx = Context(spec, base, found.blank)
    kept = found.kept
    rejected: list[Rejections] = []
    for i, rule in enumerate(RULES):
        kept, out = rule(kept, ctx)
        if len(out):
            rejected.append(out)
        if on_rule:
            on_rule(i + 1)
    positions = kept["pos"]
    kept.cols = {"pos": positions}  # the other columns are done with: their memory goes now
    process.hand_back_freed_memory()
    return Curated(positions, Rejections.join(rejected), ctx.curation, ctx)

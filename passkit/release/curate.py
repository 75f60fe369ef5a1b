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

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from passkit.config import PipelineSpec, TakedownSpec
from passkit.records import Stage, Status
from passkit.release.ledgers import Ledgers
from passkit.shards import index_tar

# Stage names in funnel order (the unit stages first, then the release stages above).
STAGE_ORDER = tuple(str(s) for s in Stage)
QUALITY_CHUNK = 512  # staged images decoded at once by the quality check of older ledgers

# What the first pass reads from each ledger, and what it keeps of each staged candidate.
SCAN_COLUMNS = ["key", "status", "sha256", "phash", "creator", "creator_url", "url", "landing_url",
                "flat_fraction", "flat_colour"]
KEPT_SCHEMA = pa.schema([
    ("pos", pa.int64()),  # place in source order
    ("key", pa.string()),
    ("sha256", pa.string()),
    ("phash", pa.uint64()),
    ("identity", pa.string()),  # creator_identity()
    ("creator", pa.string()),
    ("blank_reason", pa.string()),  # the quality verdict, when the image is blank or one colour
    ("blank_detail", pa.string()),
    ("takedown", pa.int16()),  # the first spec takedown that matches, or -1
    ("unit", pa.int32()),  # where its staged bytes are: unit, and offsets in the unit's tar
    ("jpg_offset", pa.int64()),
    ("jpg_size", pa.int64()),
    ("json_offset", pa.int64()),
    ("json_size", pa.int64()),
])
# One release rejection: which candidate, by which rule (its place in RULES), and why.
REJECTION_SCHEMA = pa.schema([("pos", pa.int64()), ("rule", pa.int8()), ("stage", pa.string()),
                              ("reason", pa.string()), ("detail", pa.string())])
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


# ----------------------------------------------------------------------------- the first pass


def scan(ledgers: Ledgers, spec: PipelineSpec) -> pa.Table:
    """KEPT_SCHEMA rows of every candidate a unit kept (after human review), in source order.

    Reads only SCAN_COLUMNS of each ledger and the headers of the staging tars; the quality verdict
    comes from the flat fraction the image check measured, or, for ledgers older than that column,
    from decoding the image at 1/8 scale on a thread pool (Pillow releases the GIL while decoding).
    """
    rs = spec.release
    parts: list[pa.Table] = []
    candidates = 0
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for u in ledgers.units(SCAN_COLUMNS):
            candidates += u.table.num_rows
            kept_mask = pc.equal(u.table.column("status"), str(Status.KEPT))
            where = np.flatnonzero(kept_mask.to_numpy(zero_copy_only=False))
            if len(where) == 0:
                continue
            rows = u.table.take(pa.array(where)).to_pylist()
            entries = {e.name: e for e in index_tar(u.tar)}
            located = [_locate(entries, r["key"], u.tar) for r in rows]
            blank = _blank_verdicts(rows, located, u.tar, rs.drop_blank, rs.blank_fraction, pool)
            takedowns = rs.takedowns
            parts.append(pa.table({
                "pos": pa.array(where + u.start, pa.int64()),
                "key": [r["key"] for r in rows],
                "sha256": [r["sha256"] for r in rows],
                "phash": pa.array(_phashes(rows), pa.uint64()),
                "identity": [creator_identity(r) for r in rows],
                "creator": [r["creator"] for r in rows],
                "blank_reason": [v.reason if v else None for v in blank],
                "blank_detail": [v.detail if v else None for v in blank],
                "takedown": pa.array([next((i for i, t in enumerate(takedowns) if takedown_matches(r, t)), -1)
                                      for r in rows], pa.int16()),
                "unit": pa.array([u.index] * len(rows), pa.int32()),
                "jpg_offset": [j[0] for j, _ in located],
                "jpg_size": [j[1] for j, _ in located],
                "json_offset": [m[0] for _, m in located],
                "json_size": [m[1] for _, m in located],
            }, schema=KEPT_SCHEMA))
    ledgers.candidates = candidates
    return pa.concat_tables(parts).combine_chunks() if parts else KEPT_SCHEMA.empty_table()


def _locate(entries: dict[str, Any], key: str, tar: Path) -> tuple[tuple[int, int], tuple[int, int]]:
    out = []
    for name in (f"{key}.jpg", f"{key}.json"):
        e = entries.get(name)
        if e is None:
            raise StagingError(f"{tar} has no {name}, though its ledger kept {key}; delete this unit's "
                               ".tar and .parquet from the work folder and build again to refetch it")
        out.append((e.offset_data, e.size))
    return out[0], out[1]


def _phashes(rows: list[dict[str, Any]]) -> list[int]:
    return [int(r["phash"], 16) if r["phash"] else 0 for r in rows]


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
    curation: dict[str, Any] = field(default_factory=dict)  # settings and numbers for the manifest
    removals: list[dict[str, Any]] = field(default_factory=list)  # {key, reason, sha256}


Rule = Callable[[pa.Table, Context], tuple[pa.Table, pa.Table]]


def _split(kept: pa.Table, rule: int, stage: Stage, drop: np.ndarray, reasons: list[str] | str,
           details: list[str]) -> tuple[pa.Table, pa.Table]:
    """Kept rows at positions not in `drop` (sorted), and the rejections of those in it."""
    drop = np.asarray(drop, dtype=np.int64)
    if len(drop) == 0:
        return kept, REJECTION_SCHEMA.empty_table()
    mask = np.ones(kept.num_rows, dtype=bool)
    mask[drop] = False
    n = len(drop)
    rejected = pa.table({
        "pos": kept.column("pos").take(pa.array(drop)),
        "rule": pa.array(np.full(n, rule, dtype=np.int8)),
        "stage": pa.array([str(stage)] * n, pa.string()),
        "reason": pa.array([reasons] * n if isinstance(reasons, str) else reasons, pa.string()),
        "detail": pa.array(details, pa.string()),
    }, schema=REJECTION_SCHEMA)
    return kept.filter(pa.array(mask)), rejected


def later_in_group(values: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For rows in order, grouped by equal `values`: each row's rank in its group (1 = first), the
    row of its group's first, and the rows sorted by (value, order). Nulls form no group (rank 1)."""
    n = len(values)
    order = np.arange(n, dtype=np.int64)
    idx = pc.sort_indices(pa.table({"v": values, "i": order}),
                          sort_keys=[("v", "ascending"), ("i", "ascending")]).to_numpy()
    sorted_values = pc.take(values, pa.array(idx))
    same = np.zeros(n, dtype=bool)
    if n > 1:
        eq = pc.equal(sorted_values.slice(1), sorted_values.slice(0, n - 1))
        same[1:] = pc.fill_null(eq, False).to_numpy(zero_copy_only=False)
    run_start = np.maximum.accumulate(np.where(same, 0, np.arange(n)))
    rank = np.empty(n, dtype=np.int64)
    rank[idx] = np.arange(n) - run_start + 1
    first = np.empty(n, dtype=np.int64)
    first[idx] = idx[run_start]
    return rank, first, idx


def source_duplicates(kept: pa.Table, ctx: Context) -> tuple[pa.Table, pa.Table]:
    rank, _, _ = later_in_group(kept.column("key"))
    drop = np.flatnonzero(rank > 1)
    return _split(kept, SOURCE_RULE, Stage.SOURCE, drop, "duplicate_candidate",
                  ["the same source id appeared in two work units"] * len(drop))


def blank_images(kept: pa.Table, ctx: Context) -> tuple[pa.Table, pa.Table]:
    rs = ctx.spec.release
    if not (rs.drop_blank and kept.num_rows):
        return kept, REJECTION_SCHEMA.empty_table()
    ctx.curation["blank_fraction"] = rs.blank_fraction
    drop = np.flatnonzero(pc.is_valid(kept.column("blank_reason")).to_numpy(zero_copy_only=False))
    taken = kept.take(pa.array(drop))
    return _split(kept, 1, Stage.QUALITY, drop, taken.column("blank_reason").to_pylist(),
                  taken.column("blank_detail").to_pylist())


def evaluation_sets(kept: pa.Table, ctx: Context) -> tuple[pa.Table, pa.Table]:
    from passkit.filters import dedup

    rs = ctx.spec.release
    if not (rs.exclude_near and kept.num_rows):
        return kept, REJECTION_SCHEMA.empty_table()
    paths = [Path(p) if Path(p).is_absolute() else (ctx.base or Path.cwd()) / p for p in rs.exclude_near]
    ref = dedup.load_reference(paths, ctx.spec.image)
    hits = dedup.nearest_matches(kept.column("phash").to_numpy(), ref.hashes, rs.exclude_near_hamming)
    drop = sorted(hits)
    ctx.curation["exclude_near"] = {
        "sets": [str(p) for p in rs.exclude_near], "hashes": len(ref.names),
        "unreadable": len(ref.skipped), "hamming": rs.exclude_near_hamming,
    }
    details = [f"pHash within {hits[i][1]} bits of evaluation image {ref.names[hits[i][0]]}" for i in drop]
    return _split(kept, 2, Stage.DECONTAMINATION, np.array(drop, dtype=np.int64), "near_eval_set", details)


def exact_duplicates(kept: pa.Table, ctx: Context) -> tuple[pa.Table, pa.Table]:
    rank, first, _ = later_in_group(kept.column("sha256"))
    drop = np.flatnonzero(rank > 1)
    firsts = kept.column("key").take(pa.array(first[drop])).to_pylist()
    return _split(kept, 3, Stage.DEDUP, drop, "duplicate", [f"same image bytes as {k}" for k in firsts])


def near_duplicates(kept: pa.Table, ctx: Context) -> tuple[pa.Table, pa.Table]:
    from passkit.filters import dedup

    rs = ctx.spec.release
    ctx.curation["near_dup_hamming"] = rs.near_dup_hamming
    if rs.near_dup_hamming is None or not kept.num_rows:
        return kept, REJECTION_SCHEMA.empty_table()
    near = sorted(dedup.near_duplicates(kept.column("phash").to_numpy(), rs.near_dup_hamming),
                  key=lambda n: n.index)
    drop = np.array([n.index for n in near], dtype=np.int64)
    keys = kept.column("key").take(pa.array(np.array([n.kept for n in near], dtype=np.int64))).to_pylist()
    details = [f"near-duplicate of {k} (Hamming distance {n.distance})" for n, k in zip(near, keys, strict=True)]
    return _split(kept, 4, Stage.DEDUP, drop, "near_duplicate", details)


def creator_cap(kept: pa.Table, ctx: Context) -> tuple[pa.Table, pa.Table]:
    cap = ctx.spec.release.max_per_creator
    if cap is None:
        return kept, REJECTION_SCHEMA.empty_table()
    ctx.curation["max_per_creator"] = cap
    identity = kept.column("identity")
    rank, _, _ = later_in_group(identity)
    named = pc.not_equal(identity, "").to_numpy(zero_copy_only=False)
    drop = np.flatnonzero((rank > cap) & named)
    creators = kept.column("creator").take(pa.array(drop)).to_pylist()
    return _split(kept, 5, Stage.CREATOR_CAP, drop, "creator_cap",
                  [f"creator {c!r} already has {cap} samples" for c in creators])


def takedowns(kept: pa.Table, ctx: Context) -> tuple[pa.Table, pa.Table]:
    ts = ctx.spec.release.takedowns
    if not ts:
        return kept, REJECTION_SCHEMA.empty_table()
    drop = np.flatnonzero(pc.greater_equal(kept.column("takedown"), 0).to_numpy(zero_copy_only=False))
    taken = kept.take(pa.array(drop)).select(["key", "sha256", "takedown"]).to_pylist()
    reasons = [ts[r["takedown"]].reason for r in taken]
    ctx.removals.extend({"key": r["key"], "reason": why, "sha256": r["sha256"]}
                        for r, why in zip(taken, reasons, strict=True))
    return _split(kept, 6, Stage.TAKEDOWN, drop, "takedown", reasons)


# In the order they run; a rule's place here is its `rule` number in REJECTION_SCHEMA, and the
# rejection list gives each rule's rejections after the units' own, in this order.
RULES: tuple[Rule, ...] = (source_duplicates, blank_images, evaluation_sets, exact_duplicates,
                           near_duplicates, creator_cap, takedowns)


@dataclass(slots=True)
class Curated:
    kept: pa.Table  # KEPT_SCHEMA rows that stay, in source order
    rejected: pa.Table  # REJECTION_SCHEMA, sorted by position
    removals: list[dict[str, Any]]  # {key, reason, sha256} for the manifest
    curation: dict[str, Any]


def curate(kept: pa.Table, spec: PipelineSpec, base: Path | None = None,
           on_rule: Callable[[str, int], None] | None = None) -> Curated:
    """Run RULES over the staged candidates (scan()'s table); `base` resolves relative
    `exclude_near` paths; `on_rule(name, kept)` after each rule."""
    ctx = Context(spec, base)
    rejected: list[pa.Table] = []
    for rule in RULES:
        kept, out = rule(kept, ctx)
        if out.num_rows:
            rejected.append(out)
        if on_rule:
            on_rule(rule.__name__, kept.num_rows)
    rej = pa.concat_tables(rejected) if rejected else REJECTION_SCHEMA.empty_table()
    rej = rej.take(pc.sort_indices(rej.column("pos")))
    return Curated(kept, rej.combine_chunks(), ctx.removals, ctx.curation)

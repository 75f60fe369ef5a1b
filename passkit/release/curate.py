"""Release-time curation: which staged samples a release keeps, decided over the whole release.

The units decide each candidate alone; some rules need every sample at once, so they run here, in
this order (the funnel's order, each candidate ends in exactly one stage):

1. ``source``          the same source id in two units (``duplicate_candidate``);
2. ``quality``         blank and single-colour images (passkit.filters.quality);
3. ``decontamination`` pHash within ``exclude_near_hamming`` of an evaluation set (``near_eval_set``);
4. ``dedup``           exact duplicates (same bytes, ``duplicate``), then near-duplicates
                       (pHash within ``near_dup_hamming``, ``near_duplicate``), first in source order stays;
5. ``creator_cap``     more than ``max_per_creator`` samples by one creator (``creator_cap``);
6. ``takedown``        removal requests from the spec (``takedown``), recorded in the manifest's removals.

Pure: the result depends only on the ledger rows (in source order), the staged bytes and the spec.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from passkit.config import PipelineSpec, TakedownSpec
from passkit.records import Stage, Status

QUALITY_CHUNK = 512  # staged images held in memory at once by the quality check
# Stage names in funnel order (the unit stages first, then the release stages above).
STAGE_ORDER = tuple(str(s) for s in Stage)


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


@dataclass(slots=True)
class Curated:
    kept: list[dict[str, Any]]  # source order
    rejected: list[dict[str, Any]]  # unit rejections, then release rejections
    removals: list[dict[str, Any]]  # {key, reason, sha256} for the manifest
    curation: dict[str, Any] = field(default_factory=dict)  # settings and numbers for the manifest


def _reject(r: dict[str, Any], stage: Stage, reason: str, detail: str) -> dict[str, Any]:
    return {**r, "status": str(Status.REJECTED), "stage": str(stage), "reason": reason, "detail": detail}


def curate(
    rows: Sequence[dict[str, Any]],
    spec: PipelineSpec,
    read_jpeg: Callable[[str], bytes],
    base: Path | None = None,
    on_step: Callable[[str, int], None] | None = None,
) -> Curated:
    """Apply the release rules to ledger rows in source order; `read_jpeg(key)` gives staged bytes."""
    from passkit.filters import dedup, quality

    rs = spec.release
    rejected: list[dict[str, Any]] = []
    kept: list[dict[str, Any]] = []
    keys: set[str] = set()
    for r in rows:
        if r["status"] != Status.KEPT:
            rejected.append(r)
        elif r["key"] in keys:
            rejected.append(_reject(r, Stage.SOURCE, "duplicate_candidate",
                                    "the same source id appeared in two work units"))
        else:
            keys.add(r["key"])
            kept.append(r)
    curation: dict[str, Any] = {}

    def step(stage: Stage) -> None:
        if on_step:
            on_step(str(stage), len(kept))

    # Quality: from the flat fraction the image check measured (in the ledger); rows from ledgers
    # older than that column are decoded at 1/8 scale on a thread pool (Pillow releases the GIL
    # while decoding), their bytes read in this thread (`read_jpeg` need not be thread-safe).
    if rs.drop_blank and kept:
        def verdict(data: bytes) -> Any:
            return quality.check_bytes(data, rs.blank_fraction)

        verdicts: list[Any] = [
            quality.verdict(r["flat_fraction"], tuple(r["flat_colour"]), rs.blank_fraction)
            if r.get("flat_fraction") is not None and r.get("flat_colour") else False
            for r in kept
        ]
        old = [i for i, v in enumerate(verdicts) if v is False]
        if old:
            with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
                for lo in range(0, len(old), QUALITY_CHUNK):
                    part = old[lo : lo + QUALITY_CHUNK]
                    chunk = [read_jpeg(kept[i]["key"]) for i in part]
                    for i, v in zip(part, pool.map(verdict, chunk), strict=True):
                        verdicts[i] = v
        nxt = []
        for r, v in zip(kept, verdicts, strict=True):
            if v is None:
                nxt.append(r)
            else:
                rejected.append(_reject(r, Stage.QUALITY, v.reason, v.detail))
        kept = nxt
        curation["blank_fraction"] = rs.blank_fraction
    step(Stage.QUALITY)

    # Decontamination against evaluation sets.
    if rs.exclude_near and kept:
        paths = [Path(p) if Path(p).is_absolute() else (base or Path.cwd()) / p for p in rs.exclude_near]
        ref = dedup.load_reference(paths, spec.image)
        hits = dedup.nearest_matches([r["phash"] for r in kept], ref.hashes, rs.exclude_near_hamming)
        nxt = []
        for i, r in enumerate(kept):
            if i in hits:
                j, d = hits[i]
                rejected.append(_reject(r, Stage.DECONTAMINATION, "near_eval_set",
                                        f"pHash within {d} bits of evaluation image {ref.names[j]}"))
            else:
                nxt.append(r)
        kept = nxt
        curation["exclude_near"] = {
            "sets": [str(p) for p in rs.exclude_near], "hashes": len(ref.names),
            "unreadable": len(ref.skipped), "hamming": rs.exclude_near_hamming,
        }
    step(Stage.DECONTAMINATION)

    # Exact duplicates, then near-duplicates; the first in source order stays.
    first_by_sha: dict[str, str] = {}
    nxt = []
    for r in kept:
        if r["sha256"] in first_by_sha:
            rejected.append(_reject(r, Stage.DEDUP, "duplicate", f"same image bytes as {first_by_sha[r['sha256']]}"))
        else:
            first_by_sha[r["sha256"]] = r["key"]
            nxt.append(r)
    kept = nxt
    if rs.near_dup_hamming is not None and kept:
        near = dedup.near_duplicates([r["phash"] for r in kept], rs.near_dup_hamming)
        drop = {n.index: n for n in near}
        nxt = []
        for i, r in enumerate(kept):
            n = drop.get(i)
            if n is None:
                nxt.append(r)
            else:
                rejected.append(_reject(r, Stage.DEDUP, "near_duplicate",
                                        f"near-duplicate of {kept[n.kept]['key']} (Hamming distance {n.distance})"))
        kept = nxt
    curation["near_dup_hamming"] = rs.near_dup_hamming
    step(Stage.DEDUP)

    # Per-creator cap, first in source order.
    if rs.max_per_creator is not None:
        seen: Counter[str] = Counter()
        nxt = []
        for r in kept:
            who = creator_identity(r)
            seen[who] += 1
            if who and seen[who] > rs.max_per_creator:
                rejected.append(_reject(r, Stage.CREATOR_CAP, "creator_cap",
                                        f"creator {r.get('creator')!r} already has {rs.max_per_creator} samples"))
            else:
                nxt.append(r)
        kept = nxt
        curation["max_per_creator"] = rs.max_per_creator
    step(Stage.CREATOR_CAP)

    # Takedowns from the spec: recorded as removals so audits prove the samples stay out.
    removals: list[dict[str, Any]] = []
    if rs.takedowns:
        nxt = []
        for r in kept:
            t = next((t for t in rs.takedowns if takedown_matches(r, t)), None)
            if t is None:
                nxt.append(r)
            else:
                rejected.append(_reject(r, Stage.TAKEDOWN, "takedown", t.reason))
                removals.append({"key": r["key"], "reason": t.reason, "sha256": r["sha256"]})
        kept = nxt
    step(Stage.TAKEDOWN)
    return Curated(kept, rejected, removals, curation)

"""Staging -> release: a pure function of the unit ledgers, staging tars, policy and takedown list.

Release-wide curation (passkit.release.curate: blank images, decontamination, exact and near
duplicates, the per-creator cap, takedowns) decides what stays; samples are written sorted by key
into balanced shards, and the index, rejection list, documents (attribution files, licences,
dataset card, report) and manifest are derived from the same rows. With the same inputs (and
SOURCE_DATE_EPOCH for the manifest's date) the release is byte-identical.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from passkit.config import PipelineSpec
from passkit.ledger import DETECTORS_META, LEDGER_SCHEMA, read_ledger, unit_paths
from passkit.release import documents, manifest
from passkit.release.curate import curate
from passkit.shards import index_tar, write_tar

INDEX_FILE = "index.parquet"  # the kept samples, one row each
REJECTED_FILE = "rejected.parquet"  # every candidate that did not make it, with stage and reason
MANIFEST_FILE = "manifest.json"
INDEX_COLUMNS = [
    "key", "shard", "sha256", "phash", "width", "height", "bytes", "title", "creator", "creator_url",
    "landing_url", "source_url", "provider", "license", "license_name", "license_url", "attribution",
    "modification", "source", "source_id", "query", "scores",
]
REJECTED_COLUMNS = [
    "key", "source", "source_id", "query", "url", "stage", "reason", "detail", "transient", "scores",
    "title", "creator", "landing_url", "license_raw", "license", "sha256",
]


@dataclass(slots=True)
class ReleaseSummary:
    path: Path
    candidates: int
    kept: int
    rejected: int
    shards: int
    by_reason: dict[str, int]
    detectors: list[dict[str, Any]]
    detectors_skipped: list[dict[str, str]]
    seconds: float


def read_ledgers(units_dir: Path, indices: list[int]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """All ledger rows in source order, and the detector description the units agree on."""
    rows: list[dict[str, Any]] = []
    detectors: dict[str, Any] | None = None
    for idx in indices:
        _, ledger = unit_paths(units_dir, idx)
        table = read_ledger(ledger)
        meta = table.schema.metadata or {}
        d = json.loads(meta.get(DETECTORS_META, b'{"detectors": [], "skipped": []}'))
        if detectors is None:
            detectors = d
        elif d != detectors:
            raise RuntimeError(
                f"{ledger}: this unit was filtered with other detectors than the others "
                f"({d} vs {detectors}); remove the work folder's units/ or rerun with the same models"
            )
        rows.extend(table.to_pylist())
    return rows, detectors or {"detectors": [], "skipped": []}


class _StagingIndex:
    """Where each kept sample's members sit inside the staging tars, read by offset."""

    def __init__(self) -> None:
        self._where: dict[str, tuple[Path, int, int]] = {}
        self._files: dict[Path, Any] = {}

    def add(self, tar_path: Path) -> None:
        for m in index_tar(tar_path):
            self._where[m.name] = (tar_path, m.offset_data, m.size)

    def read(self, name: str) -> bytes:
        path, offset, size = self._where[name]
        f = self._files.get(path)
        if f is None:
            if len(self._files) > 64:
                for old in self._files.values():
                    old.close()
                self._files.clear()
            f = self._files[path] = open(path, "rb")  # noqa: SIM115 - cached handle, closed in close()
        f.seek(offset)
        return f.read(size)

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()


def balanced_sizes(n: int, shard_max: int) -> list[int]:
    """Shard sizes differing by at most one, none over shard_max."""
    if n == 0:
        return []
    k = math.ceil(n / shard_max)
    return [n // k + (1 if i < n % k else 0) for i in range(k)]


def _created() -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    ts = int(epoch) if epoch and epoch.isdigit() else int(time.time())
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def build_release(
    spec: PipelineSpec,
    units_dir: Path,
    unit_indices: list[int],
    release_dir: Path,
    source_description: dict[str, Any],
    on_shard: Callable[[int, int], None] | None = None,
    base: Path | None = None,
) -> ReleaseSummary:
    """Build `release_dir` from finished units; `base` resolves relative `exclude_near` paths."""
    t0 = time.monotonic()
    rows, det = read_ledgers(units_dir, unit_indices)
    rows, review = apply_reviews(rows, units_dir.parent)  # decisions humans made in `passkit review`
    staging = _StagingIndex()
    for idx in unit_indices:
        staging.add(unit_paths(units_dir, idx)[0])
    try:
        cur = curate(rows, spec, lambda key: staging.read(f"{key}.jpg"), base=base)
    except BaseException:
        staging.close()
        raise
    kept, rejected = cur.kept, cur.rejected
    kept.sort(key=lambda r: r["key"])

    release_dir = Path(release_dir)
    tmp = release_dir.with_name(f".{release_dir.name}.partial-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "shards").mkdir(parents=True)

    shards: list[dict[str, Any]] = []
    index_rows: list[dict[str, Any]] = []
    sizes = balanced_sizes(len(kept), spec.release.shard_max_samples)

    def members(batch: list[dict[str, Any]], rel: str) -> Iterator[tuple[str, bytes]]:
        """The batch's shard members; each sample's index row from the same JSON bytes."""
        for r in batch:
            meta_bytes = staging.read(f"{r['key']}.json")
            meta = json.loads(meta_bytes)
            index_rows.append({**{c: meta.get(c) for c in INDEX_COLUMNS}, "shard": rel,
                               "scores": sorted((meta.get("scores") or {}).items())})
            yield f"{r['key']}.jpg", staging.read(f"{r['key']}.jpg")
            yield f"{r['key']}.json", meta_bytes

    try:
        start = 0
        for s, size in enumerate(sizes):
            batch = kept[start : start + size]
            start += size
            rel = f"shards/{spec.name}-{s:06d}.tar"
            info = write_tar(tmp / rel, members(batch, rel))
            shards.append({"path": rel, "sha256": info.sha256, "bytes": info.bytes, "samples": len(batch)})
            if on_shard:
                on_shard(s + 1, len(sizes))
    finally:
        staging.close()

    _write_parquet(tmp / INDEX_FILE, index_rows, _index_schema())
    _write_parquet(
        tmp / REJECTED_FILE,
        [{c: r.get(c) for c in REJECTED_COLUMNS} for r in rejected],
        LEDGER_SCHEMA_REJECTED,
    )
    by_stage = Counter(str(r["stage"]) for r in rejected)
    by_reason = Counter(str(r["reason"]) for r in rejected)
    m = manifest.make(
        spec=spec,
        created=_created(),
        source=source_description,
        detectors=det["detectors"],
        detectors_skipped=det["skipped"],
        counts={
            "candidates": len(rows),
            "kept": len(kept),
            "rejected": len(rejected),
            "by_stage": dict(sorted(by_stage.items())),
            "by_reason": dict(sorted(by_reason.items())),
        },
        shards=shards,
        files={},
        removals=cur.removals,
    )
    m["curation"] = cur.curation
    m["review"] = review  # what humans verified (review queue and spot checks)
    rejected_rows = [{c: r.get(c) for c in REJECTED_COLUMNS} for r in rejected]
    written = documents.write_all(tmp, m, index_rows, rejected_rows)
    m["files"] = documents.file_entries(tmp, [INDEX_FILE, REJECTED_FILE, *written])
    manifest.write(tmp / MANIFEST_FILE, m)

    # Swap the finished release into place; an older build of the same version goes.
    if release_dir.exists():
        old = release_dir.with_name(f".{release_dir.name}.old-{os.getpid()}")
        os.replace(release_dir, old)
        os.replace(tmp, release_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        release_dir.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, release_dir)
    return ReleaseSummary(
        release_dir, len(rows), len(kept), len(rejected), len(shards), dict(by_reason),
        det["detectors"], det["skipped"], time.monotonic() - t0,
    )


def apply_reviews(rows: list[dict[str, Any]], work_dir: Path) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Apply the human decisions of `work_dir/review.sqlite` (passkit.review) to the ledger rows.

    A row in the people filter's review band ("review" status) is kept after a human "no person",
    rejected as people/human_review after "person", and rejected as people/pending_review while
    undecided. A kept row drawn for a spot check and marked "person" is rejected as
    people/human_review. Returns the rows and the counts the manifest records under "review".
    """
    from passkit.records import Status
    from passkit.review.store import decisions_for_release

    items, decided = decisions_for_release(work_dir)
    stats = Counter({k: 0 for k in ("queued", "verified_no_person", "confirmed_person", "pending",
                                    "spot_sampled", "spot_checked", "spot_found_person")})
    stats["spot_sampled"] = sum(1 for k in items.values() if k == "spot")
    out: list[dict[str, Any]] = []
    for r in rows:
        d = decided.get(r["key"])
        if r["status"] == Status.REVIEW:
            stats["queued"] += 1
            if d is not None and d.label == "no_person":
                stats["verified_no_person"] += 1
                r = {**r, "status": str(Status.KEPT), "stage": None, "reason": None, "detail": None}
            elif d is not None:
                stats["confirmed_person"] += 1
                r = {**r, "status": str(Status.REJECTED), "reason": "human_review",
                     "detail": f"human review: person ({r.get('detail') or ''})"}
            else:
                stats["pending"] += 1
                r = {**r, "status": str(Status.REJECTED), "reason": "pending_review",
                     "detail": f"awaiting human review (passkit review WORKDIR): {r.get('detail') or ''}"}
        elif r["status"] == Status.KEPT and d is not None and items.get(r["key"]) == "spot":
            stats["spot_checked"] += 1
            if d.label == "person":
                stats["spot_found_person"] += 1
                r = {**r, "status": str(Status.REJECTED), "stage": "people", "reason": "human_review",
                     "detail": "spot check: a human found a person"}
        out.append(r)
    return out, dict(stats)


def _index_schema() -> pa.Schema:
    ledger = {f.name: f.type for f in LEDGER_SCHEMA}
    types = {**ledger, "shard": pa.string(), "source_url": pa.string(), "modification": pa.string()}
    return pa.schema([(c, types[c]) for c in INDEX_COLUMNS])


LEDGER_SCHEMA_REJECTED = pa.schema([(c, LEDGER_SCHEMA.field(c).type) for c in REJECTED_COLUMNS])


def _write_parquet(path: Path, rows: list[dict[str, Any]], schema: pa.Schema) -> None:
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)

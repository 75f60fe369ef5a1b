"""Staging -> release: a pure function of the unit ledgers, staging tars, policy and takedown list.

Release-wide curation (passkit.release.curate: blank images, decontamination, exact and near
duplicates, the per-creator cap, takedowns) decides what stays; samples are written sorted by key
into balanced shards, and the index, rejection list, documents (attribution files, licences,
dataset card, report) and manifest are derived from the same rows. With the same inputs (and
SOURCE_DATE_EPOCH for the manifest's date) the release is byte-identical.
"""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from passkit.config import PipelineSpec
from passkit.executors.ray import ray_session
from passkit.records import Status
from passkit.release import documents, manifest
from passkit.release.curate import SOURCE_RULE, Curated, curate, scan
from passkit.release.ledgers import Ledgers, Reviews, apply_reviews
from passkit.release.shardwrite import LOCATION_COLUMNS, PARALLEL_MIN_SAMPLES, balanced_sizes, write_shards
from passkit.release.tables import (
    INDEX_COLUMNS,
    INDEX_FILE,
    INDEX_SCHEMA,
    REJECTED_COLUMNS,
    REJECTED_FILE,
    REJECTED_SCHEMA,
    RowGroupWriter,
)

# Names other modules import from here (the release's files and tables, the review rule).
__all__ = [
    "INDEX_COLUMNS", "INDEX_FILE", "MANIFEST_FILE", "REJECTED_COLUMNS", "REJECTED_FILE", "ReleaseSummary",
    "apply_reviews", "balanced_sizes", "build_release",
]

MANIFEST_FILE = "manifest.json"


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
    *,
    workers: int = 1,
    executor: str = "local",
    address: str | None = None,
    parallel_from: int = PARALLEL_MIN_SAMPLES,
) -> ReleaseSummary:
    """Build `release_dir` from finished units; `base` resolves relative `exclude_near` paths.

    Shards are written by `workers` local processes once the release has `parallel_from` samples,
    or as Ray tasks with `executor="ray"` (on the Ray already initialised, else on `address`, else
    on a local instance).
    """
    t0 = time.monotonic()
    ledgers = Ledgers(units_dir, unit_indices, Reviews.of(Path(units_dir).parent))
    det = ledgers.detectors()
    cur = curate(scan(ledgers, spec), spec, base=base)
    review = ledgers.reviews.counts()  # what humans verified (review queue and spot checks)
    kept = cur.kept.select(LOCATION_COLUMNS)
    kept = kept.take(pc.sort_indices(kept.column("key"))).combine_chunks()

    release_dir = Path(release_dir)
    tmp = release_dir.with_name(f".{release_dir.name}.partial-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "shards").mkdir(parents=True)

    by_stage, by_reason = write_rejected(ledgers, cur, tmp / REJECTED_FILE)
    shards: list[dict[str, Any]] = []
    total = len(balanced_sizes(kept.num_rows, spec.release.shard_max_samples))
    with ray_session(workers, address) if executor == "ray" else nullcontext(), \
            RowGroupWriter(tmp / INDEX_FILE, INDEX_SCHEMA) as index:
        for done in write_shards(kept, spec.release.shard_max_samples, units_dir, tmp, spec.name,
                                 workers=workers, executor=executor, parallel_from=parallel_from):
            index.write(done.index)
            shards.extend(done.shards)
            if on_shard:
                on_shard(len(shards), total)
    rejected = ledgers.candidates - kept.num_rows
    m = manifest.make(
        spec=spec,
        created=_created(),
        source=source_description,
        detectors=det["detectors"],
        detectors_skipped=det["skipped"],
        counts={
            "candidates": ledgers.candidates,
            "kept": kept.num_rows,
            "rejected": rejected,
            "by_stage": dict(sorted(by_stage.items())),
            "by_reason": dict(sorted(by_reason.items())),
        },
        shards=shards,
        files={},
        removals=cur.removals,
    )
    m["curation"] = cur.curation
    m["review"] = review
    written = _documents(tmp, m)
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
        release_dir, ledgers.candidates, kept.num_rows, rejected, len(shards), dict(by_reason),
        det["detectors"], det["skipped"], time.monotonic() - t0,
    )


def _documents(release_dir: Path, m: dict[str, Any]) -> list[str]:
    index_rows = pq.read_table(release_dir / INDEX_FILE).to_pylist()
    rejected_rows = pq.read_table(release_dir / REJECTED_FILE).to_pylist()
    return documents.write_all(release_dir, m, index_rows, rejected_rows)


def write_rejected(ledgers: Ledgers, cur: Curated, path: Path) -> tuple[Counter[str], Counter[str]]:
    """rejected.parquet: the units' rejections and the repeated source ids, in source order, then
    each release rule's rejections in RULES order (source order within a rule); returns the counts
    by stage and by reason. The ledgers are read a second time, a unit at a time, so no more than
    one unit's rows and one row group are in memory."""
    rej = cur.rejected
    pos = rej.column("pos").to_numpy()
    rules = rej.column("rule").to_numpy()
    by_stage: Counter[str] = Counter()
    by_reason: Counter[str] = Counter()
    later: dict[int, RowGroupWriter] = {}

    def count(t: pa.Table) -> pa.Table:
        for counter, col in ((by_stage, "stage"), (by_reason, "reason")):
            for v in pc.value_counts(t.column(col)).to_pylist():
                counter[str(v["values"])] += v["counts"]
        return t

    with RowGroupWriter(path, REJECTED_SCHEMA) as out:
        for u in ledgers.units([*REJECTED_COLUMNS, "status"]):
            t = u.table
            lo, hi = (int(x) for x in np.searchsorted(pos, [u.start, u.start + t.num_rows]))
            here, local, rule = rej.slice(lo, hi - lo), pos[lo:hi] - u.start, rules[lo:hi]
            take = ~pc.equal(t.column("status"), str(Status.KEPT)).to_numpy(zero_copy_only=False)
            first = rule == SOURCE_RULE
            take[local[first]] = True
            rows = np.flatnonzero(take)
            own = t.take(pa.array(rows))
            if first.any():
                own = _decided(own, np.searchsorted(rows, local[first]), here.filter(pa.array(first)))
            out.write(count(own.select(REJECTED_COLUMNS)))
            for r in (int(x) for x in np.unique(rule[~first])):
                sel = rule == r
                if r not in later:
                    later[r] = RowGroupWriter(path.with_name(f".{path.stem}-rule{r}.parquet"), REJECTED_SCHEMA)
                got = t.take(pa.array(local[sel]))
                later[r].write(_decided(got, np.arange(got.num_rows), here.filter(pa.array(sel))))
        for r in sorted(later):
            later[r].close()
            part = pq.ParquetFile(later[r].path)
            for batch in part.iter_batches():
                out.write(count(pa.Table.from_batches([batch])))
            part.close()
            later[r].path.unlink()
    return by_stage, by_reason


def _decided(t: pa.Table, at: np.ndarray, decisions: pa.Table) -> pa.Table:
    """`t` with stage, reason and detail of rows `at` replaced by the release's decisions."""
    for col in ("stage", "reason", "detail"):
        values = t.column(col).to_pylist()
        for i, v in zip(at.tolist(), decisions.column(col).to_pylist(), strict=True):
            values[i] = v
        t = t.set_column(t.schema.get_field_index(col), col, pa.array(values, pa.string()))
    return t.select(REJECTED_COLUMNS) if "status" in t.column_names else t

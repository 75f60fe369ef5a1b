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
from contextlib import closing, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from passkit import process
from passkit.config import PipelineSpec
from passkit.executors.ray import ray_session
from passkit.filters.people import measured
from passkit.parquetio import open_parquet
from passkit.records import Status
from passkit.release import documents, manifest
from passkit.release.curate import KEPT, REJECTION, RULES, SOURCE_RULE, TAKEDOWN_RULE, Curated, curate, scan
from passkit.release.keysort import sorted_by_key
from passkit.release.ledgers import TRIM_UNITS, Ledgers, Reviews, apply_reviews
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
from passkit.spill import RowLookup

# Names other modules import from here (the release's files and tables, the review rule).
__all__ = [
    "INDEX_COLUMNS", "INDEX_FILE", "MANIFEST_FILE", "REJECTED_COLUMNS", "REJECTED_FILE", "ReleaseSummary",
    "apply_reviews", "balanced_sizes", "build_release",
]

MANIFEST_FILE = "manifest.json"
STAGED_FILE = ".staged.parquet"  # the first pass's keys and staging offsets, while the release is built
CURATION_DIR = ".curation"  # the rules' columns, buckets and rejections, while the release is built
LOOKUP_ROWS = 8192  # rejections whose details are made at once (each staged row group read once)
# A rule's rejected rows while they wait for their details: the rejection list's columns and the
# rejection records.
WAITING_SCHEMA = pa.schema([*REJECTED_SCHEMA, *(pa.field(f"_{name}", pa.from_numpy_dtype(REJECTION[name]))
                                                for name in REJECTION.names)])


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
    on_step: Callable[[str, int, int], None] | None = None,
    base: Path | None = None,
    *,
    workers: int = 1,
    executor: str = "local",
    address: str | None = None,
    parallel_from: int = PARALLEL_MIN_SAMPLES,
) -> ReleaseSummary:
    """Build `release_dir` from finished units; `base` resolves relative `exclude_near` paths.

    `on_step(step, done, total)` follows the release's steps: "ledgers" and "rejections" (units
    read), "curation" (rules run), "shards" (written), "documents". Shards are written by `workers`
    local processes once the release has `parallel_from` samples, or as Ray tasks with
    `executor="ray"` (on the Ray already initialised, else on `address`, else a local instance).
    """
    t0 = time.monotonic()
    process.hand_back_freed_memory()  # what the crawl freed (the source's batches, the ledgers it read)
    ledgers = Ledgers(units_dir, unit_indices, Reviews.of(Path(units_dir).parent))
    release_dir = Path(release_dir)
    tmp = release_dir.with_name(f".{release_dir.name}.partial-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "shards").mkdir(parents=True)
    spill = tmp / STAGED_FILE  # removed before the release is moved into place, as is `work`
    work = tmp / CURATION_DIR

    step = on_step or (lambda name, done, total: None)
    ledgers.on_unit = lambda done: step("ledgers", done, len(unit_indices))
    found = scan(ledgers, spec, spill, work)
    det = ledgers.detectors  # every unit agreed on it, or the scan stopped
    cur = curate(found, spec, base=base, on_rule=lambda i: step("curation", i, len(RULES)))
    del found
    review = ledgers.reviews.counts()  # what humans verified (review queue and spot checks)
    ledgers.on_unit = lambda done: step("rejections", done, len(unit_indices))
    by_stage, by_reason, removals = write_rejected(ledgers, cur, tmp / REJECTED_FILE, spill)
    shutil.rmtree(work)
    process.hand_back_freed_memory()
    n_kept = cur.kept
    shards: list[dict[str, Any]] = []
    shard_indexes: dict[str, dict[str, Any]] = {}  # the shards' DALI index files, for manifest["files"]
    total = len(balanced_sizes(n_kept, spec.release.shard_max_samples))
    with ray_session(workers, address) if executor == "ray" else nullcontext(), \
            RowGroupWriter(tmp / INDEX_FILE, INDEX_SCHEMA) as index, \
            closing(sorted_by_key(spill, cur.fate == KEPT, LOCATION_COLUMNS, tmp / ".sort")) as ordered:
        for done in process.handing_back(write_shards(
                ordered, n_kept, spec.release.shard_max_samples, units_dir, tmp, spec.name,
                workers=workers, executor=executor, parallel_from=parallel_from)):
            index.write(done.index)
            shards.extend(done.shards)
            shard_indexes.update(done.files)
            step("shards", len(shards), total)
    spill.unlink()
    process.hand_back_freed_memory()
    rejected = ledgers.candidates - n_kept
    if sum(by_stage.values()) != rejected:  # every candidate ends once: kept, or in rejected.parquet
        raise RuntimeError(f"the release lost track of candidates: {ledgers.candidates} read, {n_kept} kept, "
                           f"{sum(by_stage.values())} rejected; please report this as a passkit bug")
    m = manifest.make(
        spec=spec,
        created=_created(),
        source=source_description,
        detectors=det["detectors"],
        detectors_skipped=det["skipped"],
        counts={
            "candidates": ledgers.candidates,
            "kept": n_kept,
            "rejected": rejected,
            "by_stage": dict(sorted(by_stage.items())),
            "by_reason": dict(sorted(by_reason.items())),
        },
        shards=shards,
        files={},
        removals=removals,
    )
    m["curation"] = cur.curation
    m["review"] = review
    m["people_measurement"] = measured.lookup(det["detectors"])
    step("documents", 0, 1)
    written = documents.write_all(tmp, m, tmp / INDEX_FILE, tmp / REJECTED_FILE)
    step("documents", 1, 1)
    m["files"] = dict(sorted({**documents.file_entries(tmp, [INDEX_FILE, REJECTED_FILE, *written]),
                              **shard_indexes}.items()))
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
        release_dir, ledgers.candidates, n_kept, rejected, len(shards), dict(by_reason),
        det["detectors"], det["skipped"], time.monotonic() - t0,
    )


def write_rejected(ledgers: Ledgers, cur: Curated, path: Path, staged: Path
                   ) -> tuple[Counter[str], Counter[str], list[dict[str, Any]]]:
    """rejected.parquet: the units' rejections and the repeated source ids, in source order, then
    each release rule's rejections in RULES order (source order within a rule); returns the counts
    by stage and by reason, and the takedown removals for the manifest.

    The ledgers are read a second time, a unit at a time, with the rules' rejections of the same
    positions (cur.rejected's range files). A rule's rows wait in a file of their own with their
    rejection records, and get their details when that file is copied to the end of the list, many
    at a time, so the keys a duplicate names are read from the staged table a row group at a time."""
    removals: list[dict[str, Any]] = []
    by_stage: Counter[str] = Counter()
    by_reason: Counter[str] = Counter()
    later: dict[int, RowGroupWriter] = {}
    lookup = RowLookup(staged)

    def count(t: pa.Table) -> pa.Table:
        for counter, col in ((by_stage, "stage"), (by_reason, "reason")):
            for v in pc.value_counts(t.column(col)).to_pylist():
                counter[str(v["values"])] += v["counts"]
        return t

    def decided(t: pa.Table, at: np.ndarray, recs: np.ndarray) -> pa.Table:
        """`t` with stage, reason and detail of rows `at` set to the outcomes of rejections `recs`."""
        values = {c: t.column(c).to_pylist() for c in ("stage", "reason", "detail")}
        creators = t.column("creator").take(pa.array(at)).to_pylist()
        for c, v in zip(("stage", "reason", "detail"), cur.outcomes(recs, creators, lookup), strict=True):
            for i, x in zip(at.tolist(), v, strict=True):
                values[c][i] = x
        takedown = np.flatnonzero(recs["rule"] == TAKEDOWN_RULE)
        if len(takedown):
            rows = t.select(["key", "sha256"]).take(pa.array(at[takedown])).to_pylist()
            removals.extend({"key": r["key"], "reason": values["detail"][i], "sha256": r["sha256"]}
                            for r, i in zip(rows, at[takedown].tolist(), strict=True))
        for c, v in values.items():
            t = t.set_column(t.schema.get_field_index(c), c, pa.array(v, pa.string()))
        return t.select(REJECTED_COLUMNS)

    with RowGroupWriter(path, REJECTED_SCHEMA) as out:
        for u in process.handing_back(ledgers.units([*REJECTED_COLUMNS, "status"]), TRIM_UNITS):
            t, start, n = u.table, u.start, u.table.num_rows
            recs = cur.rejected.between(start, start + n)
            local, rule = recs["pos"] - start, recs["rule"]
            take = ~pc.equal(t.column("status"), str(Status.KEPT)).to_numpy(zero_copy_only=False)
            first = rule == SOURCE_RULE
            take[local[first]] = True
            rows = np.flatnonzero(take)
            own = t.take(pa.array(rows))
            if first.any():
                own = decided(own, np.searchsorted(rows, local[first]), recs[first])
            out.write(count(own.select(REJECTED_COLUMNS)))
            for r in np.unique(rule[~first]).tolist():
                sel = rule == r
                if r not in later:
                    later[r] = RowGroupWriter(path.with_name(f".{path.stem}-rule{r}.parquet"), WAITING_SCHEMA,
                                              rows_per_group=LOOKUP_ROWS)
                got = t.take(pa.array(local[sel])).select(REJECTED_COLUMNS)
                for name in REJECTION.names:
                    got = got.append_column(f"_{name}", pa.array(recs[sel][name]))
                later[r].write(got)
        for r in sorted(later):
            later[r].close()
            part = open_parquet(later[r].path)
            for batch in process.handing_back(part.iter_batches(batch_size=LOOKUP_ROWS)):
                recs = np.empty(batch.num_rows, REJECTION)
                for name in REJECTION.names:
                    recs[name] = batch.column(f"_{name}").to_numpy()
                t = pa.Table.from_batches([batch]).select(REJECTED_COLUMNS)
                out.write(count(decided(t, np.arange(t.num_rows), recs)))
            part.close()
            later[r].path.unlink()
    lookup.close()
    return by_stage, by_reason, removals

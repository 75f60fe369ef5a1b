"""Writing the release's shards: in this process, on local worker processes, or as Ray tasks.

The kept samples, sorted by key, are cut into balanced shards; consecutive shards are grouped into
jobs of a few thousand samples. A job copies each sample's `.jpg` and `.json` from the staging tars
(read by offset) into its shard tars, writes each shard's index file beside it (DALI's webdataset
index, passkit.shards.wdsindex) and returns the checksums and the samples' index rows.
Jobs run anywhere the units folder and the release folder are reachable at the same paths (a Ray
cluster needs a shared filesystem, as the crawl does); results come back in job order, so the
shards, index.parquet and manifest are the same bytes whatever ran them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from passkit.executors.ordered import in_order
from passkit.ledger import unit_paths
from passkit.licenses import spdx_of
from passkit.release.tables import INDEX_COLUMNS, INDEX_SCHEMA
from passkit.shards import write_tar
from passkit.shards.wdsindex import format_index, index_path, write_index

JOB_SAMPLES = 8192  # samples per job: enough work to hide a task's overhead, little memory
PARALLEL_MIN_SAMPLES = 16_384  # below this a release is written in this process (a pool costs more)
OPEN_TARS = 64  # staging tars a job keeps open at once
LOCATION_COLUMNS = ["key", "unit", "jpg_offset", "jpg_size", "json_offset", "json_size"]


def balanced_sizes(n: int, shard_max: int) -> list[int]:
    """Shard sizes differing by at most one, none over shard_max."""
    if n == 0:
        return []
    k = math.ceil(n / shard_max)
    return [n // k + (1 if i < n % k else 0) for i in range(k)]


@dataclass(slots=True)
class Job:
    first: int  # number of its first shard
    sizes: list[int]  # samples in each of its shards
    samples: pa.Table  # LOCATION_COLUMNS of its samples, in key order


@dataclass(slots=True)
class JobResult:
    shards: list[dict[str, Any]]  # manifest entries: path, sha256, bytes, samples
    files: dict[str, dict[str, Any]]  # the shards' index files (DALI's format): manifest["files"] entries
    index: pa.Table  # INDEX_SCHEMA rows of its samples, in key order


def jobs(batches: Iterable[pa.RecordBatch], n: int, shard_max: int, job_samples: int | None = None
         ) -> Iterator[Job]:
    """`n` samples (LOCATION_COLUMNS batches, sorted by key) cut into balanced shards, grouped into
    jobs of about `job_samples`; only one job's rows are gathered at a time."""
    job_samples = job_samples or JOB_SAMPLES
    sizes = balanced_sizes(n, shard_max)
    source = iter(batches)
    buffered: list[pa.RecordBatch] = []
    have = 0
    shard = 0
    while shard < len(sizes):
        group = [sizes[shard]]
        while shard + len(group) < len(sizes) and sum(group) + sizes[shard + len(group)] <= job_samples:
            group.append(sizes[shard + len(group)])
        need = sum(group)
        while have < need:
            batch = next(source, None)
            if batch is None:
                raise RuntimeError(f"the release's samples ran out: {have} for a job of {need}")
            buffered.append(batch)
            have += batch.num_rows
        table = pa.Table.from_batches(buffered).select(LOCATION_COLUMNS).combine_chunks()
        rest = table.slice(need)
        buffered, have = rest.to_batches(), rest.num_rows
        yield Job(shard, group, table.slice(0, need))
        shard += len(group)


def shard_path(name: str, number: int) -> str:
    return f"shards/{name}-{number:06d}.tar"


def write_job(job: Job, units_dir: str, out_dir: str, name: str) -> JobResult:
    """Write one job's shards into `out_dir` (runs in a worker process or a Ray task)."""
    files: dict[int, Any] = {}
    index: dict[str, list[Any]] = {c: [] for c in INDEX_COLUMNS}

    def read(unit: int, offset: int, size: int) -> bytes:
        f = files.get(unit)
        if f is None:
            if len(files) >= OPEN_TARS:
                for old in files.values():
                    old.close()
                files.clear()
            f = files[unit] = open(unit_paths(Path(units_dir), unit)[0], "rb")  # noqa: SIM115 - closed below
        f.seek(offset)
        return f.read(size)

    rows = job.samples.to_pylist()
    shards: list[dict[str, Any]] = []
    idx_files: dict[str, dict[str, Any]] = {}
    start = 0
    try:
        for i, size in enumerate(job.sizes):
            rel = shard_path(name, job.first + i)

            def members(batch: list[dict[str, Any]], rel: str = rel) -> Iterator[tuple[str, bytes]]:
                for r in batch:
                    meta_bytes = read(r["unit"], r["json_offset"], r["json_size"])
                    meta = json.loads(meta_bytes)
                    row = {c: meta.get(c) for c in INDEX_COLUMNS}
                    row.update(shard=rel, scores=sorted((meta.get("scores") or {}).items()),
                               license_spdx=spdx_of(meta.get("license")))
                    for c in INDEX_COLUMNS:
                        index[c].append(row[c])
                    yield f"{r['key']}.jpg", read(r["unit"], r["jpg_offset"], r["jpg_size"])
                    yield f"{r['key']}.json", meta_bytes

            layout: list[tuple[str, int, int]] = []
            info = write_tar(Path(out_dir) / rel, members(rows[start : start + size]), layout)
            idx_files[index_path(rel)] = write_index(Path(out_dir) / index_path(rel), format_index(layout))
            start += size
            shards.append({"path": rel, "sha256": info.sha256, "bytes": info.bytes, "samples": size})
    finally:
        for f in files.values():
            f.close()
    return JobResult(shards, idx_files, pa.Table.from_pydict(index, schema=INDEX_SCHEMA))


def write_shards(
    kept: Iterable[pa.RecordBatch],
    n: int,
    shard_max: int,
    units_dir: Path,
    out_dir: Path,
    name: str,
    *,
    workers: int = 1,
    executor: str = "local",
    parallel_from: int = PARALLEL_MIN_SAMPLES,
) -> Iterator[JobResult]:
    """Write the shards of the `n` samples `kept` gives (LOCATION_COLUMNS batches, sorted by key);
    job results in order.

    `executor` "ray" runs each job as a Ray task (Ray must be initialised: passkit.executors.ray.
    ray_session); "local" starts `workers` processes when the release has at least `parallel_from`
    samples, and writes here otherwise.
    """
    args = (str(units_dir), str(out_dir), name)
    todo = jobs(kept, n, shard_max)
    if executor == "ray":
        import ray

        task = ray.remote(write_job).options(num_cpus=1, max_retries=3)
        yield from in_order(todo, lambda j: task.remote(j, *args), ray.get, 2 * max(workers, 1))
        return
    if workers <= 1 or n < max(parallel_from, 1):
        yield from (write_job(j, *args) for j in todo)
        return
    from passkit.executors import WorkerPool

    pool = WorkerPool(workers)
    try:
        yield from in_order(todo, lambda j: pool.executor.submit(write_job, j, *args),
                            lambda f: f.result(), 2 * workers)
    finally:
        pool.shutdown()

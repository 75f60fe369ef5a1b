"""Shard checks run here, on a pool of local processes, or as Ray tasks; results come back in order.

A shard check is a pure function of `Shared` and its `ShardJob`, so where it runs changes nothing
in the report: results are handed to the merge in the manifest's shard order, whatever order they
finish in. A few jobs per worker are in flight at a time (jobs are made lazily, results merged as
soon as their turn comes), so memory holds a handful of shards' results, never the release's.

Local workers come from a fork server where the platform has one (a fresh interpreter that forks
them), never from a fork of this process, which may hold threads; `spawn` elsewhere. The shared
part (policy, removals, limits) reaches each worker once, through the pool's initializer.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

from passkit.audit.shards import ShardJob, ShardResult, Shared, check_shard

IN_FLIGHT_PER_WORKER = 4
_SHARED: Shared | None = None  # in a local worker: the audit's Shared, set once by the initializer


class AuditExecutorError(RuntimeError):
    """The executor cannot run: Ray missing, cluster unreachable."""


def _init_worker(shared: Shared) -> None:
    global _SHARED
    _SHARED = shared


def _run(job: ShardJob) -> ShardResult:
    assert _SHARED is not None
    return check_shard(_SHARED, job)


def run_ordered(shared: Shared, jobs: Iterable[ShardJob], workers: int | None = 1, executor: str = "local",
                address: str | None = None) -> Iterator[ShardResult]:
    """check_shard over `jobs`, on `workers` processes (or Ray tasks), yielded in the jobs' order.

    One worker runs every check in this process. With Ray, `workers` caps the tasks at once
    (None: as many as the cluster has CPUs)."""
    if executor == "ray":
        yield from _ray(shared, jobs, workers, address)
    elif workers is None or workers <= 1:
        for job in jobs:
            yield check_shard(shared, job)
    else:
        yield from _local(shared, jobs, workers)


def _context() -> Any:
    from multiprocessing import get_all_start_methods, get_context

    if "forkserver" not in get_all_start_methods():
        return get_context("spawn")
    ctx = get_context("forkserver")
    ctx.set_forkserver_preload(["passkit.audit.parallel"])
    return ctx


def _local(shared: Shared, jobs: Iterable[ShardJob], workers: int) -> Iterator[ShardResult]:
    from concurrent.futures import Future, ProcessPoolExecutor

    window: deque[Future[ShardResult]] = deque()
    it = iter(jobs)
    with ProcessPoolExecutor(workers, mp_context=_context(), initializer=_init_worker, initargs=(shared,)) as pool:
        try:
            for job in it:
                window.append(pool.submit(_run, job))
                if len(window) >= IN_FLIGHT_PER_WORKER * workers:
                    yield window.popleft().result()
            while window:
                yield window.popleft().result()
        finally:
            for f in window:
                f.cancel()


def _ray(shared: Shared, jobs: Iterable[ShardJob], workers: int | None, address: str | None) -> Iterator[ShardResult]:
    try:
        import ray
    except ImportError:
        raise AuditExecutorError("--executor ray needs Ray: pip install 'passkit[ray]' (or use --workers)") from None
    started = False
    if not ray.is_initialized():
        try:
            if address:
                ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
            else:
                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
                         logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise AuditExecutorError(f"could not start Ray on {address or 'a local instance'}: {e}; check --address "
                                     "(e.g. ray://head:10001, or auto on a cluster node)") from None
        started = True
    try:
        if not workers:
            workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        task = ray.remote(check_shard).options(num_cpus=1, max_retries=3)
        shared_ref = ray.put(shared)
        window: deque[Any] = deque()
        for job in jobs:
            window.append(task.remote(shared_ref, job))
            if len(window) >= IN_FLIGHT_PER_WORKER * workers:
                yield ray.get(window.popleft())
        while window:
            yield ray.get(window.popleft())
    finally:
        if started:
            ray.shutdown()

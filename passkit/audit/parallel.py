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

from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from typing import Any

from passkit.audit.shards import ShardJob, ShardResult, Shared, check_shard
from passkit.executors.ordered import in_order

IN_FLIGHT_PER_WORKER = 4
_SHARED: Shared | None = None  # in a local worker: the audit's Shared, set once by the initializer


# The environment variables storage backends read their credentials and endpoints from.
STORE_ENV = ("AWS_", "BOTO_", "GOOGLE_", "GCSFS_", "HF_", "HUGGING_FACE_", "AZURE_", "FSSPEC_")


def _store_env() -> dict[str, str]:
    """This process's storage settings, as they are now: the fork server the workers come from may have
    started before they were set (a long-lived process, a notebook), and a worker must read the release
    with the same credentials as the audit that started it. Handed over in memory, never printed."""
    import os

    return {k: v for k, v in os.environ.items() if k.startswith(STORE_ENV)}


def _init_worker(shared: Shared, env: dict[str, str] | None = None) -> None:
    global _SHARED
    _SHARED = shared
    import os

    from passkit import process

    if env is not None:
        for k in [k for k in os.environ if k.startswith(STORE_ENV) and k not in env]:
            del os.environ[k]
        os.environ.update(env)
    process.skip_pandas_probe()


def _run(job: ShardJob) -> ShardResult:
    assert _SHARED is not None
    return check_shard(_SHARED, job)


def _ready() -> None:
    """A first task that only makes the pool start its processes."""
    from PIL import JpegImagePlugin  # noqa: F401 - imported once per worker before the first shard


class ShardRunner:
    """Where shard checks run: here, on local processes, or as Ray tasks.

    Started as soon as the manifest is read, so that workers start (and Ray comes up) while this
    process hashes the release files and reads the index; `run` then yields results in job order.
    With one local worker every check runs in this process. With Ray, `workers` caps the tasks at
    once (None: as many as the cluster has CPUs).
    """

    def __init__(self, shared: Shared, workers: int | None = 1, executor: str = "local", address: str | None = None):
        self.shared = shared
        self.workers = workers
        self.executor = executor
        self.address = address
        self.pool: Any = None
        self.ray: Any = None
        self._ray_session = ExitStack()
        self.shared_ref: Any = None
        self.starting: Any = None  # the thread starting the local workers

    @property
    def inline(self) -> bool:
        """Jobs carry their index slice as bytes, not paths: Ray workers may be on other machines."""
        return self.executor == "ray"

    def start(self) -> None:
        if self.executor == "ray":
            self._start_ray()
        elif self.workers is not None and self.workers > 1:
            import threading
            from concurrent.futures import ProcessPoolExecutor

            env = _store_env() if self.shared.remote is not None else None
            self.pool = ProcessPoolExecutor(self.workers, mp_context=_context(), initializer=_init_worker,
                                            initargs=(self.shared, env))
            # starting a process waits for the fork server's imports: wait in a thread, not here
            self.starting = threading.Thread(target=self._warm, daemon=True)
            self.starting.start()

    def _warm(self) -> None:
        for _ in range(self.workers or 1):
            self.pool.submit(_ready)

    def _start_ray(self) -> None:
        from passkit.executors.ray import ray_session

        self.ray = self._ray_session.enter_context(ray_session(self.workers, self.address))
        if not self.workers:
            self.workers = max(1, int(self.ray.cluster_resources().get("CPU", 1)))
        self.shared_ref = self.ray.put(self.shared)

    def run(self, jobs: Iterable[ShardJob]) -> Iterator[ShardResult]:
        """check_shard over `jobs`, a few per worker in flight, yielded in the jobs' order."""
        if self.ray is not None:
            yield from self._run_ray(jobs)
        elif self.pool is not None:
            yield from self._run_local(jobs)
        else:
            for job in jobs:
                yield check_shard(self.shared, job)

    def _run_local(self, jobs: Iterable[ShardJob]) -> Iterator[ShardResult]:
        if self.starting is not None:
            self.starting.join()
        yield from in_order(jobs, lambda j: self.pool.submit(_run, j), lambda f: f.result(),
                            IN_FLIGHT_PER_WORKER * self.workers)

    def _run_ray(self, jobs: Iterable[ShardJob]) -> Iterator[ShardResult]:
        task = self.ray.remote(check_shard).options(num_cpus=1, max_retries=3)
        yield from in_order(jobs, lambda j: task.remote(self.shared_ref, j), self.ray.get,
                            IN_FLIGHT_PER_WORKER * self.workers)

    def close(self) -> None:
        if self.starting is not None:
            self.starting.join()
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
        self._ray_session.close()  # shuts down the Ray this audit started, if it started one


def _context() -> Any:
    from multiprocessing import get_all_start_methods, get_context

    if "forkserver" not in get_all_start_methods():
        return get_context("spawn")
    ctx = get_context("forkserver")
    ctx.set_forkserver_preload(["passkit.audit.parallel", "PIL.JpegImagePlugin", "pyarrow.ipc"])
    return ctx

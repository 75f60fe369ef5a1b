"""The default executor: a pool of worker processes on this machine, one UnitRunner each.

Workers are spawned (not forked): forking a process that already holds torch or HTTP pools
can deadlock. Units are submitted lazily, a few per worker, so a source of millions of rows
never sits in memory at once.

A spawned worker spends about half a second importing the pipeline (pyarrow, OpenCV, Pillow,
urllib3). `WorkerPool` can be started before the parent imports any of that (the CLI does it
right after reading the spec), so the two imports overlap; this module imports nothing heavy
for that reason, and the spec reaches the workers with each unit rather than at start-up.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, as_completed, wait
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from passkit.config import PipelineSpec
    from passkit.pipeline import Unit, UnitResult, UnitRunner

_RUNNERS: dict[str, UnitRunner] = {}  # per worker process, by spec digest


def _init_worker(threads: int) -> None:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    import cv2

    cv2.setNumThreads(threads)
    import passkit.pipeline  # noqa: F401 - the import is the point: it overlaps the parent's


def _ready() -> int:
    return os.getpid()


def _spec_digest(spec_data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec_data, sort_keys=True).encode()).hexdigest()


def _run(spec_data: dict[str, Any], digest: str, workers: int, unit: Unit, units_dir: str) -> UnitResult:
    runner = _RUNNERS.get(digest)
    if runner is None:
        from passkit.config import PipelineSpec
        from passkit.pipeline import UnitRunner

        runner = _RUNNERS[digest] = UnitRunner(PipelineSpec.model_validate(spec_data), workers=workers)
    return runner.run(unit, Path(units_dir))


class WorkerPool:
    """`workers` spawned processes, starting (and importing the pipeline) from construction on."""

    def __init__(self, workers: int):
        self.workers = workers
        self.closed = False
        threads = max(1, (os.cpu_count() or 1) // workers)
        self.executor = ProcessPoolExecutor(
            max_workers=workers, mp_context=get_context("spawn"), initializer=_init_worker, initargs=(threads,),
        )
        for _ in range(workers):  # each submit with no idle worker spawns one process now
            self.executor.submit(_ready)

    def close(self, wait: bool = True) -> None:
        """Stop the workers; `wait=False` lets them exit while this process goes on (the
        release step needs nothing more from them). Closing twice is harmless."""
        if not self.closed:
            self.closed = True
            self.executor.shutdown(wait=wait, cancel_futures=True)


def run_local(
    units: Iterable[Unit],
    spec: PipelineSpec,
    units_dir: Path,
    workers: int,
    on_result: Callable[[UnitResult], None],
    pool: WorkerPool | None = None,
) -> None:
    """Run every unit; `on_result` is called in this process as each one finishes.

    `pool`: processes started earlier for this build (see WorkerPool); used and closed here."""
    if workers <= 1 and pool is None:
        from passkit.pipeline import UnitRunner

        runner = UnitRunner(spec)
        for unit in units:
            on_result(runner.run(unit, units_dir))
        return
    if pool is None or pool.workers != workers:
        if pool is not None:
            pool.close()
        pool = WorkerPool(workers)
    spec_data = spec.canonical()
    digest = _spec_digest(spec_data)
    try:
        pending: set[Future[UnitResult]] = set()
        for unit in units:
            pending.add(pool.executor.submit(_run, spec_data, digest, workers, unit, str(units_dir)))
            if len(pending) >= 2 * workers:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    on_result(f.result())
        for f in as_completed(pending):
            on_result(f.result())
    except BaseException:
        pool.close()
        raise
    pool.close(wait=False)  # every unit is done: the workers' exit overlaps the release

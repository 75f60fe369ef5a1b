"""The default executor: a pool of worker processes on this machine, one UnitRunner each.

Workers come from a fork server, never from a fork of this process: forking a process that
already holds threads, torch or HTTP pools can deadlock. The fork server is a fresh, single-threaded
interpreter that imports the pipeline once (pyarrow, OpenCV, Pillow, urllib3: half a second) and
forks every worker from there, so workers start with it imported instead of each importing it
again (spawn, where there is no fork server). `WorkerPool` can be started before this process
imports any of that (the CLI does it right after reading the spec), so the imports overlap; this
module imports nothing heavy for that reason, and the spec reaches the workers with each unit.
Units are submitted lazily, a few per worker, so a source of millions of rows never sits in
memory at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, as_completed, wait
from multiprocessing import forkserver, get_all_start_methods, get_context
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from passkit.config import PipelineSpec
    from passkit.ledger import UnitResult
    from passkit.pipeline import Unit

_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_PRELOAD = ["passkit.executors.local", "passkit.pipeline"]


def _init_worker(threads: int) -> None:
    for var in _THREAD_VARS:
        os.environ[var] = str(threads)
    import cv2

    cv2.setNumThreads(threads)
    import passkit.pipeline  # noqa: F401 - spawned workers import here, while the parent does too


def _ready() -> int:
    return os.getpid()


def _run(spec_data: dict[str, Any], workers: int, unit: Unit, units_dir: str) -> UnitResult:
    from passkit.pipeline import runner_for

    return runner_for(spec_data, workers).run(unit, Path(units_dir))


def _fork_server_pid() -> int | None:
    return getattr(getattr(forkserver, "_forkserver", None), "_forkserver_pid", None)


def _context(threads: int) -> BaseContext:
    """The fork server's context, its server started (importing the pipeline in the background)
    if it is not running yet; plain spawn where the platform has no fork server."""
    if "forkserver" not in get_all_start_methods():
        return get_context("spawn")
    ctx = get_context("forkserver")
    ctx.set_forkserver_preload(_PRELOAD)
    # Thread-pool sizes of the numeric libraries are read when they load, in the server: set them
    # for its start only, so this process's own environment is left as it was.
    saved = {var: os.environ.get(var) for var in _THREAD_VARS}
    os.environ.update({var: str(threads) for var in _THREAD_VARS})
    try:
        forkserver.ensure_running()
    finally:
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
    return ctx


class WorkerPool:
    """`workers` worker processes for one build: forked from the fork server (started here, if it
    is not running, importing the pipeline from then on), or spawned and importing it themselves."""

    def __init__(self, workers: int):
        self.workers = workers
        self.closed = False
        threads = max(1, (os.cpu_count() or 1) // workers)
        had_server = _fork_server_pid() is not None
        ctx = _context(threads)
        self.own_server = not had_server and _fork_server_pid() is not None
        self.executor = ProcessPoolExecutor(
            max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(threads,),
        )
        if ctx.get_start_method() == "spawn":  # a fork server imports for all; spawned workers each
            for _ in range(workers):  # import, so start them now: each submit spawns one process
                self.executor.submit(_ready)

    def shutdown(self) -> None:
        """Wait for the workers to exit, then stop the fork server if this pool started it (a
        command's last step: no process outlives it, and its CPU time is accounted to it)."""
        self.closed = True
        self.executor.shutdown(wait=True, cancel_futures=True)
        if self.own_server:
            stop = getattr(getattr(forkserver, "_forkserver", None), "_stop", None)
            if stop is not None:
                stop()
            self.own_server = False

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
    try:
        pending: set[Future[UnitResult]] = set()
        for unit in units:
            pending.add(pool.executor.submit(_run, spec_data, workers, unit, str(units_dir)))
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

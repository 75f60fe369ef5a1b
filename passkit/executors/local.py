"""The default executor: a pool of worker processes on this machine, one UnitRunner each.

Workers are spawned (not forked): forking a process that already holds torch or HTTP pools
can deadlock. Units are submitted lazily, a few per worker, so a source of millions of rows
never sits in memory at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from passkit.config import PipelineSpec
from passkit.pipeline import Unit, UnitResult, UnitRunner

_RUNNER: UnitRunner | None = None


def _init_worker(spec_data: dict[str, Any], threads: int, workers: int) -> None:
    global _RUNNER
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    import cv2

    cv2.setNumThreads(threads)
    _RUNNER = UnitRunner(PipelineSpec.model_validate(spec_data), workers=workers)


def _run(unit: Unit, units_dir: str) -> UnitResult:
    assert _RUNNER is not None, "worker not initialised"
    return _RUNNER.run(unit, Path(units_dir))


def run_local(
    units: Iterable[Unit],
    spec: PipelineSpec,
    units_dir: Path,
    workers: int,
    on_result: Callable[[UnitResult], None],
) -> None:
    """Run every unit; `on_result` is called in this process as each one finishes."""
    if workers <= 1:
        runner = UnitRunner(spec)
        for unit in units:
            on_result(runner.run(unit, units_dir))
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=_init_worker,
        initargs=(spec.canonical(), threads, workers),
    ) as pool:
        pending: set[Future[UnitResult]] = set()
        for unit in units:
            pending.add(pool.submit(_run, unit, str(units_dir)))
            if len(pending) >= 2 * workers:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    on_result(f.result())
        for f in pending:
            on_result(f.result())

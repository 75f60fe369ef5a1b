"""The Ray executor: one Ray task per work unit, on this machine or on a Ray cluster.

A unit is a pure function of its candidates and the spec, and its files appear atomically, so a
task that Ray retries after a lost worker, or that runs twice, writes the same bytes. Each Ray
worker process keeps one UnitRunner per spec (detectors and HTTP pools are built once, not per
unit). When the cluster has GPUs and the people filter is on, each task asks for a share of a GPU
(`work.gpu_per_unit`) and its detectors run on CUDA there; without GPUs everything runs on CPUs.

The work folder must be reachable at the same path from every node (a shared filesystem), since
tasks write their staging tar and ledger straight into it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from passkit.config import PipelineSpec
    from passkit.ledger import UnitResult
    from passkit.pipeline import Unit


class ExecutorError(RuntimeError):
    """The executor cannot run: missing package, unreachable cluster."""


def _run_unit(spec_data: dict[str, Any], workers: int, unit: Unit, units_dir: str) -> UnitResult:
    """The body of one Ray task (runs in a Ray worker process)."""
    import ray

    from passkit.pipeline import runner_for

    # "auto", not "cuda": a GPU worker whose onnxruntime or OpenCV has no CUDA still runs those
    # detectors, on its CPUs, instead of failing the unit.
    device = "auto" if ray.get_gpu_ids() else None
    return runner_for(spec_data, workers, device).run(unit, Path(units_dir))


@contextmanager
def ray_session(workers: int | None, address: str | None = None) -> Iterator[Any]:
    """Ray, initialised for the block: an already initialised Ray (a test, a notebook, an outer
    block) is used as it is; else `address` (a cluster) is joined, or a local instance with
    `workers` CPUs (None: all) is started, and shut down again at the end of the block."""
    try:
        import ray
    except ImportError:
        raise ExecutorError(
            "the ray executor needs Ray: pip install 'passkit[ray]' (or use --executor local)"
        ) from None
    if ray.is_initialized():
        yield ray
        return
    try:
        if address:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        else:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = address or "a local instance"
        raise ExecutorError(f"could not start Ray on {where}: {e}; check --address "
                            "(e.g. ray://head:10001, or auto on a cluster node)") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def run_ray(
    units: Iterable[Unit],
    spec: PipelineSpec,
    units_dir: Path,
    workers: int,
    on_result: Callable[[UnitResult], None],
    address: str | None = None,
) -> None:
    """Run every unit as a Ray task, at most `workers` at once; `on_result` runs here as each ends.

    With no Ray running and no `address`, a local Ray instance with `workers` CPUs is started and
    stopped again at the end; an already initialised Ray (a test, a notebook) is used as it is.
    """
    with ray_session(workers, address) as ray:
        options: dict[str, Any] = {"num_cpus": 1, "max_retries": 3}
        if spec.people.enabled and ray.cluster_resources().get("GPU", 0) > 0:
            options["num_gpus"] = spec.work.gpu_per_unit
        task = ray.remote(_run_unit).options(**options)
        spec_ref = ray.put(spec.canonical())
        pending: list[Any] = []
        for unit in units:
            pending.append(task.remote(spec_ref, workers, unit, str(units_dir)))
            while len(pending) >= 2 * workers:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    on_result(ray.get(ref))
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                on_result(ray.get(ref))

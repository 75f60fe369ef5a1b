"""A whole build: source -> work units on an executor -> release.

Resumable by construction: finished units (ledger present, fingerprint unchanged) are skipped,
so rerunning after a crash redoes at most the units that were in flight. A source that grew gets
new units for its new candidates; a unit whose candidate list changed keeps the outcomes of the
candidates it already had (see UnitRunner._previous). `retry_failed` reruns, in finished units, only
the candidates that ended in a transient failure (timeouts, 5xx, 429, resets), then rebuilds the
release. Timings go to <work dir>/stats.json and the CLI, never into the release.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from passkit import jpeg_planes, process
from passkit.config import InputError, PipelineSpec, WorkSpec, check_field
from passkit.executors import WorkerPool, run_local, run_ray
from passkit.executors.ray import ray_session
from passkit.ledger import (
    LEFTOVER_GLOB,
    UnitResult,
    ledger_transient,
    summarize_ledger,
    unit_done,
    unit_paths,
)
from passkit.pipeline import Unit, stage_settings
from passkit.records import scrub_unencodable
from passkit.release.build import ReleaseSummary, build_release
from passkit.sources import open_source


@dataclass(slots=True)
class BuildProgress:
    """Running totals, updated as units finish; the CLI renders them."""

    units_done: int = 0
    units_skipped: int = 0
    units_retried: int = 0
    candidates: int = 0
    kept: int = 0
    fetched: int = 0  # candidates downloaded by this run (resumed and reused ones excluded)
    transient: int = 0  # candidates that ended in a transient failure (see --retry-failed)
    reasons: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)

    def add(self, r: UnitResult, retried: bool = False) -> None:
        self.units_done += 1
        self.units_skipped += int(r.skipped)
        self.units_retried += int(retried)
        self.candidates += r.candidates
        self.kept += r.kept
        self.fetched += r.fetched
        self.transient += r.transient
        self.reasons.update(r.reasons)

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    @property
    def images_per_second(self) -> float:
        """Downloads this run finished per second (what the crawler does, resumed units excluded)."""
        return self.fetched / max(self.seconds, 1e-9)

    @property
    def success_rate(self) -> float:
        """Share of candidates kept so far."""
        return self.kept / self.candidates if self.candidates else 0.0

    def top_failures(self, n: int = 3) -> list[tuple[str, int]]:
        return [(k.split(":", 1)[-1], v) for k, v in self.reasons.most_common(n)]

    def to_dict(self) -> dict[str, object]:
        return {
            "units": self.units_done, "units_resumed": self.units_skipped, "units_retried": self.units_retried,
            "candidates": self.candidates, "kept": self.kept, "fetched": self.fetched,
            "transient": self.transient, "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_per_second, 2),
            "reasons": dict(sorted(self.reasons.items())),
        }


@dataclass(slots=True)
class BuildResult:
    release: ReleaseSummary
    progress: BuildProgress
    work_dir: Path
    seconds: float


def _units(candidates: Iterator, size: int) -> Iterator[Unit]:
    for i in itertools.count():
        chunk = [scrub_unencodable(c) for c in itertools.islice(candidates, size)]
        if not chunk:
            return
        yield Unit(i, chunk)


def _clean_leftovers(units_dir: Path, release_dir: Path) -> None:
    """Remove what a killed run left half-written: temp files beside units, partial releases."""
    for tmp in units_dir.glob(LEFTOVER_GLOB):
        tmp.unlink(missing_ok=True)
    if release_dir.parent.is_dir():
        for pattern in (f".{release_dir.name}.partial-*", f".{release_dir.name}.old-*"):
            for d in release_dir.parent.glob(pattern):
                shutil.rmtree(d, ignore_errors=True)


def _in_the_way(path: Path) -> Path | None:
    """The file that stands where `path` or one of its parent folders should be, if any."""
    for p in (path, *path.parents):
        if p.exists() and not p.is_dir():
            return p
    return None


def usable_folder(path: Path, what: str, fix: str) -> None:
    """Create `path` if needed and prove a file can be written in it, or raise an InputError naming
    the folder, why, and `fix`. Run before the crawl, so a bad folder costs seconds, not the crawl."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".passkit-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        blocker = _in_the_way(path)
        why = f"{blocker} is a file, not a folder" if blocker else (e.strerror or type(e).__name__)
        raise InputError(f"the {what} {path} cannot be used: {why}; {fix}") from None


def build(
    spec: PipelineSpec,
    base: Path | None = None,
    workers: int | None = None,
    on_unit: Callable[[BuildProgress, UnitResult], None] | None = None,
    on_step: Callable[[str, int, int], None] | None = None,
    executor: str | None = None,
    address: str | None = None,
    retry_failed: bool = False,
    pool: WorkerPool | None = None,
) -> BuildResult:
    """Build the release a spec describes, resuming whatever an earlier run finished.

    `executor` ("local" or "ray") and `address` (a Ray cluster) default to the spec's work section;
    `retry_failed` refetches the transient failures of finished units; `pool`: local worker
    processes the caller started early (see WorkerPool), used and closed by this build.
    """
    t0 = time.monotonic()
    if workers is not None:  # the spec's own bounds: a count it would refuse is refused here too
        check_field(WorkSpec, "workers", workers, "workers")
    work_dir = spec.work_dir(base)
    units_dir = work_dir / "units"
    release_dir = spec.release_dir(base)
    # Both folders are checked now: the release folder is only written after the crawl.
    usable_folder(units_dir, "work folder", "set work.dir in the spec to a folder you can write")
    if release_dir.exists() and not release_dir.is_dir():
        raise InputError(f"the release folder {release_dir} is a file; move it away or set release.dir "
                         "in the spec to another folder")
    usable_folder(release_dir.parent, "release folder", "set release.dir in the spec to a folder you can write")
    _clean_leftovers(units_dir, release_dir)
    executor = executor or spec.work.executor
    if executor not in ("local", "ray"):
        raise ValueError(f"unknown executor {executor!r}; use local or ray")
    n_workers = workers if workers is not None else spec.work.workers
    (work_dir / "spec.json").write_text(json.dumps(spec.canonical(), indent=2, sort_keys=True) + "\n")
    settings = stage_settings(spec)
    progress = BuildProgress()
    indices: list[int] = []

    retrying: set[int] = set()

    def done(r: UnitResult) -> None:
        progress.add(r, retried=r.index in retrying)
        if on_unit:
            on_unit(progress, r)

    process.warm_release_imports(spec.people.enabled)
    address = address or spec.work.ray_address
    # One Ray session for the crawl and the release's shards (starting Ray takes seconds).
    with ray_session(n_workers, address) if executor == "ray" else nullcontext():
        with open_source(spec.source) as src:
            source_description = src.describe()

            def todo() -> Iterator[Unit]:
                for unit in _units(iter(src.candidates()), spec.work.unit_size):
                    indices.append(unit.index)
                    if unit_done(units_dir, unit, settings):
                        ledger = unit_paths(units_dir, unit.index)[1]
                        if retry_failed and ledger_transient(ledger):
                            unit.retry = True
                            retrying.add(unit.index)
                            yield unit
                            continue
                        done(summarize_ledger(ledger))
                        continue
                    yield unit

            try:
                if executor == "ray":
                    run_ray(todo(), spec, units_dir, n_workers, done, address=address)
                else:
                    run_local(todo(), spec, units_dir, n_workers, done, pool=pool)
            finally:
                if pool is not None:
                    pool.close()

        release = build_release(
            spec, units_dir, sorted(indices), spec.release_dir(base), source_description, on_step=on_step,
            workers=n_workers, executor=executor, address=address,
        )
    seconds = time.monotonic() - t0
    stats = {**progress.to_dict(), "executor": executor, "workers": n_workers, "retry_failed": retry_failed,
             "total_seconds": round(seconds, 3), "release_seconds": round(release.seconds, 3),
             # the image check's planar JPEG path (people filter off): which libturbojpeg, if any
             "jpeg_planes": jpeg_planes.library() if not spec.people.enabled else None}
    (work_dir / "stats.json").write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n")
    return BuildResult(release, progress, work_dir, seconds)

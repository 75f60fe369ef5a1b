"""A whole build: source -> work units on an executor -> release.

Resumable by construction: finished units (ledger present, fingerprint unchanged) are skipped,
so rerunning after a crash redoes at most the units that were in flight.
"""

from __future__ import annotations

import itertools
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from passkit.config import PipelineSpec
from passkit.executors import run_local
from passkit.pipeline import Unit, UnitResult, stage_settings, summarize_ledger, unit_done
from passkit.release.build import ReleaseSummary, build_release
from passkit.sources import open_source


@dataclass(slots=True)
class BuildProgress:
    """Running totals, updated as units finish; the CLI renders them."""

    units_done: int = 0
    units_skipped: int = 0
    candidates: int = 0
    kept: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)

    def add(self, r: UnitResult) -> None:
        self.units_done += 1
        self.units_skipped += int(r.skipped)
        self.candidates += r.candidates
        self.kept += r.kept
        self.reasons.update(r.reasons)

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started


@dataclass(slots=True)
class BuildResult:
    release: ReleaseSummary
    progress: BuildProgress
    work_dir: Path
    seconds: float


def _units(candidates: Iterator, size: int) -> Iterator[Unit]:
    for i in itertools.count():
        chunk = list(itertools.islice(candidates, size))
        if not chunk:
            return
        yield Unit(i, chunk)


def build(
    spec: PipelineSpec,
    base: Path | None = None,
    workers: int | None = None,
    on_unit: Callable[[BuildProgress, UnitResult], None] | None = None,
    on_shard: Callable[[int, int], None] | None = None,
) -> BuildResult:
    t0 = time.monotonic()
    work_dir = spec.work_dir(base)
    units_dir = work_dir / "units"
    units_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "spec.json").write_text(json.dumps(spec.canonical(), indent=2, sort_keys=True) + "\n")
    settings = stage_settings(spec)
    progress = BuildProgress()
    indices: list[int] = []

    def done(r: UnitResult) -> None:
        progress.add(r)
        if on_unit:
            on_unit(progress, r)

    with open_source(spec.source) as src:
        source_description = src.describe()

        def todo() -> Iterator[Unit]:
            for unit in _units(iter(src.candidates()), spec.work.unit_size):
                indices.append(unit.index)
                if unit_done(units_dir, unit, settings):
                    done(summarize_ledger(units_dir / f"{unit.name}.parquet"))
                    continue
                yield unit

        run_local(todo(), spec, units_dir, workers or spec.work.workers, done)

    release = build_release(
        spec, units_dir, sorted(indices), spec.release_dir(base), source_description, on_shard=on_shard
    )
    return BuildResult(release, progress, work_dir, time.monotonic() - t0)

"""One work unit: licence gate -> fetch -> image check -> people filter -> staging files.

A unit's output is a staging tar of its kept samples and a Parquet ledger of every candidate,
kept or rejected, with the reason and the scores (passkit.ledger: the files, their schema, how
they are read and written). `UnitRunner.run` is the stages in order over one `_UnitState`.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from passkit import images, ledger, licenses, process
from passkit.config import PipelineSpec
from passkit.fetch import Fetcher
from passkit.ledger import SCORE_DIGITS, UnitResult, unit_name
from passkit.records import Attribution, Candidate, Decision, Sample, Stage, Status
from passkit.shards import write_tar

__all__ = ["Unit", "UnitResult", "UnitRunner", "runner_for", "stage_settings"]


@dataclass(slots=True)
class Unit:
    index: int
    candidates: list[Candidate]
    retry: bool = False  # --retry-failed: refetch the rows an earlier run ended as transient failures

    @property
    def name(self) -> str:
        return unit_name(self.index)

    def fingerprint(self, settings: str = "") -> str:
        """Changes when the candidates or the settings that decide their fate change."""
        h = hashlib.sha256(settings.encode())
        for c in self.candidates:
            h.update(f"{c.key}\x00{c.url}\x00{c.license}\x00{c.license_version}\x00{c.license_url}\n".encode())
        return h.hexdigest()


def stage_settings(spec: PipelineSpec) -> str:
    """The part of the spec that decides each candidate's outcome (not paths, workers or sizes)."""
    parts = {k: spec.canonical()[k] for k in ("license", "image", "people")}
    return json.dumps(parts, sort_keys=True)


@dataclass(slots=True)
class _UnitState:
    """What the stages learn about one unit's candidates, by position in the unit."""

    unit: Unit
    decisions: list[Decision | None] = field(init=False)  # None: still in the running
    attributions: list[Attribution | None] = field(init=False)  # set by the licence gate
    checked: list[images.CheckedImage | None] = field(init=False)  # set by the image check
    transient: list[bool] = field(init=False)  # fetch failures worth a --retry-failed
    reused: dict[int, ledger.Reused] = field(default_factory=dict)  # outcomes an earlier run settled
    fetched: int = 0  # candidates downloaded by this run
    scores: dict[int, dict[str, float]] = field(default_factory=dict)  # people filter, of checked images
    boxes: dict[int, dict[str, list[list[float]]]] = field(default_factory=dict)  # for the review sidecar

    def __post_init__(self) -> None:
        n = len(self.unit.candidates)
        self.decisions, self.attributions = [None] * n, [None] * n
        self.checked, self.transient = [None] * n, [False] * n

    def undecided(self) -> list[int]:
        """Candidates no stage has ended and no earlier run settled."""
        return [i for i, d in enumerate(self.decisions) if d is None and i not in self.reused]


class UnitRunner:
    """Holds what is expensive to build (detectors, HTTP pools): one per process, many units."""

    def __init__(self, spec: PipelineSpec, workers: int = 1, device: str | None = None):
        """`workers`: processes sharing the per-host limits; `device`: where the people filter runs
        (an executor's choice, e.g. "cuda" on a GPU worker; not part of the unit's fingerprint)."""
        self.spec = spec
        self.policy = spec.license.build()
        self.fetcher = Fetcher(spec.fetch, share=1.0 / max(1, workers))
        self.modification = images.modification_note(spec.image)
        self.settings = stage_settings(spec)
        self.settings_digest = hashlib.sha256(self.settings.encode()).hexdigest().encode()
        self.device = device
        self._people: Any = None
        process.skip_pandas_probe()
        process.reuse_freed_memory()

    @property
    def people(self) -> Any:
        if self._people is None and self.spec.people.enabled:
            from passkit.filters.people import PeopleFilter  # torch import only where needed

            people = self.spec.people
            if self.device and self.device != people.device:
                people = people.model_copy(update={"device": self.device})
            self._people = PeopleFilter(people)
        return self._people

    def run(self, unit: Unit, units_dir: Path) -> UnitResult:
        """The unit's stages in order, then its files; the ledger, written last, marks it done."""
        t0 = time.monotonic()
        state = _UnitState(unit)
        self._gate(state)
        self._reuse(state, units_dir)
        self._dedup_urls(state)
        self._fetch_and_check(state)
        self._filter_people(state)
        tar_path, ledger_path = ledger.unit_paths(units_dir, unit.index)
        self._stage(state, tar_path)
        rows = self._rows(state)
        self._write(state, rows, ledger_path)
        result = ledger.summarize_rows(unit.index, rows)
        result.seconds, result.fetched, result.reused = time.monotonic() - t0, state.fetched, len(state.reused)
        return result

    def _gate(self, state: _UnitState) -> None:
        """Source errors, repeated keys and the licence gate: no download for what could never be released."""
        seen: set[str] = set()
        for i, c in enumerate(state.unit.candidates):
            if c.error is not None:  # a row the source could not read: rejected with the source's reason
                state.decisions[i] = Decision.reject(Stage.SOURCE, c.error[0], c.error[1])
                continue
            if c.key in seen:
                state.decisions[i] = Decision.reject(Stage.SOURCE, "duplicate_candidate", f"{c.source_id} listed twice")
                continue
            seen.add(c.key)
            g = licenses.gate(c, self.policy)
            if isinstance(g, tuple):
                state.decisions[i] = Decision.reject(Stage.LICENSE, g[0], g[1])
            else:
                state.attributions[i] = g

    def _reuse(self, state: _UnitState, units_dir: Path) -> None:
        """Take over the outcomes an earlier run of this unit settled (a grown unit, --retry-failed)."""
        previous = ledger.read_previous(state.unit, units_dir, self.settings_digest)
        for i, c in enumerate(state.unit.candidates):
            hit = previous.get(ledger.identity(c.key, c.url, ledger.license_raw(c))) if state.decisions[i] is None else None
            if hit is not None:
                state.reused[i] = hit

    def _dedup_urls(self, state: _UnitState) -> None:
        """The same URL listed twice is downloaded once; the later listings end as duplicates."""
        cands = state.unit.candidates
        first_url: dict[str, int] = {}
        for i, c in enumerate(cands):
            if state.decisions[i] is None:
                j = first_url.setdefault(c.url, i)
                if j != i:
                    state.decisions[i] = Decision.reject(Stage.SOURCE, "duplicate_url", f"same URL as {cands[j].source_id}")
                    state.reused.pop(i, None)

    def _fetch_and_check(self, state: _UnitState) -> None:
        """Fetch and check concurrently; decoding releases the GIL for most of its time."""
        todo = state.undecided()
        state.fetched = len(todo)

        def one(i: int) -> tuple[int, Decision | images.CheckedImage, bool]:
            r = self.fetcher.fetch(state.unit.candidates[i].url)
            if not r.ok:
                return i, Decision.reject(Stage.FETCH, r.reason or "fetch_error", r.detail), r.transient
            try:
                return i, images.check(r.data, self.spec.image, pixels=self.spec.people.enabled), False
            except images.ImageReject as e:
                return i, Decision.reject(Stage.IMAGE, e.reason, e.detail), False

        for i, out, tr in self.fetcher.map(one, todo):  # type: ignore[misc]
            if isinstance(out, Decision):
                state.decisions[i] = out
                state.transient[i] = tr
            else:
                state.checked[i] = out

    def _filter_people(self, state: _UnitState) -> None:
        """People filter on the resized pixels, one batch per unit; scores in a detector's review
        band send the image to a human (`passkit review`) instead of deciding alone."""
        ready = [i for i, ci in enumerate(state.checked) if ci is not None]
        state.scores = {i: {} for i in ready}
        if not ready or self.people is None:
            return
        results = self.people.score([state.checked[i].image for i in ready])  # type: ignore[union-attr]
        for i, res in zip(ready, results, strict=True):
            scores = state.scores[i] = {k: round(float(v), SCORE_DIGITS) for k, v in res.scores.items()}
            if res.has_person:
                fired = ", ".join(f"{d} {scores.get(d, 0):.3f}" for d in res.fired)
                state.decisions[i] = Decision(Status.REJECTED, Stage.PEOPLE, "people", f"fired: {fired}", scores)
            elif res.needs_review:
                band = ", ".join(f"{d} {scores.get(d, 0):.3f}" for d in res.review)
                state.decisions[i] = Decision(Status.REVIEW, Stage.PEOPLE, "review", f"review band: {band}", scores)
            state.boxes[i] = res.boxes

    def _stage(self, state: _UnitState, tar_path: Path) -> None:
        """Checked images that were not rejected -> staging tar, sorted by key, with the members of
        reused rows; what is staged without a decision is kept."""
        cands = state.unit.candidates
        by_key: dict[str, list[tuple[str, bytes]]] = {}
        for i, ci in enumerate(state.checked):
            d = state.decisions[i]
            if ci is None or not (d is None or d.status == Status.REVIEW):  # review rows are staged too
                continue
            a = state.attributions[i]
            assert a is not None
            s = Sample(cands[i].key, cands[i], a, ci.info, self.modification, state.scores[i])
            by_key[s.key] = [
                (f"{s.key}.jpg", s.image.jpeg),
                (f"{s.key}.json", json.dumps(s.meta(), sort_keys=True, ensure_ascii=False).encode()),
            ]
            if d is None:
                state.decisions[i] = Decision(Status.KEPT, None, None, None, state.scores[i])
        for i, (_row, mem) in state.reused.items():
            if mem:
                by_key[cands[i].key] = mem
        write_tar(tar_path, [m for key in sorted(by_key) for m in by_key[key]])

    def _rows(self, state: _UnitState) -> list[dict[str, Any]]:
        """Every candidate's ledger row, in unit order (reused rows as an earlier run wrote them)."""
        index, rows = state.unit.index, []
        for i, c in enumerate(state.unit.candidates):
            if i in state.reused:
                rows.append({**state.reused[i][0], "unit": index, "seq": i})
                continue
            d, ci = state.decisions[i], state.checked[i]
            assert d is not None
            rows.append(ledger.ledger_row(index, i, c, d, state.attributions[i], ci.info if ci else None,
                                          state.transient[i], state.scores.get(i, {})))
        return rows

    def _write(self, state: _UnitState, rows: list[dict[str, Any]], ledger_path: Path) -> None:
        """The review sidecar, then the ledger with the unit's fingerprint, settings and detectors."""
        keys = [c.key for c in state.unit.candidates]
        ledger.write_people_sidecar(ledger_path, {keys[i]: b for i, b in state.boxes.items()},
                                    [keys[i] for i in state.reused])
        ledger.write_ledger(ledger_path, rows, state.unit.fingerprint(self.settings), self.settings_digest,
                            self._detectors())

    def _detectors(self) -> dict[str, Any]:
        """The people filter's detectors, recorded in the ledger (units must agree on them)."""
        if self.people is None:
            return {"detectors": [], "skipped": []}
        return {"detectors": self.people.describe(), "skipped": [{"name": n, "why": w} for n, w in self.people.skipped]}


_RUNNERS: dict[tuple[str, int, str | None], UnitRunner] = {}  # this process's, by spec, workers, device


def runner_for(spec_data: dict[str, Any], workers: int, device: str | None = None) -> UnitRunner:
    """This process's UnitRunner for a spec (its canonical data), built on first use.

    An executor's worker process runs many units of a build: detectors and HTTP pools are built
    once per spec, not per unit. Both executors (local pool, Ray) call this from their workers."""
    key = (hashlib.sha256(json.dumps(spec_data, sort_keys=True).encode()).hexdigest(), workers, device)
    runner = _RUNNERS.get(key)
    if runner is None:
        runner = _RUNNERS[key] = UnitRunner(PipelineSpec.model_validate(spec_data), workers=workers, device=device)
    return runner

"""One work unit: licence gate -> fetch -> image check -> people filter -> staging files.

A unit's output is a staging tar of its kept samples and a Parquet ledger of every candidate,
kept or rejected, with the reason and the scores (passkit.ledger: the files, their schema, how
they are read and written). `UnitRunner.run` is the stages in order over one `_UnitState`.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from passkit import images, ledger, licenses, process
from passkit.config import PipelineSpec
from passkit.fetch import Fetcher
from passkit.ledger import SCORE_DIGITS, UnitResult, unit_name
from passkit.records import Attribution, Candidate, Decision, Sample, Stage, Status
from passkit.shards import write_tar

__all__ = ["FAULTS", "Unit", "UnitResult", "UnitRunner", "runner_for", "stage_settings"]


class InjectedFault(RuntimeError):
    """Raised by the fault-injection hook: stands for a bug met while handling one candidate."""


def _parse_faults(text: str) -> list[tuple[str, str]]:
    """`PASSKIT_FAULTS="fetch:img003,people:img007"` -> [(step, key substring), ...]."""
    out = []
    for item in text.split(","):
        step, _, sub = item.strip().partition(":")
        if step and sub:
            out.append((step, sub))
    return out


# Fault injection, for tests of the rule that one candidate's exception never ends its unit: a
# (step, key substring) pair raises InjectedFault inside that step for candidates whose key holds
# the substring. Steps: gate, reuse, dedup, fetch, image, people, stage, rows. Read once at import
# from PASSKIT_FAULTS, so executors' worker processes inherit it; tests may also replace the list.
FAULTS: list[tuple[str, str]] = _parse_faults(os.environ.get("PASSKIT_FAULTS", ""))


def _fault(step: str, key: str) -> None:
    for s, sub in FAULTS:
        if s == step and sub in key:
            raise InjectedFault(f"injected fault in {step} for {key}")


def _internal(stage: Stage, step: str, e: BaseException) -> Decision:
    """An unexpected exception while handling one candidate: that candidate's rejection, not the
    unit's death (the unit's other rows, and every rerun, would die with it). The detail names the
    step and the exception, for a bug report."""
    return Decision.reject(stage, "internal_error", f"{step}: {type(e).__name__}: {str(e)[:500]}")


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
            try:
                _fault("gate", c.key)
                if c.error is not None:  # a row the source could not read: rejected with the source's reason
                    state.decisions[i] = Decision.reject(Stage.SOURCE, c.error[0], c.error[1])
                    continue
                if c.key in seen:
                    state.decisions[i] = Decision.reject(Stage.SOURCE, "duplicate_candidate",
                                                         f"{c.source_id} listed twice")
                    continue
                seen.add(c.key)
                g = licenses.gate(c, self.policy)
                if isinstance(g, tuple):
                    state.decisions[i] = Decision.reject(Stage.LICENSE, g[0], g[1])
                else:
                    state.attributions[i] = g
            except Exception as e:  # one bad row: its own rejection, the unit goes on
                state.attributions[i] = None
                self._fail(state, i, Stage.LICENSE, "gate", e)

    def _reuse(self, state: _UnitState, units_dir: Path) -> None:
        """Take over the outcomes an earlier run of this unit settled (a grown unit, --retry-failed)."""
        previous = ledger.read_previous(state.unit, units_dir, self.settings_digest)
        if not previous and not FAULTS:
            return
        for i, c in enumerate(state.unit.candidates):
            if state.decisions[i] is not None:
                continue
            try:
                _fault("reuse", c.key)
                hit = previous.get(ledger.identity(c.key, c.url, ledger.license_raw(c)))
            except Exception as e:
                self._fail(state, i, Stage.SOURCE, "reuse", e)
                continue
            if hit is not None:
                state.reused[i] = hit

    def _dedup_urls(self, state: _UnitState) -> None:
        """The same URL listed twice is downloaded once; the later listings end as duplicates."""
        cands = state.unit.candidates
        first_url: dict[str, int] = {}
        for i, c in enumerate(cands):
            if state.decisions[i] is None:
                try:
                    _fault("dedup", c.key)
                    j = first_url.setdefault(c.url, i)
                except Exception as e:
                    self._fail(state, i, Stage.SOURCE, "dedup", e)
                    continue
                if j != i:
                    state.decisions[i] = Decision.reject(Stage.SOURCE, "duplicate_url", f"same URL as {cands[j].source_id}")
                    state.reused.pop(i, None)

    def _fetch_and_check(self, state: _UnitState) -> None:
        """Fetch and check concurrently; decoding releases the GIL for most of its time."""
        todo = state.undecided()
        state.fetched = len(todo)

        def one(i: int) -> tuple[int, Decision | images.CheckedImage, bool]:
            # Everything raised here ends as this candidate's row: an exception escaping into
            # Fetcher.map would end the unit, and every rerun of it.
            c, stage = state.unit.candidates[i], Stage.FETCH
            try:
                _fault("fetch", c.key)
                r = self.fetcher.fetch(c.url)
                if not r.ok:
                    return i, Decision.reject(Stage.FETCH, r.reason or "fetch_error", r.detail), r.transient
                stage = Stage.IMAGE
                _fault("image", c.key)
                return i, images.check(r.data, self.spec.image, pixels=self.spec.people.enabled), False
            except images.ImageReject as e:
                return i, Decision.reject(Stage.IMAGE, e.reason, e.detail), False
            except Exception as e:
                return i, _internal(stage, str(stage), e), INTERNAL_TRANSIENT

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
        keys = [state.unit.candidates[i].key for i in ready]
        try:
            if FAULTS:
                for k in keys:
                    _fault("people", k)
            results = self.people.score([state.checked[i].image for i in ready])  # type: ignore[union-attr]
            pairs = list(zip(ready, results, strict=True))
        except Exception:
            # One image that breaks the batch must not reject the others: score them one by one.
            pairs = []
            for i, k in zip(ready, keys, strict=True):
                try:
                    _fault("people", k)
                    (res,) = self.people.score([state.checked[i].image])  # type: ignore[union-attr]
                except Exception as e:
                    state.checked[i] = None  # not staged: a candidate the filter did not clear
                    self._fail(state, i, Stage.PEOPLE, "people", e)
                    continue
                pairs.append((i, res))
        for i, res in pairs:
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
            try:
                _fault("stage", cands[i].key)
                a = state.attributions[i]
                assert a is not None
                s = Sample(cands[i].key, cands[i], a, ci.info, self.modification, state.scores[i])
                meta = json.dumps(s.meta(), sort_keys=True, ensure_ascii=False).encode()
            except Exception as e:
                state.checked[i] = None
                self._fail(state, i, Stage.IMAGE, "stage", e)
                continue
            by_key[s.key] = [(f"{s.key}.jpg", s.image.jpeg), (f"{s.key}.json", meta)]
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
            try:
                _fault("rows", c.key)
                assert d is not None, "no stage decided this candidate"
                row = ledger.ledger_row(index, i, c, d, state.attributions[i], ci.info if ci else None,
                                        state.transient[i], state.scores.get(i, {}))
                _check_row(row)
            except Exception as e:
                # The bare row: the source's fields (text made encodable), no attribution, no image.
                # A row staged in the tar but rejected here is not released (only kept rows are).
                row = ledger.ledger_row(index, i, _encodable(c), _internal(Stage.SOURCE, "rows", e), None, None,
                                        INTERNAL_TRANSIENT, {})
            rows.append(row)
        return rows

    @staticmethod
    def _fail(state: _UnitState, i: int, stage: Stage, step: str, e: BaseException) -> None:
        """End candidate `i` with an internal_error from `step` (worth a --retry-failed: a bug fixed
        by an upgrade should not leave the row rejected for good)."""
        state.decisions[i] = _internal(stage, step, e)
        state.transient[i] = INTERNAL_TRANSIENT
        state.reused.pop(i, None)

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


# internal_error rows are transient: `passkit build --retry-failed` after an upgrade redoes them.
INTERNAL_TRANSIENT = True


def _check_row(row: dict[str, Any]) -> None:
    """Raise on text Parquet cannot store (a lone surrogate from a JSON escape), so the row, not
    the unit's ledger write, fails."""
    for v in row.values():
        if isinstance(v, str):
            v.encode("utf-8")


def _encodable(c: Candidate) -> Candidate:
    """A copy of the candidate whose text fields all encode as UTF-8 (unencodable characters as
    backslash escapes), for its internal_error row."""

    def fix(v: Any) -> Any:
        return v.encode("utf-8", "backslashreplace").decode("utf-8") if isinstance(v, str) else v

    return replace(c, **{f.name: fix(getattr(c, f.name)) for f in fields(c) if f.name not in ("extra", "error")})


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

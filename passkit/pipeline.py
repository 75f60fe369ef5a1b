"""One work unit: licence gate -> fetch -> image check -> people filter -> staging files.

A unit's output is a staging tar of its kept samples and a Parquet ledger of every candidate,
kept or rejected, with the reason and the scores. The ledger is renamed into place last, so it
is the unit's "done" marker; its metadata holds the fingerprint of the unit's candidate list, so a
rerun skips exactly the units that are finished and unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from passkit import images, licenses
from passkit.config import PipelineSpec
from passkit.fetch import Fetcher
from passkit.records import Attribution, Candidate, Decision, Sample, Stage, Status
from passkit.shards import write_tar

LEDGER_SCHEMA = pa.schema(
    [
        ("unit", pa.int32()),
        ("seq", pa.int32()),  # position in the unit: the order the source gave
        ("key", pa.string()),
        ("source", pa.string()),
        ("source_id", pa.string()),
        ("query", pa.string()),
        ("url", pa.string()),
        ("status", pa.string()),
        ("stage", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("transient", pa.bool_()),
        ("scores", pa.map_(pa.string(), pa.float64())),
        ("title", pa.string()),
        ("creator", pa.string()),
        ("creator_url", pa.string()),
        ("landing_url", pa.string()),
        ("provider", pa.string()),
        ("license_raw", pa.string()),
        ("license", pa.string()),
        ("license_name", pa.string()),
        ("license_url", pa.string()),
        ("attribution", pa.string()),
        ("sha256", pa.string()),
        ("source_sha256", pa.string()),
        ("phash", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("orig_width", pa.int32()),
        ("orig_height", pa.int32()),
        ("bytes", pa.int64()),
    ]
)
FINGERPRINT_META = b"passkit.unit_fingerprint"
DETECTORS_META = b"passkit.detectors"
SCORE_DIGITS = 4  # scores are rounded so reruns on other thread counts give identical files


@dataclass(slots=True)
class Unit:
    index: int
    candidates: list[Candidate]

    @property
    def name(self) -> str:
        return f"unit-{self.index:06d}"

    def fingerprint(self, settings: str = "") -> str:
        """Changes when the candidates or the settings that decide their fate change."""
        h = hashlib.sha256(settings.encode())
        for c in self.candidates:
            h.update(f"{c.key}\x00{c.url}\x00{c.license}\x00{c.license_version}\x00{c.license_url}\n".encode())
        return h.hexdigest()


@dataclass(slots=True)
class UnitResult:
    index: int
    candidates: int
    kept: int
    reasons: Counter[str] = field(default_factory=Counter)  # "stage:reason" -> count
    seconds: float = 0.0
    skipped: bool = False  # already done by an earlier run


def unit_paths(units_dir: Path, index: int) -> tuple[Path, Path]:
    stem = units_dir / f"unit-{index:06d}"
    return stem.with_suffix(".tar"), stem.with_suffix(".parquet")


def stage_settings(spec: PipelineSpec) -> str:
    """The part of the spec that decides each candidate's outcome (not paths, workers or sizes)."""
    parts = {k: spec.canonical()[k] for k in ("license", "image", "people")}
    return json.dumps(parts, sort_keys=True)


def unit_done(units_dir: Path, unit: Unit, settings: str) -> bool:
    tar, ledger = unit_paths(units_dir, unit.index)
    if not (tar.exists() and ledger.exists()):
        return False
    try:
        meta = pq.read_schema(ledger).metadata or {}
    except (OSError, pa.ArrowInvalid):
        return False
    return meta.get(FINGERPRINT_META) == unit.fingerprint(settings).encode()


def summarize_ledger(path: Path) -> UnitResult:
    t = pq.read_table(path, columns=["unit", "status", "stage", "reason"]).to_pylist()
    reasons = Counter(f"{r['stage']}:{r['reason']}" for r in t if r["status"] != Status.KEPT)
    kept = sum(1 for r in t if r["status"] == Status.KEPT)
    idx = t[0]["unit"] if t else -1
    return UnitResult(idx, len(t), kept, reasons, skipped=True)


class UnitRunner:
    """Holds what is expensive to build (detectors, HTTP pools): one per process, many units."""

    def __init__(self, spec: PipelineSpec):
        self.spec = spec
        self.policy = spec.license.build()
        self.fetcher = Fetcher(spec.fetch)
        self.modification = images.modification_note(spec.image)
        self.settings = stage_settings(spec)
        self._people: Any = None

    @property
    def people(self) -> Any:
        if self._people is None and self.spec.people.enabled:
            from passkit.filters.people import PeopleFilter  # torch import only where needed

            self._people = PeopleFilter(self.spec.people)
        return self._people

    def run(self, unit: Unit, units_dir: Path) -> UnitResult:
        t0 = time.monotonic()
        n = len(unit.candidates)
        decisions: list[Decision | None] = [None] * n
        attributions: list[Attribution | None] = [None] * n
        checked: list[images.CheckedImage | None] = [None] * n
        transient = [False] * n

        # Licence gate: no download for what could never be released.
        seen: set[str] = set()
        for i, c in enumerate(unit.candidates):
            if c.key in seen:
                decisions[i] = Decision.reject(Stage.SOURCE, "duplicate_candidate", f"{c.source_id} listed twice")
                continue
            seen.add(c.key)
            g = licenses.gate(c, self.policy)
            if isinstance(g, tuple):
                stage = Stage.LICENSE
                decisions[i] = Decision.reject(stage, g[0], g[1])
            else:
                attributions[i] = g

        # Fetch and check concurrently; decoding releases the GIL for most of its time.
        todo = [i for i in range(n) if decisions[i] is None]

        def fetch_and_check(i: int) -> tuple[int, Decision | images.CheckedImage, bool]:
            r = self.fetcher.fetch(unit.candidates[i].url)
            if not r.ok:
                return i, Decision.reject(Stage.FETCH, r.reason or "fetch_error", r.detail), r.transient
            try:
                return i, images.check(r.data, self.spec.image), False
            except images.ImageReject as e:
                return i, Decision.reject(Stage.IMAGE, e.reason, e.detail), False

        for i, out, tr in self.fetcher.map(fetch_and_check, todo):  # type: ignore[misc]
            if isinstance(out, Decision):
                decisions[i] = out
                transient[i] = tr
            else:
                checked[i] = out

        # People filter on the resized pixels, one batch per unit.
        ready = [i for i in range(n) if checked[i] is not None]
        scores: dict[int, dict[str, float]] = {i: {} for i in ready}
        if ready and self.people is not None:
            results = self.people.score([checked[i].image for i in ready])  # type: ignore[union-attr]
            for i, res in zip(ready, results, strict=True):
                scores[i] = {k: round(float(v), SCORE_DIGITS) for k, v in res.scores.items()}
                if res.has_person:
                    fired = ", ".join(f"{d} {scores[i].get(d, 0):.3f}" for d in res.fired)
                    decisions[i] = Decision(Status.REJECTED, Stage.PEOPLE, "people", f"fired: {fired}", scores[i])

        # Kept samples -> staging tar (sorted by key); every candidate -> ledger.
        samples: list[Sample] = []
        for i in ready:
            if decisions[i] is None:
                c, a, ci = unit.candidates[i], attributions[i], checked[i]
                assert a is not None and ci is not None
                samples.append(Sample(c.key, c, a, ci.info, self.modification, scores[i]))
                decisions[i] = Decision(Status.KEPT, None, None, None, scores[i])
        samples.sort(key=lambda s: s.key)
        tar_path, ledger_path = unit_paths(units_dir, unit.index)
        members: list[tuple[str, bytes]] = []
        for s in samples:
            members.append((f"{s.key}.jpg", s.image.jpeg))
            members.append((f"{s.key}.json", json.dumps(s.meta(), sort_keys=True, ensure_ascii=False).encode()))
        write_tar(tar_path, members)

        rows = []
        for i, c in enumerate(unit.candidates):
            d, a, ci = decisions[i], attributions[i], checked[i]
            assert d is not None
            info = ci.info if ci is not None else None
            rows.append(
                {
                    "unit": unit.index,
                    "seq": i,
                    "key": c.key,
                    "source": c.source,
                    "source_id": c.source_id,
                    "query": c.query,
                    "url": c.url,
                    "status": str(d.status),
                    "stage": str(d.stage) if d.stage else None,
                    "reason": d.reason,
                    "detail": d.detail,
                    "transient": transient[i],
                    "scores": sorted((d.scores or scores.get(i, {})).items()),
                    "title": a.title if a else c.title,
                    "creator": a.creator if a else c.creator,
                    "creator_url": c.creator_url,
                    "landing_url": c.landing_url,
                    "provider": c.provider,
                    "license_raw": " ".join(x for x in (c.license, c.license_version, c.license_url) if x) or None,
                    "license": a.license_id if a else None,
                    "license_name": a.license_name if a else None,
                    "license_url": a.license_url if a else c.license_url,
                    "attribution": a.sentence if a else None,
                    "sha256": info.sha256 if info else None,
                    "source_sha256": info.source_sha256 if info else None,
                    "phash": info.phash if info else None,
                    "width": info.width if info else None,
                    "height": info.height if info else None,
                    "orig_width": info.orig_width if info else None,
                    "orig_height": info.orig_height if info else None,
                    "bytes": len(info.jpeg) if info else None,
                }
            )
        detectors = self.people.describe() if self.people is not None else []
        skipped = [{"name": n, "why": w} for n, w in self.people.skipped] if self.people is not None else []
        table = pa.Table.from_pylist(rows, schema=LEDGER_SCHEMA).replace_schema_metadata(
            {
                FINGERPRINT_META: unit.fingerprint(self.settings).encode(),
                DETECTORS_META: json.dumps({"detectors": detectors, "skipped": skipped}, sort_keys=True).encode(),
            }
        )
        tmp = ledger_path.with_name(f".{ledger_path.name}.tmp-{os.getpid()}")
        try:
            pq.write_table(table, tmp)
            os.replace(tmp, ledger_path)  # the unit is done from this instant
        finally:
            tmp.unlink(missing_ok=True)
        reasons = Counter(f"{d.stage}:{d.reason}" for d in decisions if d and d.status != Status.KEPT)
        return UnitResult(unit.index, n, len(samples), reasons, time.monotonic() - t0)

"""One work unit: licence gate -> fetch -> image check -> people filter -> staging files.

A unit's output is a staging tar of its kept samples and a Parquet ledger of every candidate,
kept or rejected, with the reason and the scores. The ledger is renamed into place last, so it
is the unit's "done" marker; its metadata holds the fingerprint of the unit's candidate list, so a
rerun skips exactly the units that are finished and unchanged.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.abc
import json
import os
import sys
import tarfile
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
from passkit.shards import iter_members, write_tar

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
        ("flat_fraction", pa.float64()),  # filters.quality, measured on the pixels in hand
        ("flat_colour", pa.list_(pa.int16())),
    ]
)
FINGERPRINT_META = b"passkit.unit_fingerprint"
SETTINGS_META = b"passkit.settings"  # sha256 of stage_settings: rows are reusable only under the same settings
DETECTORS_META = b"passkit.detectors"
SCORE_DIGITS = 4  # scores are rounded so reruns on other thread counts give identical files


@dataclass(slots=True)
class Unit:
    index: int
    candidates: list[Candidate]
    retry: bool = False  # --retry-failed: refetch the rows an earlier run ended as transient failures

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
    fetched: int = 0  # candidates downloaded in this run (not reused from an earlier one)
    reused: int = 0  # outcomes taken over from an earlier run of this unit
    transient: int = 0  # rows ending in a transient failure (what --retry-failed would retry)


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


def read_ledger(path: Path, columns: list[str] | None = None) -> pa.Table:
    """A unit's ledger as LEDGER_SCHEMA (or those `columns`), with the file's metadata; columns an
    older passkit did not write come back as nulls. Reads the one file directly: `pq.read_table`
    would import pyarrow.dataset (and pandas), half a second of every build's start-up."""
    schema = LEDGER_SCHEMA if columns is None else pa.schema([LEDGER_SCHEMA.field(c) for c in columns])
    pf = pq.ParquetFile(path)
    have = set(pf.schema_arrow.names)
    table = pf.read(columns=[c for c in schema.names if c in have])
    n = table.num_rows
    arrays = [_as_type(table.column(f.name), f.type) if f.name in have else pa.nulls(n, f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema.with_metadata(pf.schema_arrow.metadata))


def _as_type(col: pa.ChunkedArray, typ: pa.DataType) -> pa.ChunkedArray:
    """`col` as `typ`; a no-op for ledgers this passkit wrote (a cast would load pyarrow.compute)."""
    return col if col.type == typ else col.cast(typ)


def summarize_ledger(path: Path) -> UnitResult:
    t = read_ledger(path, ["unit", "status", "stage", "reason", "transient"]).to_pylist()
    reasons = Counter(f"{r['stage']}:{r['reason']}" for r in t if r["status"] != Status.KEPT)
    kept = sum(1 for r in t if r["status"] == Status.KEPT)
    idx = t[0]["unit"] if t else -1
    transient = sum(1 for r in t if r["transient"])
    return UnitResult(idx, len(t), kept, reasons, skipped=True, transient=transient)


def ledger_transient(path: Path) -> int:
    """How many rows of a finished unit ended in a transient failure (0 when unreadable)."""
    try:
        return sum(1 for v in read_ledger(path, ["transient"]).column(0).to_pylist() if v)
    except (OSError, pa.ArrowInvalid):
        return 0


def _license_raw(c: Candidate) -> str | None:
    return " ".join(x for x in (c.license, c.license_version, c.license_url) if x) or None


def _identity(key: str, url: str, license_raw: str | None) -> tuple[str, str, str]:
    return key, url, license_raw or ""


# Statuses whose image sits in the unit's staging tar. REVIEW (people filter's review band): staged so
# that `passkit review` can show it and a release can take it after a human "no person", without a
# refetch; the release builder takes only rows that end KEPT (passkit.release.build applies reviews).
_STAGED = frozenset({str(Status.KEPT), str(Status.REVIEW)})
PEOPLE_SIDECAR = ".people.json"  # unit-XXXXXX.people.json: detector boxes of staged rows, for review

# Rows of these stages are recomputed on every run (cheap, and they depend on the unit's other rows).
_RECOMPUTED_STAGES = frozenset({str(Stage.SOURCE), str(Stage.LICENSE)})


class _NoPandas(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "pandas":
            raise ImportError("not needed by a work unit")


def _skip_pandas_probe() -> None:
    """pyarrow imports pandas (a third of a second per process) on the first array it builds,
    only to ask whether that input is a DataFrame. A work unit never hands it one, so let this
    first probe find no pandas. pandas stays importable: pyarrow imports it after all if anyone
    asks for a conversion to pandas."""
    if "pandas" in sys.modules:
        return
    finder = _NoPandas()
    sys.meta_path.insert(0, finder)
    try:
        pa.array([], pa.int8())
    finally:
        sys.meta_path.remove(finder)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h


def _reuse_freed_memory() -> None:
    """Let glibc keep freed image buffers for the next image instead of handing them back to the OS.

    Every image allocates and frees a few MB (the download, planes, resized copies). By default
    glibc returns such blocks at once (munmap, heap trimming) and the next image page-faults them
    back in: about 80 faults per image. With these thresholds the ingest benchmark's workers took
    half the page faults and 0.5 s less system time per 3000 images (about 5 % of the wall time),
    for 20 MB more peak memory per worker (171 -> 190 MB). A no-op where malloc is not glibc's
    (mallopt missing, or a stub as in musl)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_MMAP_THRESHOLD, 32 << 20)  # blocks up to 32 MB come from the heap, not mmap
    mallopt(_M_TRIM_THRESHOLD, 64 << 20)  # keep up to 64 MB free at the heap's top for reuse


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
        _skip_pandas_probe()
        _reuse_freed_memory()

    @property
    def people(self) -> Any:
        if self._people is None and self.spec.people.enabled:
            from passkit.filters.people import PeopleFilter  # torch import only where needed

            people = self.spec.people
            if self.device and self.device != people.device:
                people = people.model_copy(update={"device": self.device})
            self._people = PeopleFilter(people)
        return self._people

    def _previous(self, unit: Unit, units_dir: Path) -> dict[tuple[str, str, str], tuple[dict, list]]:
        """Outcomes an earlier run of this unit settled, by candidate identity, with their tar members.

        Used when a unit is rerun under the same settings: a grown last unit keeps the rows of the
        candidates it already had, and --retry-failed keeps everything but the transient failures.
        """
        tar_path, ledger_path = unit_paths(units_dir, unit.index)
        try:
            if (pq.read_schema(ledger_path).metadata or {}).get(SETTINGS_META) != self.settings_digest:
                return {}
            rows = read_ledger(ledger_path).to_pylist()
        except (OSError, pa.ArrowInvalid, ValueError):
            return {}
        members: dict[str, bytes] = {}
        if any(r["status"] in _STAGED for r in rows):  # people-filter issue: review rows are staged too
            try:
                members = {m.name: m.data for m in iter_members(tar_path)}
            except (OSError, ValueError, tarfile.TarError):
                members = {}
        out: dict[tuple[str, str, str], tuple[dict, list]] = {}
        for r in rows:
            if r["stage"] in _RECOMPUTED_STAGES or (unit.retry and r["transient"]):
                continue
            mem: list[tuple[str, bytes]] = []
            if r["status"] in _STAGED:
                names = (f"{r['key']}.jpg", f"{r['key']}.json")
                if not all(n in members for n in names):
                    continue  # staging lost: fetch again
                mem = [(n, members[n]) for n in names]
            out[_identity(r["key"], r["url"], r["license_raw"])] = (r, mem)
        return out

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
            if c.error is not None:  # a row the source could not read: rejected with the source's reason
                decisions[i] = Decision.reject(Stage.SOURCE, c.error[0], c.error[1])
                continue
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

        # Outcomes an earlier run of this unit already settled (a grown unit, --retry-failed).
        previous = self._previous(unit, units_dir) if unit_paths(units_dir, unit.index)[1].exists() else {}
        reused: dict[int, tuple[dict, list]] = {}
        for i, c in enumerate(unit.candidates):
            hit = previous.get(_identity(c.key, c.url, _license_raw(c))) if decisions[i] is None else None
            if hit is not None:
                reused[i] = hit

        # The same URL listed twice is downloaded once; the later listings end as duplicates.
        first_url: dict[str, int] = {}
        for i, c in enumerate(unit.candidates):
            if decisions[i] is None:
                j = first_url.setdefault(c.url, i)
                if j != i:
                    decisions[i] = Decision.reject(
                        Stage.SOURCE, "duplicate_url", f"same URL as {unit.candidates[j].source_id}"
                    )
                    reused.pop(i, None)

        # Fetch and check concurrently; decoding releases the GIL for most of its time.
        todo = [i for i in range(n) if decisions[i] is None and i not in reused]

        def fetch_and_check(i: int) -> tuple[int, Decision | images.CheckedImage, bool]:
            r = self.fetcher.fetch(unit.candidates[i].url)
            if not r.ok:
                return i, Decision.reject(Stage.FETCH, r.reason or "fetch_error", r.detail), r.transient
            try:
                return i, images.check(r.data, self.spec.image, pixels=self.spec.people.enabled), False
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
        boxes: dict[int, dict[str, list[list[float]]]] = {}  # detector boxes, for the review sidecar
        if ready and self.people is not None:
            results = self.people.score([checked[i].image for i in ready])  # type: ignore[union-attr]
            for i, res in zip(ready, results, strict=True):
                scores[i] = {k: round(float(v), SCORE_DIGITS) for k, v in res.scores.items()}
                if res.has_person:
                    fired = ", ".join(f"{d} {scores[i].get(d, 0):.3f}" for d in res.fired)
                    decisions[i] = Decision(Status.REJECTED, Stage.PEOPLE, "people", f"fired: {fired}", scores[i])
                elif res.needs_review:  # people-filter issue: a score in a detector's review band
                    band = ", ".join(f"{d} {scores[i].get(d, 0):.3f}" for d in res.review)
                    decisions[i] = Decision(Status.REVIEW, Stage.PEOPLE, "review", f"review band: {band}", scores[i])
                boxes[i] = res.boxes

        # Kept samples -> staging tar (sorted by key); every candidate -> ledger.
        samples: list[Sample] = []
        for i in ready:
            d_i = decisions[i]
            if d_i is None or d_i.status == Status.REVIEW:  # review rows are staged too (see _STAGED)
                c, a, ci = unit.candidates[i], attributions[i], checked[i]
                assert a is not None and ci is not None
                samples.append(Sample(c.key, c, a, ci.info, self.modification, scores[i]))
                if d_i is None:
                    decisions[i] = Decision(Status.KEPT, None, None, None, scores[i])
        tar_path, ledger_path = unit_paths(units_dir, unit.index)
        by_key: dict[str, list[tuple[str, bytes]]] = {}
        for s in samples:
            by_key[s.key] = [
                (f"{s.key}.jpg", s.image.jpeg),
                (f"{s.key}.json", json.dumps(s.meta(), sort_keys=True, ensure_ascii=False).encode()),
            ]
        for i, (_row, mem) in reused.items():
            if mem:
                by_key[unit.candidates[i].key] = mem
        members = [m for key in sorted(by_key) for m in by_key[key]]
        write_tar(tar_path, members)

        rows = []
        for i, c in enumerate(unit.candidates):
            if i in reused:
                rows.append({**reused[i][0], "unit": unit.index, "seq": i})
                continue
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
                    "license_raw": _license_raw(c),
                    "license": a.license if a else None,
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
                    "flat_fraction": info.flat_fraction if info else None,
                    "flat_colour": list(info.flat_colour) if info and info.flat_colour else None,
                }
            )
        detectors = self.people.describe() if self.people is not None else []
        skipped = [{"name": n, "why": w} for n, w in self.people.skipped] if self.people is not None else []
        columns = {name: [r[name] for r in rows] for name in LEDGER_SCHEMA.names}  # from_pylist loads pandas
        table = pa.Table.from_pydict(columns, schema=LEDGER_SCHEMA).replace_schema_metadata(
            {
                FINGERPRINT_META: unit.fingerprint(self.settings).encode(),
                SETTINGS_META: self.settings_digest,
                DETECTORS_META: json.dumps({"detectors": detectors, "skipped": skipped}, sort_keys=True).encode(),
            }
        )
        _write_people_sidecar(ledger_path, unit, boxes, reused, units_dir)  # people-filter issue: review
        tmp = ledger_path.with_name(f".{ledger_path.name}.tmp-{os.getpid()}")
        try:
            pq.write_table(table, tmp)
            os.replace(tmp, ledger_path)  # the unit is done from this instant
        finally:
            tmp.unlink(missing_ok=True)
        reasons = Counter(f"{r['stage']}:{r['reason']}" for r in rows if r["status"] != Status.KEPT)
        kept = sum(1 for r in rows if r["status"] == Status.KEPT)
        return UnitResult(
            unit.index, n, kept, reasons, time.monotonic() - t0, fetched=len(todo), reused=len(reused),
            transient=sum(1 for r in rows if r["transient"]),
        )


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


def _write_people_sidecar(
    ledger_path: Path, unit: Unit, boxes: dict[int, dict[str, list[list[float]]]],
    reused: dict[int, tuple[dict, list]], units_dir: Path,
) -> None:
    """Detector boxes of the unit's scored images by key (`passkit review` draws them), written
    atomically before the ledger; boxes of rows reused from an earlier run are carried over."""
    path = ledger_path.with_name(ledger_path.stem + PEOPLE_SIDECAR)
    old: dict[str, Any] = {}
    if reused and path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = {}
    data = {unit.candidates[i].key: b for i, b in boxes.items()}
    for i in reused:
        k = unit.candidates[i].key
        if k in old:
            data[k] = old[k]
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, sort_keys=True))
    os.replace(tmp, path)

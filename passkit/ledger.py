"""A work unit's files: its Parquet ledger (every candidate, kept or rejected), staging tar and
people sidecar; their names, schema, and how they are written and read.

The ledger is renamed into place last, so it is the unit's "done" marker; its metadata holds the
fingerprint of the unit's candidate list and a digest of the settings that decided the outcomes,
so a rerun skips exactly the units that are finished and unchanged, and reuses the rows of the
ones that changed. The build, the release step and `passkit review` read units only through here.
"""

from __future__ import annotations

import json
import tarfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from passkit.atomic import atomic_path, write_text
from passkit.records import Attribution, Candidate, Decision, ImageInfo, Stage, Status
from passkit.shards import iter_members

if TYPE_CHECKING:
    from passkit.pipeline import Unit

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

LEDGER_GLOB = "unit-*.parquet"  # every unit's ledger in a units folder
LEFTOVER_GLOB = ".unit-*.tmp-*"  # what a killed run left half-written (passkit.atomic's temp names)
PEOPLE_SIDECAR = ".people.json"  # unit-XXXXXX.people.json: detector boxes of staged rows, for review

# Statuses whose image sits in the unit's staging tar. REVIEW (people filter's review band): staged so
# that `passkit review` can show it and a release can take it after a human "no person", without a
# refetch; the release builder takes only rows that end KEPT (passkit.release.build applies reviews).
STAGED = frozenset({str(Status.KEPT), str(Status.REVIEW)})

# Rows of these stages are recomputed on every run (cheap, and they depend on the unit's other rows).
_RECOMPUTED_STAGES = frozenset({str(Stage.SOURCE), str(Stage.LICENSE)})

Identity = tuple[str, str, str]  # key, URL, raw licence: what makes an earlier row reusable
Reused = tuple[dict[str, Any], list[tuple[str, bytes]]]  # an earlier row and its staged tar members


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


# ------------------------------------------------------------------ names


def unit_name(index: int) -> str:
    return f"unit-{index:06d}"


def unit_paths(units_dir: Path, index: int) -> tuple[Path, Path]:
    """The unit's staging tar and ledger."""
    stem = units_dir / unit_name(index)
    return stem.with_suffix(".tar"), stem.with_suffix(".parquet")


def ledger_paths(units_dir: Path) -> list[Path]:
    """Every finished unit's ledger in a units folder, in unit order."""
    return sorted(units_dir.glob(LEDGER_GLOB))


def people_sidecar(ledger_path: Path) -> Path:
    return ledger_path.with_name(ledger_path.stem + PEOPLE_SIDECAR)


# ------------------------------------------------------------------ reading


def unit_done(units_dir: Path, unit: Unit, settings: str) -> bool:
    """Whether an earlier run finished this unit with the same candidates and settings."""
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


def summarize_rows(index: int, rows: list[dict[str, Any]]) -> UnitResult:
    """Counts of a unit's rows (kept, "stage:reason" of the others, transient failures)."""
    reasons = Counter(f"{r['stage']}:{r['reason']}" for r in rows if r["status"] != Status.KEPT)
    kept = sum(1 for r in rows if r["status"] == Status.KEPT)
    transient = sum(1 for r in rows if r["transient"])
    return UnitResult(index, len(rows), kept, reasons, transient=transient)


def summarize_ledger(path: Path) -> UnitResult:
    """A finished unit's result, as an earlier run left it."""
    t = read_ledger(path, ["unit", "status", "stage", "reason", "transient"]).to_pylist()
    result = summarize_rows(t[0]["unit"] if t else -1, t)
    result.skipped = True
    return result


def ledger_transient(path: Path) -> int:
    """How many rows of a finished unit ended in a transient failure (0 when unreadable)."""
    try:
        return sum(1 for v in read_ledger(path, ["transient"]).column(0).to_pylist() if v)
    except (OSError, pa.ArrowInvalid):
        return 0


def license_raw(c: Candidate) -> str | None:
    """The licence as the source gave it, in one string (the ledger's `license_raw`)."""
    return " ".join(x for x in (c.license, c.license_version, c.license_url) if x) or None


def identity(key: str, url: str, raw_license: str | None) -> Identity:
    return key, url, raw_license or ""


def read_previous(unit: Unit, units_dir: Path, settings_digest: bytes) -> dict[Identity, Reused]:
    """Outcomes an earlier run of this unit settled, by candidate identity, with their tar members.

    Used when a unit is rerun under the same settings: a grown last unit keeps the rows of the
    candidates it already had, and --retry-failed keeps everything but the transient failures.
    Source and licence rows are left out: they are recomputed.
    """
    tar_path, ledger_path = unit_paths(units_dir, unit.index)
    if not ledger_path.exists():
        return {}
    try:
        if (pq.read_schema(ledger_path).metadata or {}).get(SETTINGS_META) != settings_digest:
            return {}
        rows = read_ledger(ledger_path).to_pylist()
    except (OSError, pa.ArrowInvalid, ValueError):
        return {}
    members: dict[str, bytes] = {}
    if any(r["status"] in STAGED for r in rows):  # review rows are staged too, not only kept ones
        try:
            members = {m.name: m.data for m in iter_members(tar_path)}
        except (OSError, ValueError, tarfile.TarError):
            members = {}
    out: dict[Identity, Reused] = {}
    for r in rows:
        if r["stage"] in _RECOMPUTED_STAGES or (unit.retry and r["transient"]):
            continue
        mem: list[tuple[str, bytes]] = []
        if r["status"] in STAGED:
            names = (f"{r['key']}.jpg", f"{r['key']}.json")
            if not all(n in members for n in names):
                continue  # staging lost: fetch again
            mem = [(n, members[n]) for n in names]
        out[identity(r["key"], r["url"], r["license_raw"])] = (r, mem)
    return out


# ------------------------------------------------------------------ writing


def ledger_row(
    unit: int, seq: int, c: Candidate, d: Decision, a: Attribution | None, info: ImageInfo | None,
    transient: bool, scores: dict[str, float],
) -> dict[str, Any]:
    """One candidate's ledger row: its source fields, how it ended, its attribution (once the
    licence gate passed it) and what the image check learnt (once it was checked)."""
    return {
        "unit": unit,
        "seq": seq,
        "key": c.key,
        "source": c.source,
        "source_id": c.source_id,
        "query": c.query,
        "url": c.url,
        "status": str(d.status),
        "stage": str(d.stage) if d.stage else None,
        "reason": d.reason,
        "detail": d.detail,
        "transient": transient,
        "scores": sorted((d.scores or scores).items()),
        "title": a.title if a else c.title,
        "creator": a.creator if a else c.creator,
        "creator_url": c.creator_url,
        "landing_url": c.landing_url,
        "provider": c.provider,
        "license_raw": license_raw(c),
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


def write_ledger(path: Path, rows: list[dict[str, Any]], fingerprint: str, settings_digest: bytes,
                 detectors: dict[str, Any]) -> None:
    """Write the ledger atomically: the unit is done from the instant it appears."""
    columns = {name: [r[name] for r in rows] for name in LEDGER_SCHEMA.names}  # from_pylist loads pandas
    table = pa.Table.from_pydict(columns, schema=LEDGER_SCHEMA).replace_schema_metadata(
        {
            FINGERPRINT_META: fingerprint.encode(),
            SETTINGS_META: settings_digest,
            DETECTORS_META: json.dumps(detectors, sort_keys=True).encode(),
        }
    )
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def write_people_sidecar(ledger_path: Path, boxes: dict[str, Any], carried: list[str]) -> None:
    """Detector boxes of the unit's scored images by key (`passkit review` draws them), written
    atomically before the ledger; the boxes of `carried` keys (rows reused from an earlier run)
    are taken over from the sidecar that run left."""
    path = people_sidecar(ledger_path)
    old: dict[str, Any] = {}
    if carried and path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = {}
    data = dict(boxes)
    for k in carried:
        if k in old:
            data[k] = old[k]
    write_text(path, json.dumps(data, sort_keys=True))

"""Verify a release against its manifest and its licence policy.

`audit(release_dir)` re-reads a release the way a sceptical third party would and returns an
`AuditReport`: a list of `Finding`s, each with a stable `code`, a human message and, where it
applies, the shard and the sample key it is about. A release is `ok` when there is no finding.

What is checked (codes in `CODES`):

- the manifest exists, is JSON and validates against manifests/manifest.schema.json;
- every listed shard exists with the size and sha256 the manifest records, and no other file lies in
  shards/; a shard whose sha256 differs is scanned to name the samples whose bytes changed;
- every shard is a safe, flat tar (passkit.shards.check_tar): nothing is ever extracted to disk;
- every sample has exactly a `.jpg` and a `.json`, the json parses and names the member key, the
  JPEG's sha256 equals the json's and index.parquet's, the JPEG header parses, its size matches the
  json, and it carries no EXIF/XMP/ICC/comment block;
- the licence is in the registry, allowed by the manifest's policy, and its URL and name agree
  with the id; TASL is complete (records.REQUIRED_ATTRIBUTION, plus the title where the licence
  needs it); the attribution sentence equals the one recomputed from the fields;
- keys are unique and sorted across the release; per-shard sample counts match the manifest;
  index.parquet has exactly the samples found, in the right shards, with the same attribution;
- keys listed in the manifest's removals are absent, and so is any image whose sha256 a removal
  records (the same photo re-added under another key); the other files in manifest["files"] match
  their sha256 and size;
- every JPEG decodes completely (not just its header);
- optional, `rescan=True`: the people detectors the manifest names run again on every image
  (`people_detected`); `check_sources=N`: N random samples' source URLs are fetched again and their
  landing pages searched for the licence (`source_license_changed`; unreachable or changed sources are
  warnings, which do not fail the audit: links rot, licences granted stay granted).

`write_html(report, path)` renders the report as a self-contained page (templates/audit.html.j2).

Streaming: one sample in memory at a time (one shard's tar headers); the key set and the index
columns needed for cross-checks are held in memory.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import time
import warnings
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from passkit import licenses
from passkit.records import REQUIRED_ATTRIBUTION
from passkit.release.manifest import SchemaNotFound, schema_path
from passkit.shards import UnsafeTarError, check_tar, iter_samples, sha256_file
from passkit.shards.reader import DEFAULT_MAX_MEMBER

MANIFEST = "manifest.json"
INDEX = "index.parquet"

# Finding codes, stable (tests, CI and `passkit audit --json` consumers match on them).
CODES: dict[str, str] = {
    "manifest_missing": "the release has no manifest.json",
    "manifest_invalid_json": "manifest.json is not a JSON object",
    "manifest_schema": "manifest.json does not validate against the manifest JSON Schema",
    "schema_unavailable": "the manifest JSON Schema could not be found",
    "policy_invalid": "the manifest's licence policy is not a known policy",
    "file_missing": "a file listed in manifest['files'] is absent",
    "file_size": "a listed file's size differs from the manifest",
    "file_sha256": "a listed file's sha256 differs from the manifest",
    "file_path_invalid": "a listed file path leaves the release folder",
    "shard_path_invalid": "a listed shard path is not shards/<name>.tar inside the release",
    "shard_listed_twice": "the manifest lists the same shard twice",
    "shard_missing": "a listed shard is absent",
    "shard_size": "a shard's size differs from the manifest",
    "shard_sha256": "a shard's sha256 differs from the manifest (names the differing samples)",
    "shard_unlisted": "a file in shards/ that the manifest does not list",
    "shard_unsafe": "a shard is not a safe flat tar (links, traversal, devices, unreadable)",
    "shard_unreadable": "a shard could not be read to the end",
    "shard_count": "a shard's sample count differs from the manifest",
    "sample_incomplete": "a sample lacks its .jpg or its .json",
    "sample_extra_member": "a sample has members other than .jpg and .json",
    "sample_order": "samples are not sorted by key",
    "key_duplicate": "a key appears more than once in the release",
    "key_mismatch": "the json's key differs from the member key",
    "json_invalid": "a sample's json does not parse as a JSON object",
    "image_sha256": "the .jpg sha256 differs from the sha256 in its json",
    "image_invalid": "the .jpg is not a readable JPEG",
    "image_size": "the JPEG's size differs from width/height in its json",
    "image_metadata": "the JPEG carries a metadata block (EXIF, XMP, ICC, comment)",
    "license_missing": "the sample has no licence id",
    "license_unknown": "the licence id is not in the registry",
    "license_not_allowed": "the licence is not allowed by the release's policy",
    "license_inconsistent": "license_url or license_name disagree with the licence id",
    "attribution_incomplete": "a required TASL field is empty",
    "attribution_mismatch": "the attribution sentence differs from the one recomputed from the fields",
    "attribution_file": "attribution.csv misses a sample, credits one not in the release or differs from it",
    "removed_present": "a key (or an image sha256) listed in the manifest's removals is still in the release",
    "people_detected": "the rescan's people detectors fire on a kept image",
    "rescan_failed": "the people detectors named in the manifest could not be run",
    "source_license_changed": "a source's landing page names another licence than the sample's",
    # warnings (reported, do not fail the audit)
    "source_unreachable": "warning: the sample's source URL no longer serves an image",
    "source_changed": "warning: the source URL now serves a visibly different image (pHash distance)",
    "source_license_unverified": "warning: the landing page could not be fetched or names no CC licence",
    "index_missing": "index.parquet is absent",
    "index_unreadable": "index.parquet cannot be read or lacks a required column",
    "index_duplicate": "index.parquet has the same key twice",
    "index_missing_key": "a sample in the shards has no index.parquet row",
    "index_extra_key": "an index.parquet row has no sample in the shards",
    "index_shard": "index.parquet names another shard for the sample",
    "index_sha256": "the .jpg sha256 differs from index.parquet's sha256",
    "index_mismatch": "index.parquet's attribution fields differ from the sample's json",
}

KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")
SHARD_PATH_RE = re.compile(r"^shards/[A-Za-z0-9_.-]+\.tar$")
# index.parquet columns compared with the json (present ones only; key, shard, sha256 are required).
INDEX_COMPARED = ("title", "creator", "landing_url", "license", "license_url", "attribution")
INDEX_REQUIRED = ("key", "shard", "sha256")
# JSON field that holds each REQUIRED_ATTRIBUTION record field.
METADATA_BLOCKS = ("exif", "xmp", "icc_profile", "comment", "photoshop")


# ----------------------------------------------------------------------------- report


@dataclass(frozen=True, slots=True)
class Finding:
    code: str
    message: str
    shard: str | None = None  # relative path, e.g. "shards/demo-000000.tar"
    key: str | None = None  # sample key

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        where = " ".join(x for x in (self.shard, self.key) if x)
        return f"[{self.code}] {where + ': ' if where else ''}{self.message}"


@dataclass(slots=True)
class AuditStats:
    shards: int = 0  # shards listed in the manifest
    shards_read: int = 0  # shards scanned sample by sample
    samples: int = 0  # samples checked
    bytes: int = 0  # shard bytes hashed
    seconds: float = 0.0

    def get(self, name: str, default: Any = None) -> Any:
        """Mapping-style access (`stats.get("samples")`), as in `to_dict()["stats"]`."""
        return getattr(self, name, default)

    def __getitem__(self, name: str) -> Any:
        if name not in self.__slots__:
            raise KeyError(name)
        return getattr(self, name)


@dataclass(slots=True)
class AuditReport:
    release_dir: Path
    findings: list[Finding] = field(default_factory=list)
    stats: AuditStats = field(default_factory=AuditStats)
    name: str | None = None
    version: str | None = None
    suppressed: dict[str, int] = field(default_factory=dict)  # findings over the per-code limit
    warnings: list[Finding] = field(default_factory=list)  # observations that do not fail the audit

    @property
    def ok(self) -> bool:
        return not self.findings and not self.suppressed

    def counts(self) -> dict[str, int]:
        c = Counter(f.code for f in self.findings)
        for code, n in self.suppressed.items():
            c[code] += n
        return dict(sorted(c.items()))

    def by_code(self, code: str) -> list[Finding]:
        return [f for f in self.findings if f.code == code]

    def keys(self, code: str | None = None) -> set[str]:
        """Sample keys named by the findings (of one code, or of all)."""
        return {f.key for f in self.findings if f.key and (code is None or f.code == code)}

    def to_dict(self) -> dict[str, Any]:
        return {
            "release": str(self.release_dir),
            "name": self.name,
            "version": self.version,
            "ok": self.ok,
            "stats": asdict(self.stats),
            "counts": self.counts(),
            "suppressed": dict(self.suppressed),
            "findings": [f.to_dict() for f in self.findings],
            "warnings": [f.to_dict() for f in self.warnings],
        }


class _Collector:
    def __init__(self, report: AuditReport, limit: int | None):
        self.report = report
        self.limit = limit
        self.per_code: Counter[str] = Counter()

    def add(
        self, code: str, message: str, shard: str | None = None, key: str | None = None, at: int | None = None
    ) -> None:
        """Record a finding (appended, or inserted at position `at`)."""
        assert code in CODES, code
        self.per_code[code] += 1
        if self.limit is not None and self.per_code[code] > self.limit:
            self.report.suppressed[code] = self.report.suppressed.get(code, 0) + 1
            return
        f = Finding(code, message, shard, key)
        if at is None:
            self.report.findings.append(f)
        else:
            self.report.findings.insert(at, f)


# ----------------------------------------------------------------------------- schema


def load_schema() -> dict[str, Any]:
    return json.loads(schema_path().read_text(encoding="utf-8"))


def schema_errors(manifest: Any, schema: dict[str, Any] | None = None) -> list[str]:
    """Readable schema violations of a manifest, empty when it validates."""
    import jsonschema

    schema = schema if schema is not None else load_schema()
    cls = jsonschema.validators.validator_for(schema)
    validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
    out = []
    for e in sorted(validator.iter_errors(manifest), key=lambda e: list(map(str, e.absolute_path))):
        where = "/".join(str(p) for p in e.absolute_path) or "(root)"
        out.append(f"{where}: {e.message}")
    return out


# ----------------------------------------------------------------------------- helpers


def _inside(root: Path, rel: str) -> Path | None:
    """root/rel if it stays inside root (no absolute path, no `..`, no escaping symlink)."""
    if not rel or rel.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", rel):
        return None
    if ".." in rel.replace("\\", "/").split("/"):
        return None
    p = root / rel
    try:
        p.resolve().relative_to(root.resolve())
    except ValueError:
        return None
    return p


def _short(keys: Iterable[str], n: int = 5) -> str:
    ks = sorted(keys)
    more = f" and {len(ks) - n} more" if len(ks) > n else ""
    return ", ".join(ks[:n]) + more


def _nonempty(v: Any) -> bool:
    return isinstance(v, str) and v.strip() != ""


def _load_index(path: Path, add: Any) -> dict[str, dict[str, Any]] | None:
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
        missing = [c for c in INDEX_REQUIRED if c not in names]
        if missing:
            add("index_unreadable", f"{INDEX} lacks required column(s) {missing}")
            return None
        cols = [*INDEX_REQUIRED, *(c for c in INDEX_COMPARED if c in names)]
        table = pq.read_table(path, columns=cols)
    except Exception as e:  # pyarrow raises several types for corrupt files
        add("index_unreadable", f"{INDEX} cannot be read: {e}")
        return None
    rows: dict[str, dict[str, Any]] = {}
    for batch in table.to_batches():
        for row in batch.to_pylist():
            k = row["key"]
            if k in rows:
                add("index_duplicate", f"{INDEX} has key {k!r} more than once", key=k)
                continue
            rows[k] = row
    return rows


# ----------------------------------------------------------------------------- the audit


def audit(
    release_dir: Path,
    *,
    limit: int | None = 1000,
    max_member: int = DEFAULT_MAX_MEMBER,
    rescan: bool = False,
    check_sources: int = 0,
    seed: int = 0,
    fetch_spec: Any = None,
    models_dir: Path | None = None,
) -> AuditReport:
    """Check a release folder; `limit` caps stored findings per code (the rest are counted).

    `max_member`: tar members over this many bytes make a shard unsafe. `rescan`: rerun the people
    detectors. `check_sources`: re-check this many random sources (`seed` picks them; `fetch_spec`, a
    passkit.config.FetchSpec, defaults to the manifest's spec).
    """
    t0 = time.perf_counter()
    root = Path(release_dir)
    report = AuditReport(root)
    out = _Collector(report, limit)
    try:
        a = _Audit(root, report, out, max_member=max_member)
        if rescan:
            a.rescanner = _Rescan(a, models_dir)
        a.run()
        if a.rescanner is not None:
            a.rescanner.flush()
        if check_sources and a.m is not None:
            _check_sources(root, a.m, check_sources, seed, fetch_spec, out.add, report.warnings)
    finally:
        report.stats.seconds = round(time.perf_counter() - t0, 3)
    return report


class _Audit:
    def __init__(self, root: Path, report: AuditReport, out: _Collector, max_member: int = DEFAULT_MAX_MEMBER):
        self.root = root
        self.max_member = max_member
        self.m: dict[str, Any] | None = None
        self.rescanner: _Rescan | None = None
        self.removed_sha: dict[str, str] = {}  # image sha256 -> removed key
        self.report = report
        self.add = out.add
        self.policy: licenses.Policy | None = None
        self.removed: dict[str, str] = {}
        self.index: dict[str, dict[str, Any]] | None = None
        self.seen: dict[str, str] = {}  # key -> shard
        self.prev_key: str | None = None
        self.dead_shards: set[str] = set()  # listed shards that could not be scanned
        self.index_by_shard: dict[str, set[str]] = {}

    # -- manifest
    def run(self) -> None:
        m = self.manifest()
        if m is None:
            return
        self.m = m
        self.release_files(m)
        shards = self.shard_entries(m)
        self.unlisted_shards({rel for rel, _ in shards})
        index_path = self.root / INDEX
        if index_path.is_file():
            self.index = _load_index(index_path, self.add)
            for k, row in (self.index or {}).items():
                self.index_by_shard.setdefault(row.get("shard"), set()).add(k)
        else:
            self.add("index_missing", f"the release has no {INDEX}")
        for rel, entry in shards:
            self.shard(rel, entry)
        self.report.stats.shards = len(shards)
        self.index_rows()
        self.attribution_csv()

    def manifest(self) -> dict[str, Any] | None:
        path = self.root / MANIFEST
        if not path.is_file():
            self.add("manifest_missing", f"no {MANIFEST} in {self.root}")
            return None
        try:
            m = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            self.add("manifest_invalid_json", f"{MANIFEST} is not valid JSON: {e}")
            return None
        if not isinstance(m, dict):
            self.add("manifest_invalid_json", f"{MANIFEST} is a JSON {type(m).__name__}, not an object")
            return None
        self.report.name = m.get("name") if isinstance(m.get("name"), str) else None
        self.report.version = m.get("version") if isinstance(m.get("version"), str) else None
        try:
            schema = load_schema()
        except (SchemaNotFound, json.JSONDecodeError) as e:
            self.add("schema_unavailable", str(e))
        else:
            for err in schema_errors(m, schema):
                self.add("manifest_schema", err)
        pol = m.get("policy")
        if isinstance(pol, dict):
            try:
                self.policy = licenses.policy(
                    pol.get("name"), list(pol.get("allow") or []), list(pol.get("deny") or [])
                )
            except (ValueError, TypeError) as e:
                self.add("policy_invalid", f"policy {pol.get('name')!r}: {e}")
        else:
            self.add("policy_invalid", "the manifest has no licence policy")
        for r in m.get("removals") or []:
            if isinstance(r, dict) and isinstance(r.get("key"), str):
                self.removed[r["key"]] = str(r.get("reason", ""))
                if isinstance(r.get("sha256"), str):
                    self.removed_sha[r["sha256"]] = r["key"]
        return m

    def release_files(self, m: dict[str, Any]) -> None:
        files = m.get("files")
        if not isinstance(files, dict):
            return
        for rel, entry in sorted(files.items()):
            if not isinstance(entry, dict):
                continue
            p = _inside(self.root, rel)
            if p is None:
                self.add("file_path_invalid", f"listed file {rel!r} is outside the release folder")
                continue
            if not p.is_file():
                self.add("file_missing", f"listed file {rel} is absent")
                continue
            size = p.stat().st_size
            if isinstance(entry.get("bytes"), int) and size != entry["bytes"]:
                self.add("file_size", f"{rel} is {size} bytes, the manifest says {entry['bytes']}")
            digest = sha256_file(p)
            if digest != entry.get("sha256"):
                self.add("file_sha256", f"{rel} sha256 is {digest}, the manifest says {entry.get('sha256')}")

    def shard_entries(self, m: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        out: list[tuple[str, dict[str, Any]]] = []
        listed: set[str] = set()
        for entry in m.get("shards") or []:
            if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
                continue  # reported by the schema check
            rel = entry["path"]
            if not SHARD_PATH_RE.match(rel) or _inside(self.root, rel) is None:
                self.add("shard_path_invalid", f"shard path {rel!r} is not shards/<name>.tar", shard=rel)
                continue
            if rel in listed:
                self.add("shard_listed_twice", f"{rel} is listed more than once", shard=rel)
                continue
            listed.add(rel)
            out.append((rel, entry))
        return out

    def unlisted_shards(self, listed: set[str]) -> None:
        folder = self.root / "shards"
        if not folder.is_dir():
            return
        for p in sorted(folder.iterdir()):
            rel = f"shards/{p.name}"
            if rel not in listed:
                kind = "folder" if p.is_dir() else "file"
                self.add("shard_unlisted", f"{kind} {rel} is not listed in the manifest", shard=rel)

    # -- shards
    def shard(self, rel: str, entry: dict[str, Any]) -> None:
        path = self.root / rel
        if not path.is_file():
            self.add("shard_missing", f"{rel} is listed in the manifest but absent", shard=rel)
            self.dead_shards.add(rel)
            return
        size = path.stat().st_size
        self.report.stats.bytes += size
        if isinstance(entry.get("bytes"), int) and size != entry["bytes"]:
            self.add("shard_size", f"{rel} is {size} bytes, the manifest says {entry['bytes']}", shard=rel)
        digest = sha256_file(path)
        sha_differs = digest != entry.get("sha256")
        try:
            check_tar(path, self.max_member)
        except UnsafeTarError as e:
            self.add("shard_unsafe", "; ".join(e.problems), shard=rel)
            self.dead_shards.add(rel)
            if sha_differs:
                self.add(
                    "shard_sha256",
                    f"{rel} sha256 is {digest}, the manifest says {entry.get('sha256')}",
                    shard=rel,
                )
            return

        changed: list[str] = []  # samples whose bytes no longer match their json / index
        found: set[str] = set()
        count = 0
        at = len(self.report.findings)  # shard-level findings go before the samples'
        try:
            for key, group in iter_samples(path, self.max_member):
                count += 1
                found.add(key)
                self.report.stats.samples += 1
                if self.sample(rel, key, group):
                    changed.append(key)
        except Exception as e:  # a tar that passed check_tar but breaks mid-read (truncation)
            self.add(
                "shard_unreadable",
                f"{rel} could not be read to the end after {count} samples: {e}",
                shard=rel,
            )
        self.report.stats.shards_read += 1

        if isinstance(entry.get("samples"), int) and count != entry["samples"]:
            self.add(
                "shard_count",
                f"{rel} holds {count} samples, the manifest says {entry['samples']}",
                rel,
                at=at,
            )
        if sha_differs:
            msg = f"{rel} sha256 is {digest}, the manifest says {entry.get('sha256')}"
            expected = self.index_by_shard.get(rel, set()) if self.index is not None else found
            missing, added = sorted(expected - found), sorted(found - expected)
            parts = [
                f"{label}: {_short(keys)}"
                for label, keys in (
                    ("samples whose bytes differ", changed),
                    ("samples missing", missing),
                    ("samples added", added),
                )
                if keys
            ]
            msg += "; " + (
                "; ".join(parts)
                if parts
                else "no sample differs from its json and index "
                "(tar headers or padding changed, or a sample was rewritten consistently)"
            )
            named = {*changed, *missing, *added}
            self.add("shard_sha256", msg, rel, next(iter(named)) if len(named) == 1 else None, at=at)

    def sample(self, rel: str, key: str, group: dict[str, bytes]) -> bool:
        """Check one sample; True when its bytes disagree with its json or the index."""
        add = self.add
        changed = False
        if key in self.seen:
            add("key_duplicate", f"key {key} also appears in {self.seen[key]}", rel, key)
        else:
            self.seen[key] = rel
        if self.prev_key is not None and key <= self.prev_key:
            add(
                "sample_order",
                f"key {key} comes after {self.prev_key}; samples must be sorted by key",
                rel,
                key,
            )
        self.prev_key = key
        if key in self.removed:
            add(
                "removed_present",
                f"removed ({self.removed[key] or 'no reason given'}) but still in {rel}",
                rel,
                key,
            )

        extra = sorted(set(group) - {"jpg", "json"})
        if extra:
            add("sample_extra_member", f"unexpected member(s) {[f'{key}.{x}' for x in extra]}", rel, key)
        missing = [x for x in ("jpg", "json") if x not in group]
        if missing:
            add("sample_incomplete", f"missing {', '.join(f'{key}.{x}' for x in missing)}", rel, key)

        row = self.index.get(key) if self.index is not None else None
        if self.index is not None:
            if row is None:
                add("index_missing_key", f"no {INDEX} row for this sample", rel, key)
            elif row.get("shard") != rel:
                add("index_shard", f"{INDEX} places it in {row.get('shard')!r}", rel, key)

        jpg = group.get("jpg")
        digest = hashlib.sha256(jpg).hexdigest() if jpg is not None else None
        if digest is not None and digest in self.removed_sha and self.removed_sha[digest] != key:
            gone = self.removed_sha[digest]
            add(
                "removed_present",
                f"its image is removed sample {gone} ({self.removed[gone] or 'no reason given'}) under a new key",
                rel,
                key,
            )
        if digest is not None and row is not None and row.get("sha256") != digest:
            add("index_sha256", f".jpg sha256 {digest} but {INDEX} says {row.get('sha256')}", rel, key)
            changed = True

        meta: dict[str, Any] | None = None
        if "json" in group:
            try:
                parsed = json.loads(group["json"].decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                add("json_invalid", f"{key}.json does not parse: {e}", rel, key)
                changed = True
            else:
                if isinstance(parsed, dict):
                    meta = parsed
                else:
                    add(
                        "json_invalid",
                        f"{key}.json is a JSON {type(parsed).__name__}, not an object",
                        rel,
                        key,
                    )
                    changed = True
        if meta is None:
            return changed

        if meta.get("key") != key:
            add("key_mismatch", f"json key {meta.get('key')!r} differs from member key", rel, key)
            changed = True
        if digest is not None:
            if meta.get("sha256") != digest:
                add("image_sha256", f".jpg sha256 {digest} but its json says {meta.get('sha256')}", rel, key)
                changed = True
            self.image(rel, key, jpg, meta)
        self.attribution(rel, key, meta)
        if row is not None:
            diff = [c for c in INDEX_COMPARED if c in row and row[c] != meta.get(c)]
            if diff:
                add("index_mismatch", f"{INDEX} and json differ in {diff}", rel, key)
                changed = True
        return changed

    def image(self, rel: str, key: str, data: bytes, meta: dict[str, Any]) -> None:
        from PIL import Image

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                im = Image.open(io.BytesIO(data))  # header only; no pixel decode
                fmt, size, info = im.format, im.size, dict(im.info)
        except Exception as e:  # PIL raises many types for hostile bytes
            self.add("image_invalid", f"{key}.jpg is not a readable image: {e}", rel, key)
            return
        if fmt != "JPEG":
            self.add("image_invalid", f"{key}.jpg is {fmt}, not JPEG", rel, key)
        else:
            # Decode every pixel: a JPEG whose header parses can still be truncated or corrupt.
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    full = Image.open(io.BytesIO(data))
                    full.load()
            except Exception as e:
                self.add("image_invalid", f"{key}.jpg does not decode: {type(e).__name__}: {e}", rel, key)
            else:
                if self.rescanner is not None:
                    self.rescanner.add(rel, key, full)
        w, h = meta.get("width"), meta.get("height")
        if (w, h) != size:
            self.add("image_size", f"JPEG is {size[0]}x{size[1]}, its json says {w}x{h}", rel, key)
        blocks = [b for b in METADATA_BLOCKS if info.get(b)]
        if blocks:
            self.add("image_metadata", f"JPEG carries metadata: {', '.join(blocks)}", rel, key)

    def attribution(self, rel: str, key: str, meta: dict[str, Any]) -> None:
        add = self.add
        lid = meta.get("license")
        lic: licenses.License | None = None
        if not _nonempty(lid):
            add("license_missing", "no licence id in its json", rel, key)
        else:
            try:
                lic = licenses.by_id(lid)
            except licenses.LicenseError as e:
                add("license_unknown", f"licence {lid!r}: {e.detail}", rel, key)
        if lic is not None:
            if self.policy is not None and not self.policy.allows(lic):
                add(
                    "license_not_allowed", f"{lic.id} is not allowed by policy {self.policy.name!r}", rel, key
                )
            problems = []
            url = meta.get("license_url")
            if _nonempty(url):
                try:
                    if licenses.from_url(url).id != lic.id:
                        problems.append(f"license_url {url!r} is not {lic.id}")
                except licenses.LicenseError:
                    problems.append(f"license_url {url!r} is not a CC licence URL")
            name = meta.get("license_name")
            if name is not None and name != lic.name:
                problems.append(f"license_name {name!r} is not {lic.name!r}")
            if problems:
                add("license_inconsistent", "; ".join(problems), rel, key)

        fields = list(REQUIRED_ATTRIBUTION)
        if lic is not None and lic.needs_title:
            fields.append("title")
        empty = [f for f in fields if f != "license" and not _nonempty(meta.get(f))]
        if empty:
            add("attribution_incomplete", f"empty required field(s): {', '.join(empty)}", rel, key)

        if lic is not None:
            expected = licenses.attribution_sentence(
                lic, meta.get("title"), meta.get("creator"), meta.get("landing_url")
            )
            if meta.get("attribution") != expected:
                add(
                    "attribution_mismatch",
                    f"attribution {meta.get('attribution')!r} but the fields give {expected!r}",
                    rel,
                    key,
                )

    # -- attribution.csv: the credit lines redistributors copy must be the samples' own
    def attribution_csv(self) -> None:
        import csv

        path = self.root / "attribution.csv"
        if self.index is None or not path.is_file():
            return
        try:
            with open(path, newline="", encoding="utf-8") as f:
                rows = {r.get("key"): r for r in csv.DictReader(f)}
        except (UnicodeDecodeError, csv.Error) as e:
            self.add("attribution_file", f"attribution.csv cannot be read: {e}")
            return
        missing = sorted(set(self.index) - set(rows))
        extra = sorted(k for k in set(rows) - set(self.index) if k)
        if missing:
            self.add("attribution_file", f"attribution.csv lacks {len(missing)} sample(s): {_short(missing)}")
        if extra:
            self.add("attribution_file", f"attribution.csv credits {len(extra)} key(s) not in the release: {_short(extra)}")
        for k, r in sorted(rows.items(), key=lambda kv: str(kv[0])):
            want = (self.index.get(k) or {}).get("attribution") if k in self.index else None
            if want is not None and "attribution" in r and r["attribution"] != want:
                self.add("attribution_file", f"attribution.csv credit line differs from the sample's: {r['attribution']!r}",
                         (self.index.get(k) or {}).get("shard"), k)

    # -- index
    def index_rows(self) -> None:
        if self.index is None:
            return
        for key, row in self.index.items():
            if key in self.seen:
                continue
            shard = row.get("shard")
            if shard in self.dead_shards:
                continue  # the shard finding covers its samples
            if key in self.removed:
                self.add(
                    "removed_present",
                    f"removed ({self.removed[key] or 'no reason given'}) but still in {INDEX}",
                    shard,
                    key,
                )
            else:
                self.add(
                    "index_extra_key", f"{INDEX} row (shard {shard}) has no sample in the shards", shard, key
                )


# ----------------------------------------------------------------------------- rescan


class _Rescan:
    """Reruns the people detectors the manifest names on every kept image, in batches."""

    BATCH = 16

    def __init__(self, audit: _Audit, models_dir: Path | None):
        self.audit = audit
        self.models_dir = models_dir
        self.filter: Any = None
        self.failed = False
        self.pending: list[tuple[str, str, Any]] = []

    def _build(self) -> None:
        from passkit.config import DetectorSpec, PeopleSpec
        from passkit.filters.people import PeopleFilter, PeopleFilterError

        m = self.audit.m or {}
        try:
            dets = [DetectorSpec(name=d["name"], threshold=float(d["threshold"]), required=True)
                    for d in m.get("detectors") or []]
        except (KeyError, TypeError, ValueError) as e:
            self.audit.add("rescan_failed", f"the manifest's detectors cannot be rerun: {e}")
            self.failed = True
            return
        if not dets:
            self.audit.add("rescan_failed", "the manifest names no people detector to rerun")
            self.failed = True
            return
        try:
            self.filter = PeopleFilter(PeopleSpec(detectors=dets), self.models_dir)
        except (PeopleFilterError, FileNotFoundError, ValueError) as e:
            self.audit.add("rescan_failed", f"{e} (set PASSKIT_MODELS to the folder with the weights)")
            self.failed = True

    def add(self, rel: str, key: str, img: Any) -> None:
        if self.failed:
            return
        self.pending.append((rel, key, img.convert("RGB")))
        if len(self.pending) >= self.BATCH:
            self.flush()

    def flush(self) -> None:
        if not self.pending or self.failed:
            self.pending.clear()
            return
        if self.filter is None:
            self._build()
            if self.failed:
                self.pending.clear()
                return
        batch, self.pending = self.pending, []
        results = self.filter.score([img for _, _, img in batch])
        for (rel, key, _), res in zip(batch, results, strict=True):
            if res.has_person:
                fired = ", ".join(f"{d} {res.scores.get(d, 0):.3f}" for d in res.fired)
                self.audit.add("people_detected", f"the rescan's detectors fire: {fired}", rel, key)


# ----------------------------------------------------------------------------- sources

CC_LINK = re.compile(r"""(?:https?:)?//(?:www\.)?creativecommons\.org/(?:licenses|publicdomain)/[A-Za-z0-9./_-]+""")
SOURCE_PHASH_CHANGED = 12  # pHash bits: more than this and the URL serves another picture
LANDING_MAX_BYTES = 2_000_000


def page_licenses(html_text: str) -> set[str]:
    """Registry ids of the CC licences a page links to (rel="license" links and plain ones)."""
    from passkit import licenses as lic_mod

    found: set[str] = set()
    for url in CC_LINK.findall(html_text):
        try:
            found.add(lic_mod.from_url(url if url.startswith("http") else "https:" + url).id)
        except lic_mod.LicenseError:
            continue
    return found


def _get_page(url: str, fetch_spec: Any, fetcher: Any = None) -> tuple[str | None, str]:
    """(HTML text, "") or (None, why): redirects followed by hand, each hop through the SSRF guard and,
    when the fetcher keeps one, its robots.txt cache."""
    import urllib.parse

    import requests

    from passkit.fetch.ssrf import Guard, Refused

    guard = Guard(fetch_spec.allow_private)
    current = url
    try:
        for _ in range(fetch_spec.max_redirects + 1):
            guard.check_url(current)
            robots = getattr(fetcher, "robots", None)
            if robots is not None:
                parts = urllib.parse.urlsplit(current)
                path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
                if not robots.get(current).allowed(path):
                    return None, f"robots.txt of {parts.netloc} disallows {path[:200]}"
            with requests.get(current, stream=True, allow_redirects=False,
                              timeout=(fetch_spec.connect_timeout, fetch_spec.read_timeout),
                              headers={"User-Agent": fetch_spec.agent, "Accept": "text/html,*/*;q=0.5"}) as r:
                if r.is_redirect and r.headers.get("location"):
                    current = requests.compat.urljoin(current, r.headers["location"])
                    continue
                if r.status_code != 200:
                    return None, f"landing page HTTP {r.status_code}"
                body = r.raw.read(LANDING_MAX_BYTES, decode_content=True)
                return body.decode(r.encoding or "utf-8", errors="replace"), ""
        return None, "too many redirects"
    except Refused as e:
        return None, f"{e.reason}: {e.detail}"
    except requests.RequestException as e:
        return None, f"{type(e).__name__}: {str(e)[:200]}"


def _check_sources(root: Path, m: dict[str, Any], n: int, seed: int, fetch_spec: Any, add: Any,
                   warnings_out: list[Finding]) -> None:
    """Fetch `n` random samples' source URLs and landing pages again; compare image and licence."""
    import random

    import pyarrow.parquet as pq

    from passkit import images
    from passkit.config import FetchSpec, ImageSpec
    from passkit.fetch import Fetcher
    from passkit.filters.dedup import hamming

    if fetch_spec is None:
        try:
            fetch_spec = FetchSpec.model_validate((m.get("spec") or {}).get("fetch") or {})
        except ValueError:
            fetch_spec = FetchSpec()
    try:
        image_spec = ImageSpec.model_validate((m.get("spec") or {}).get("image") or {})
    except ValueError:
        image_spec = ImageSpec()
    cols = ["key", "shard", "source_url", "landing_url", "license", "phash"]
    try:
        rows = pq.read_table(root / INDEX, columns=cols).to_pylist()
    except Exception as e:
        add("index_unreadable", f"{INDEX} cannot be read for --check-sources: {e}")
        return
    rows.sort(key=lambda r: r["key"])
    picked = random.Random(seed).sample(rows, min(n, len(rows)))
    fetcher = Fetcher(fetch_spec)

    def warn(code: str, msg: str, r: dict[str, Any]) -> None:
        warnings_out.append(Finding(code, msg, r.get("shard"), r["key"]))

    def one(r: dict[str, Any]) -> None:
        res = fetcher.fetch(r["source_url"]) if r.get("source_url") else None
        if res is None or not res.ok:
            why = "no source URL" if res is None else f"{res.reason}: {res.detail}"
            warn("source_unreachable", f"{r.get('source_url')}: {why}", r)
        else:
            try:
                ph = images.check(res.data, image_spec).info.phash
            except images.ImageReject as e:
                warn("source_changed", f"{r['source_url']} no longer decodes as an image ({e.reason})", r)
            else:
                d = hamming(ph, r["phash"]) if r.get("phash") else 64
                if d > SOURCE_PHASH_CHANGED:
                    warn("source_changed", f"{r['source_url']} now serves another image (pHash distance {d})", r)
        if not r.get("landing_url"):
            warn("source_license_unverified", "the sample has no landing page", r)
            return
        text, why = _get_page(r["landing_url"], fetch_spec, fetcher)
        if text is None:
            warn("source_license_unverified", f"{r['landing_url']}: {why}", r)
            return
        found = page_licenses(text)
        if not found:
            warn("source_license_unverified", f"{r['landing_url']} links to no Creative Commons licence", r)
        elif r.get("license") not in found:
            add("source_license_changed",
                f"{r['landing_url']} now names {', '.join(sorted(found))}, the sample says {r.get('license')}",
                r.get("shard"), r["key"])

    for r in picked:
        one(r)


# ----------------------------------------------------------------------------- html


def render_html(report: AuditReport) -> str:
    """The audit report as one self-contained HTML page."""
    from passkit.release.templates import render

    return render("audit.html.j2", r=report, d=report.to_dict(), codes=CODES)


def write_html(report: AuditReport, path: Path) -> None:
    Path(path).write_text(render_html(report), encoding="utf-8")

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
- keys listed in the manifest's removals are absent; the other files in manifest["files"] match
  their sha256 and size.

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
    "removed_present": "a key listed in the manifest's removals is still in the release",
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
JSON_FIELD = {"license_id": "license"}
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


def audit(release_dir: Path, *, limit: int | None = 1000) -> AuditReport:
    """Check a release folder; `limit` caps stored findings per code (the rest are counted)."""
    t0 = time.perf_counter()
    root = Path(release_dir)
    report = AuditReport(root)
    out = _Collector(report, limit)
    try:
        _Audit(root, report, out).run()
    finally:
        report.stats.seconds = round(time.perf_counter() - t0, 3)
    return report


class _Audit:
    def __init__(self, root: Path, report: AuditReport, out: _Collector):
        self.root = root
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
            check_tar(path)
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
            for key, group in iter_samples(path):
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

        fields = [JSON_FIELD.get(f, f) for f in REQUIRED_ATTRIBUTION]
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

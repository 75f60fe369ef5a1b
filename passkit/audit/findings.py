"""What an audit reports: `Finding`s under stable codes (`CODES`), gathered in an `AuditReport`."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

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
    "shard_index_mismatch": "a shard's index file (shards/<name>.idx, DALI's webdataset index) differs from the one derived from its tar",
    "shard_index_missing": "the release lists index files for its shards, but none for this shard",
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
    "image_progressive": "the JPEG is progressive, not baseline (GPU decoders such as nvJPEG's hardware path need baseline)",
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
    "source_settings_ignored": "warning: the release asked for network permissions (fetch.allow_private) the audit did not take",
    "shard_index_absent": "warning: the release has no shard index files (built before passkit wrote them): DALI derives them itself, slowly on large shards",
    "index_missing": "index.parquet is absent",
    "index_unreadable": "index.parquet cannot be read or lacks a required column",
    "index_duplicate": "index.parquet has the same key twice",
    "index_missing_key": "a sample in the shards has no index.parquet row",
    "index_extra_key": "an index.parquet row has no sample in the shards",
    "index_shard": "index.parquet names another shard for the sample",
    "index_sha256": "the .jpg sha256 differs from index.parquet's sha256",
    "index_mismatch": "index.parquet's attribution fields differ from the sample's json",
    "index_license_spdx": "index.parquet's license_spdx is not the SPDX id of its licence",
    "croissant_invalid": "croissant.json does not parse as a JSON-LD object",
    "croissant_mismatch": "croissant.json names other files, sha256s or sizes than the manifest",
}


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
    release_dir: Path | str  # a folder, or the URL of a release audited where it is stored
    findings: list[Finding] = field(default_factory=list)
    stats: AuditStats = field(default_factory=AuditStats)
    name: str | None = None
    version: str | None = None
    suppressed: dict[str, int] = field(default_factory=dict)  # findings over the per-code limit
    warnings: list[Finding] = field(default_factory=list)  # observations that do not fail the audit
    # --sample: {fraction, seed, shards, shards_checked, samples_checked}; None for a full audit
    sample: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        """No finding in what was checked (for a sampled audit: in the shards it read)."""
        return not self.findings and not self.suppressed

    @property
    def complete(self) -> bool:
        """Every shard was read sample by sample: only then does `ok` vouch for the whole release."""
        return self.sample is None

    def scope(self) -> str:
        """One line saying how much of the release was checked."""
        s = self.sample
        if s is None:
            return "full audit: every shard and sample checked"
        return (f"SAMPLED audit (fraction {s['fraction']:g}, seed {s['seed']}): {s['shards_checked']} of "
                f"{s['shards']} shards ({s['samples_checked']} samples) read sample by sample, every shard's "
                f"size and sha256 checked; the release is NOT fully verified")

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
            "complete": self.complete,
            "verified": self.ok and self.complete,  # ok alone does not vouch for the shards a sample skipped
            "sample": dict(self.sample) if self.sample is not None else None,
            "scope": self.scope(),
            "stats": asdict(self.stats),
            "counts": self.counts(),
            "suppressed": dict(self.suppressed),
            "findings": [f.to_dict() for f in self.findings],
            "warnings": [f.to_dict() for f in self.warnings],
        }


class Collector:
    """Adds findings to a report, keeping at most `limit` per code (the rest are only counted)."""

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

    def suppress(self, code: str) -> None:
        """Count a finding known to be over the per-code limit (a worker already left its text out)."""
        assert code in CODES and self.limit is not None, code
        self.per_code[code] += 1
        self.report.suppressed[code] = self.report.suppressed.get(code, 0) + 1

    def warn(self, code: str, message: str, shard: str | None = None, key: str | None = None) -> None:
        """Record a warning: reported, never limited, and it does not fail the audit."""
        assert code in CODES, code
        self.report.warnings.append(Finding(code, message, shard, key))

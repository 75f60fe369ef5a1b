"""The release manifest: what a release is, how it was made, and the checksums that prove it."""

from __future__ import annotations

import json
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import jsonschema

from passkit.config import PipelineSpec

SCHEMA_VERSION = 1


SCHEMA_NAME = "manifest.schema.json"


class SchemaNotFound(FileNotFoundError):
    """The manifest JSON Schema is neither in the source tree nor shipped as package data."""


def schema_path() -> Path:
    """The manifest JSON Schema: the repository's manifests/ folder, else a packaged copy."""
    pkg = Path(__file__).resolve().parents[1]
    candidates = [pkg.parent / "manifests" / SCHEMA_NAME, pkg / "data" / SCHEMA_NAME]
    for p in candidates:
        if p.is_file():
            return p
    raise SchemaNotFound(
        "manifest JSON Schema not found; looked in "
        + ", ".join(str(p) for p in candidates)
        + " (install passkit from a source checkout, or ship manifests/manifest.schema.json as passkit/data/)"
    )


@cache
def schema() -> dict[str, Any]:
    return json.loads(schema_path().read_text(encoding="utf-8"))


def validation_errors(m: dict[str, Any]) -> list[str]:
    v = jsonschema.Draft202012Validator(schema(), format_checker=jsonschema.FormatChecker())
    return [f"{'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}"
            for e in sorted(v.iter_errors(m), key=lambda e: list(map(str, e.absolute_path)))]


def passkit_version() -> str:
    try:
        return metadata.version("passkit")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def make(
    *,
    spec: PipelineSpec,
    created: str,
    source: dict[str, Any],
    detectors: list[dict[str, Any]],
    detectors_skipped: list[dict[str, str]],
    counts: dict[str, Any],
    shards: list[dict[str, Any]],
    files: dict[str, dict[str, Any]],
    removals: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    from passkit.images import modification_note

    return {
        "schema_version": SCHEMA_VERSION,
        "name": spec.name,
        "version": spec.version,
        "release": spec.release_name,
        "created": created,
        "passkit_version": passkit_version(),
        "description": spec.description,
        "spec_hash": spec.spec_hash(),
        "spec": spec.canonical(),
        "source": source,
        "policy": spec.license.build().describe(),
        "detectors": detectors,
        "detectors_skipped": detectors_skipped,
        "image": {
            "max_side": spec.image.max_side,
            "fit": spec.image.fit,
            "jpeg_quality": spec.image.jpeg_quality,
            "modification": modification_note(spec.image),
        },
        "counts": counts,
        "shards": shards,
        "files": files,
        "removals": removals or [],
        "validation": [],
    }


def write(path: Path, m: dict[str, Any]) -> None:
    errors = validation_errors(m)
    if errors:
        raise ValueError("refusing to write a manifest that fails its schema:\n  " + "\n  ".join(errors))
    path.write_text(json.dumps(m, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def load(release_dir: Path) -> dict[str, Any]:
    p = Path(release_dir) / "manifest.json"
    if not p.is_file():
        raise FileNotFoundError(f"{release_dir}: no manifest.json — is this a passkit release folder?")
    return json.loads(p.read_text(encoding="utf-8"))


def add_validation(release_dir: Path, entry: dict[str, Any]) -> dict[str, Any]:
    """Append a validation entry (recipe, preset, seed, metrics, verdict) to manifest.json's
    "validation" list and rewrite the manifest atomically. The manifest is not in manifest["files"],
    so audit's checksums are unaffected."""
    path = Path(release_dir) / "manifest.json"
    m = load(Path(release_dir))
    m.setdefault("validation", []).append(entry)
    errors = validation_errors(m)
    if errors:
        raise ValueError("the validation entry would make the manifest fail its schema:\n  " + "\n  ".join(errors))
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(m, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return m

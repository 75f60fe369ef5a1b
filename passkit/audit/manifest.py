"""The manifest: JSON, schema, licence policy and removals; the release files and shard list it records."""

from __future__ import annotations

import json
import re
from typing import Any

from passkit import licenses
from passkit.audit.context import MANIFEST, AuditContext, inside
from passkit.release.manifest import SchemaNotFound, schema_path
from passkit.shards import sha256_file
from passkit.shards.wdsindex import index_path

SHARD_PATH_RE = re.compile(r"^shards/[A-Za-z0-9_.-]+\.tar$")


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


def check_manifest(ctx: AuditContext) -> None:
    """Read and validate manifest.json into `ctx.m` (left None when there is none to read)."""
    path = ctx.root / MANIFEST
    if not path.is_file():
        ctx.add("manifest_missing", f"no {MANIFEST} in {ctx.remote or ctx.root}")
        return
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        ctx.add("manifest_invalid_json", f"{MANIFEST} is not valid JSON: {e}")
        return
    if not isinstance(m, dict):
        ctx.add("manifest_invalid_json", f"{MANIFEST} is a JSON {type(m).__name__}, not an object")
        return
    ctx.report.name = m.get("name") if isinstance(m.get("name"), str) else None
    ctx.report.version = m.get("version") if isinstance(m.get("version"), str) else None
    try:
        schema = load_schema()
    except (SchemaNotFound, json.JSONDecodeError) as e:
        ctx.add("schema_unavailable", str(e))
    else:
        for err in schema_errors(m, schema):
            ctx.add("manifest_schema", err)
    pol = m.get("policy")
    if isinstance(pol, dict):
        try:
            ctx.policy = licenses.policy(pol.get("name"), list(pol.get("allow") or []), list(pol.get("deny") or []))
        except (ValueError, TypeError) as e:
            ctx.add("policy_invalid", f"policy {pol.get('name')!r}: {e}")
    else:
        ctx.add("policy_invalid", "the manifest has no licence policy")
    for r in m.get("removals") or []:
        if isinstance(r, dict) and isinstance(r.get("key"), str):
            ctx.removed[r["key"]] = str(r.get("reason", ""))
            if isinstance(r.get("sha256"), str):
                ctx.removed_sha[r["sha256"]] = r["key"]
    ctx.m = m


def check_release_files(ctx: AuditContext) -> None:
    """The files in manifest["files"]: inside the release, present, with their size and sha256."""
    assert ctx.m is not None
    files = ctx.m.get("files")
    if not isinstance(files, dict):
        return
    for rel, entry in sorted(files.items()):
        if not isinstance(entry, dict):
            continue
        p = inside(ctx.root, rel)
        if p is None:
            ctx.add("file_path_invalid", f"listed file {rel!r} is outside the release folder")
            continue
        if not p.is_file():
            ctx.add("file_missing", f"listed file {rel} is absent")
            continue
        size = p.stat().st_size
        if isinstance(entry.get("bytes"), int) and size != entry["bytes"]:
            ctx.add("file_size", f"{rel} is {size} bytes, the manifest says {entry['bytes']}")
        digest = sha256_file(p)
        if digest != entry.get("sha256"):
            ctx.add("file_sha256", f"{rel} sha256 is {digest}, the manifest says {entry.get('sha256')}")


def check_shard_list(ctx: AuditContext) -> None:
    """The shards the manifest lists (valid paths, each once, into `ctx.shards`) against shards/."""
    assert ctx.m is not None
    listed: set[str] = set()
    files = ctx.m.get("files") if isinstance(ctx.m.get("files"), dict) else {}
    for entry in ctx.m.get("shards") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            continue  # reported by the schema check
        rel = entry["path"]
        if not SHARD_PATH_RE.match(rel) or inside(ctx.root, rel) is None:
            ctx.add("shard_path_invalid", f"shard path {rel!r} is not shards/<name>.tar", shard=rel)
            continue
        if rel in listed:
            ctx.add("shard_listed_twice", f"{rel} is listed more than once", shard=rel)
            continue
        listed.add(rel)
        ctx.shards.append((rel, entry))

    if ctx.remote is not None:
        found = ctx.shard_listing or []  # None: a store that cannot list (HTTP), checked no further
    else:
        folder = ctx.root / "shards"
        found = sorted((p.name, p.is_dir()) for p in folder.iterdir()) if folder.is_dir() else []
    for name, is_dir in found:
        rel = f"shards/{name}"
        if rel not in listed and (is_dir or rel not in files):  # a shard's index file is listed in files
            kind = "folder" if is_dir else "file"
            ctx.add("shard_unlisted", f"{kind} {rel} is not listed in the manifest", shard=rel)


def check_shard_indexes(ctx: AuditContext) -> None:
    """Which shards have an index file listed (ctx.wds_indexes; check_shards compares each with its
    tar): every shard, or, in a release built before index files, none (a warning: DALI then derives
    them itself). Their bytes are checked against the manifest with the other files."""
    assert ctx.m is not None
    files = ctx.m.get("files") if isinstance(ctx.m.get("files"), dict) else {}
    for rel, _ in ctx.shards:
        if index_path(rel) in files:
            ctx.wds_indexes[rel] = index_path(rel)
    if not ctx.shards:
        return
    if not ctx.wds_indexes:
        ctx.out.warn("shard_index_absent", "no shard has an index file (shards/<name>.idx): a release from "
                     "before passkit wrote them; `--loader dali` derives them itself, and a takedown adds them")
        return
    for rel, _ in ctx.shards:
        if rel not in ctx.wds_indexes:
            ctx.add("shard_index_missing", f"{index_path(rel)} is not listed in the manifest's files, as the "
                    "other shards' index files are", shard=rel)

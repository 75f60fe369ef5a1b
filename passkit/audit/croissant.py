"""croissant.json against the manifest: the Croissant description must name the release's own files.

Its bytes are covered by the manifest's checksums (check_release_files). This check catches what a
checksum cannot: a croissant.json rewritten and re-hashed in the manifest, or one left from another
build, that names shards or tables with other sha256s or sizes than the manifest, or misses a shard.
"""

from __future__ import annotations

import json
from typing import Any

from passkit.audit.context import AuditContext, inside

CROISSANT = "croissant.json"


def check_croissant(ctx: AuditContext) -> None:
    assert ctx.m is not None
    files = ctx.m.get("files")
    if not isinstance(files, dict) or CROISSANT not in files:
        return  # a release from before croissant.json; its absence from the files is not a finding
    path = inside(ctx.root, CROISSANT)
    if path is None or not path.is_file():
        return  # reported as file_missing
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        objects = [d for d in doc.get("distribution") or [] if isinstance(d, dict) and _is_file_object(d)]
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError) as e:
        ctx.add("croissant_invalid", f"{CROISSANT} is not a JSON-LD object: {e}")
        return
    expected: dict[str, dict[str, Any]] = {}
    for s in ctx.m.get("shards") or []:
        if isinstance(s, dict) and isinstance(s.get("path"), str):
            expected[s["path"]] = s
    for name, entry in files.items():
        if name.endswith(".parquet") and isinstance(entry, dict):
            expected[name] = entry
    named: set[str] = set()
    for obj in objects:
        url = obj.get("contentUrl")
        want = expected.get(url) if isinstance(url, str) else None
        if want is None:
            if isinstance(url, str) and url in files and isinstance(files[url], dict):
                want = files[url]  # another listed file (attribution.csv)
            else:
                ctx.add("croissant_mismatch", f"{CROISSANT} names {url!r}, which the manifest does not list")
                continue
        named.add(url)
        if obj.get("sha256") != want.get("sha256"):
            ctx.add("croissant_mismatch", f"{CROISSANT} gives {url} sha256 {obj.get('sha256')}, the manifest "
                    f"{want.get('sha256')}")
        size = f"{want['bytes']} B" if isinstance(want.get("bytes"), int) else None
        if size is not None and obj.get("contentSize") not in (None, size):
            ctx.add("croissant_mismatch", f"{CROISSANT} gives {url} size {obj.get('contentSize')}, the manifest {size}")
    missing = sorted(set(expected) - named)
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        ctx.add("croissant_mismatch", f"{CROISSANT} does not describe {shown}")


def _is_file_object(d: dict[str, Any]) -> bool:
    t = d.get("@type")
    types = t if isinstance(t, list) else [t]
    return any(isinstance(x, str) and x.endswith("FileObject") for x in types)

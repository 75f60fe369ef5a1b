"""What a publish uploads, in the order it uploads it: shards, then the other files, the manifest last.

A reader finds a release through its manifest, so the manifest goes up only when everything it names
is there and verified; shards come first because they are most of the bytes. Shards and listed files
take their sha256 and size from the manifest (they are checked against them after the upload, so a
local file that no longer matches its manifest is caught there); anything else in the folder, and
the manifest itself, is hashed here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from passkit.shards import sha256_file

MANIFEST = "manifest.json"


def _phase(rel: str) -> int:
    """0 for a shard's tar, 1 for every other file (a shard's small index file among them)."""
    return 0 if rel.startswith("shards/") and rel.endswith(".tar") else 1


class PublishError(Exception):
    """A publish that cannot start or did not verify; the message says what to do."""


@dataclass(frozen=True, slots=True)
class ReleaseObject:
    rel: str  # path inside the release, "/"-separated
    size: int
    sha256: str
    phase: int  # 0 shard tars, 1 the other files, 2 the manifest: each phase starts when the last is verified


def release_objects(release_dir: Path) -> list[ReleaseObject]:
    """Every file of a local release folder, in upload order; PublishError when it is not a release or a
    listed file is missing or of another size than its manifest says."""
    root = Path(release_dir)
    path = root / MANIFEST
    if not path.is_file():
        raise PublishError(f"{root}: no {MANIFEST}; publish a release folder (releases/<name>-<version>)")
    try:
        m: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PublishError(f"{path} is not valid JSON ({e}); run `passkit audit {root}`") from e
    listed: dict[str, tuple[int, str]] = {}
    for entry in [*(m.get("shards") or []), *({"path": k, **v} for k, v in (m.get("files") or {}).items())]:
        listed[str(entry["path"])] = (int(entry["bytes"]), str(entry["sha256"]))
    out: list[ReleaseObject] = []
    problems: list[str] = []
    for rel, (size, sha) in listed.items():
        p = root / rel
        if not p.is_file():
            problems.append(f"{rel} is missing")
        elif p.stat().st_size != size:
            problems.append(f"{rel} is {p.stat().st_size} bytes, the manifest says {size}")
        else:
            out.append(ReleaseObject(rel, size, sha, _phase(rel)))
    if problems:
        raise PublishError(f"{root} does not match its manifest ({'; '.join(problems[:5])}); "
                           f"run `passkit audit {root}` and rebuild or repair it before publishing")
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        # partial and temporary files of a build or takedown in progress are never part of a release
        if p.is_file() and rel not in listed and rel != MANIFEST and not any(s.startswith(".") for s in rel.split("/")):
            out.append(ReleaseObject(rel, p.stat().st_size, sha256_file(p), _phase(rel)))
    out.sort(key=lambda o: (o.phase, o.rel))
    out.append(ReleaseObject(MANIFEST, path.stat().st_size, sha256_file(path), 2))
    return out

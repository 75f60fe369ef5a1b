"""Takedowns: a new version of a release without the works a creator asked to remove.

CC licences let a licensor ask a reuser to remove their credit or material; this is how a
maintainer honours that without rebuilding from staging:

    passkit takedown releases/demo-1.0.0 --creator "Stefan van der Walt" --reason "creator request"

writes releases/demo-1.0.1 where

- shards without a removed sample are hard links (or byte copies) of the old ones: same sha256,
  so mirrors and caches keep them;
- shards with a removed sample are rewritten, still sorted, deterministically (same order, same
  tar headers); a shard left empty is dropped;
- index.parquet loses the rows, rejected.parquet gains them (stage "takedown", the reason);
- the manifest lists every removal ({key, reason, sha256, version}) after the older ones, and a
  `previous` pointer (release, version, sha256 of its manifest); counts are updated;
- every document (attribution files, licences, card, report) is regenerated.

The old version is left untouched. `passkit audit` on the new one proves the removed keys, and any
sample with a removed image's sha256, are absent.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from passkit.atomic import atomic_path
from passkit.config import TakedownSpec
from passkit.records import Stage, Status
from passkit.release import documents, manifest
from passkit.release.build import INDEX_FILE, MANIFEST_FILE, REJECTED_FILE
from passkit.release.curate import takedown_matches
from passkit.shards import iter_samples, sha256_file, write_tar


class TakedownError(ValueError):
    """The request cannot be applied (nothing matches, the target exists, the release is unreadable)."""


@dataclass(slots=True)
class TakedownResult:
    path: Path
    version: str
    removed: list[dict[str, Any]]  # {key, reason, sha256, shard}
    shards_kept: list[str] = field(default_factory=list)  # byte-identical to the old version
    shards_rewritten: list[str] = field(default_factory=list)
    shards_dropped: list[str] = field(default_factory=list)  # left empty


def next_version(version: str) -> str:
    """1.0.0 -> 1.0.1, 2 -> 3, 1.0.0-rc1 -> 1.0.0-rc2; otherwise append ".1"."""
    m = re.match(r"^(.*?)(\d+)$", version)
    if not m:
        return version + ".1"
    return f"{m.group(1)}{int(m.group(2)) + 1}"


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def takedown(
    release_dir: Path,
    requests: list[TakedownSpec],
    *,
    version: str | None = None,
    out_dir: Path | None = None,
    created: str | None = None,
) -> TakedownResult:
    """Write a new version of `release_dir` without the samples `requests` match."""
    from passkit.release.build import _created

    src = Path(release_dir)
    if not requests:
        raise TakedownError("no removal request: give --key, --creator or --source-url")
    old = manifest.load(src)
    errors = manifest.validation_errors(old)
    if errors:
        raise TakedownError(f"{src}/manifest.json fails its schema; run `passkit audit {src}` first: {errors[0]}")
    index = pq.read_table(src / INDEX_FILE)
    rows = index.to_pylist()
    hits: dict[str, tuple[dict[str, Any], TakedownSpec]] = {}
    for r in rows:
        t = next((t for t in requests if takedown_matches(r, t)), None)
        if t is not None:
            hits[r["key"]] = (r, t)
    if not hits:
        asked = "; ".join(
            ", ".join(f"{k}={v!r}" for k, v in t.model_dump().items() if v and k != "reason") for t in requests
        )
        raise TakedownError(f"no sample of {old['release']} matches {asked}; keys and creators are in index.parquet "
                            f"(`passkit query {src} \"SELECT key, creator, source_url FROM samples\"`)")

    new_version = version or next_version(old["version"])
    if new_version == old["version"]:
        raise TakedownError(f"the new version must differ from {old['version']}")
    dst = Path(out_dir) if out_dir else src.with_name(f"{old['name']}-{new_version}")
    if dst.exists():
        raise TakedownError(f"{dst} already exists; choose another --version or remove it")
    result = TakedownResult(dst, new_version, [])
    with atomic_path(dst) as tmp:  # the new version appears whole or not at all
        (tmp / "shards").mkdir(parents=True)
        shards: list[dict[str, Any]] = []
        for entry in old["shards"]:
            rel = entry["path"]
            in_shard = [k for k, (r, _) in hits.items() if r["shard"] == rel]
            if not in_shard:
                _link_or_copy(src / rel, tmp / rel)
                if sha256_file(tmp / rel) != entry["sha256"]:
                    raise TakedownError(f"{src / rel} does not match its manifest sha256; audit the release first")
                shards.append(dict(entry))
                result.shards_kept.append(rel)
                continue
            drop = set(in_shard)
            members: list[tuple[str, bytes]] = []
            count = 0
            for key, group in iter_samples(src / rel):
                if key in drop:
                    continue
                count += 1
                members += [(f"{key}.{ext}", data) for ext, data in group.items()]
            if count == 0:
                result.shards_dropped.append(rel)
                continue
            info = write_tar(tmp / rel, members)
            shards.append({"path": rel, "sha256": info.sha256, "bytes": info.bytes, "samples": count})
            result.shards_rewritten.append(rel)

        keep_rows = [r for r in rows if r["key"] not in hits]
        pq.write_table(pa.Table.from_pylist(keep_rows, schema=index.schema), tmp / INDEX_FILE)
        rej = pq.read_table(src / REJECTED_FILE)
        rej_rows = rej.to_pylist()
        added = []
        for key in sorted(hits):
            r, t = hits[key]
            row = {c: r.get(c) for c in rej.schema.names}
            row.update({"key": key, "url": r.get("source_url"), "stage": str(Stage.TAKEDOWN), "reason": "takedown",
                        "detail": t.reason})
            if "status" in row:
                row["status"] = str(Status.REJECTED)
            if "transient" in row:
                row["transient"] = False
            added.append(row)
            result.removed.append({"key": key, "reason": t.reason, "sha256": r["sha256"], "shard": r["shard"]})
        rej_rows += added
        pq.write_table(pa.Table.from_pylist(rej_rows, schema=rej.schema), tmp / REJECTED_FILE)

        m = json.loads(json.dumps(old))
        m["version"] = new_version
        m["release"] = f"{old['name']}-{new_version}"
        m["created"] = created or _created()
        m["previous"] = {"release": old["release"], "version": old["version"],
                         "manifest_sha256": sha256_file(src / MANIFEST_FILE)}
        m["removals"] = [*old.get("removals", []),
                         *({"key": x["key"], "reason": x["reason"], "sha256": x["sha256"], "version": new_version}
                           for x in result.removed)]
        c = m["counts"]
        n = len(result.removed)
        c["kept"] = c["kept"] - n
        c["rejected"] = c["rejected"] + n
        by_stage, by_reason = Counter(c["by_stage"]), Counter(c["by_reason"])
        by_stage[str(Stage.TAKEDOWN)] += n
        by_reason["takedown"] += n
        c["by_stage"], c["by_reason"] = dict(sorted(by_stage.items())), dict(sorted(by_reason.items()))
        m["shards"] = shards
        m["files"] = {}
        index_rows = [{**r, "scores": r.get("scores") or []} for r in keep_rows]
        written = documents.write_all(tmp, m, index_rows, rej_rows)
        m["files"] = documents.file_entries(tmp, [INDEX_FILE, REJECTED_FILE, *written])
        manifest.write(tmp / MANIFEST_FILE, m)
    return result

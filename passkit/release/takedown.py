"""Takedowns: a new version of a release without the works a creator asked to remove.

CC licences let a licensor ask a reuser to remove their credit or material; this is how a
maintainer honours that without rebuilding from staging:

    passkit takedown releases/demo-1.0.0 --creator "Stefan van der Walt" --reason "creator request"

writes releases/demo-1.0.1 where

- shards without a removed sample are hard links (or byte copies) of the old ones: same sha256,
  so mirrors and caches keep them;
- shards with a removed sample are rewritten, still sorted, deterministically (same order, same
  tar headers); a shard left empty is dropped;
- every shard gets its DALI index file (shards/<name>.idx, passkit.shards.wdsindex), derived from
  its tar, so a version made from a release older than index files has them;
- index.parquet loses the rows, rejected.parquet gains them (stage "takedown", the reason);
- the manifest lists every removal ({key, reason, sha256, version}) after the older ones, and a
  `previous` pointer (release, version, sha256 of its manifest); counts are updated;
- every document (attribution files, licences, card, report) is regenerated.

It streams, for releases of millions of samples: the index is read in record batches (first only the
columns a request looks at), the new index.parquet and rejected.parquet are written in row groups of
tables.ROW_GROUP rows as the build writes them (a smaller table is the one row group pq.write_table
gives it), and a rewritten shard passes through one sample at a time. Only the removed rows are held.

The old version is left untouched. `passkit audit` on the new one proves the removed keys, and any
sample with a removed image's sha256, are absent.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from passkit.atomic import atomic_path
from passkit.config import TakedownSpec
from passkit.parquetio import open_parquet
from passkit.records import Stage, Status
from passkit.release import documents, manifest
from passkit.release.build import INDEX_FILE, MANIFEST_FILE, REJECTED_FILE
from passkit.release.curate import takedown_matches
from passkit.release.tables import ROW_GROUP, RowGroupWriter
from passkit.shards import iter_samples, sha256_file, write_tar
from passkit.shards.wdsindex import derive_index, format_index, index_path, write_index

BATCH_ROWS = 8192
MATCH_COLUMNS = ["key", "shard", "creator", "creator_url", "source_url", "url", "landing_url"]  # takedown_matches


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


def _matches(index_file: pq.ParquetFile, requests: list[TakedownSpec]) -> dict[str, tuple[str, TakedownSpec]]:
    """key -> (shard, the first request that covers it), reading only the columns requests look at."""
    cols = [c for c in MATCH_COLUMNS if c in index_file.schema_arrow.names]
    hits: dict[str, tuple[str, TakedownSpec]] = {}
    for batch in index_file.iter_batches(batch_size=BATCH_ROWS, columns=cols):
        for r in batch.to_pylist():
            t = next((t for t in requests if takedown_matches(r, t)), None)
            if t is not None:
                hits[r["key"]] = (r["shard"], t)
    return hits


def _write_index(index_file: pq.ParquetFile, drop: set[str], path: Path) -> list[dict[str, Any]]:
    """Copy the index without the rows of `drop` to `path`; returns those rows."""
    import pyarrow.compute as pc

    value_set = pa.array(sorted(drop), pa.string())
    removed: list[dict[str, Any]] = []
    with RowGroupWriter(path, index_file.schema_arrow) as out:
        for batch in index_file.iter_batches(batch_size=ROW_GROUP):
            gone = pc.is_in(batch.column("key"), value_set=value_set)
            if pc.any(gone).as_py():
                removed += batch.filter(gone).to_pylist()
                batch = batch.filter(pc.invert(gone))
            out.write(batch)
    return removed


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
    index_file = open_parquet(src / INDEX_FILE)
    hits = _matches(index_file, requests)
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
        shard_indexes: dict[str, dict[str, Any]] = {}  # each shard's DALI index file, for manifest["files"]
        by_shard: dict[str, set[str]] = {}
        for k, (shard, _) in hits.items():
            by_shard.setdefault(shard, set()).add(k)
        for entry in old["shards"]:
            rel = entry["path"]
            drop = by_shard.get(rel, set())
            if not drop:
                _link_or_copy(src / rel, tmp / rel)
                if sha256_file(tmp / rel) != entry["sha256"]:
                    raise TakedownError(f"{src / rel} does not match its manifest sha256; audit the release first")
                # derived from the tar, not copied: a release from before index files gets them too
                shard_indexes[index_path(rel)] = write_index(tmp / index_path(rel), derive_index(tmp / rel))
                shards.append(dict(entry))
                result.shards_kept.append(rel)
                continue
            count = 0

            def members(rel: str = rel, drop: set[str] = drop) -> Iterator[tuple[str, bytes]]:
                nonlocal count
                for key, group in iter_samples(src / rel):
                    if key not in drop:
                        count += 1
                        yield from ((f"{key}.{ext}", data) for ext, data in group.items())

            layout: list[tuple[str, int, int]] = []
            info = write_tar(tmp / rel, members(), layout)  # one sample in memory at a time
            if count == 0:
                (tmp / rel).unlink()
                result.shards_dropped.append(rel)
                continue
            shard_indexes[index_path(rel)] = write_index(tmp / index_path(rel), format_index(layout))
            shards.append({"path": rel, "sha256": info.sha256, "bytes": info.bytes, "samples": count})
            result.shards_rewritten.append(rel)

        removed_rows = _write_index(index_file, set(hits), tmp / INDEX_FILE)
        rejected_file = open_parquet(src / REJECTED_FILE)
        names = rejected_file.schema_arrow.names
        added = []
        for key, r in sorted({r["key"]: r for r in removed_rows}.items()):
            t = hits[key][1]
            row = {c: r.get(c) for c in names}
            row.update({"key": key, "url": r.get("source_url"), "stage": str(Stage.TAKEDOWN), "reason": "takedown",
                        "detail": t.reason})
            if "status" in row:
                row["status"] = str(Status.REJECTED)
            if "transient" in row:
                row["transient"] = False
            added.append(row)
            result.removed.append({"key": key, "reason": t.reason, "sha256": r["sha256"], "shard": r["shard"]})
        with RowGroupWriter(tmp / REJECTED_FILE, rejected_file.schema_arrow) as out:
            for batch in rejected_file.iter_batches(batch_size=ROW_GROUP):
                out.write(batch)
            out.write(pa.Table.from_pylist(added, schema=rejected_file.schema_arrow))

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
        written = documents.write_all(tmp, m, tmp / INDEX_FILE, tmp / REJECTED_FILE)
        m["files"] = dict(sorted({**documents.file_entries(tmp, [INDEX_FILE, REJECTED_FILE, *written]),
                                  **shard_indexes}.items()))
        manifest.write(tmp / MANIFEST_FILE, m)
    return result

"""Shards: size and sha256 against the manifest, tar safety, then every sample, streamed."""

from __future__ import annotations

from typing import Any

from passkit.audit.context import AuditContext, short
from passkit.audit.samples import check_sample
from passkit.shards import UnsafeTarError, check_tar, iter_samples, sha256_file


def check_shards(ctx: AuditContext) -> None:
    """Every shard the manifest lists, in its order (sample order checks depend on it)."""
    for rel, entry in ctx.shards:
        check_shard(ctx, rel, entry)
    ctx.report.stats.shards = len(ctx.shards)


def check_shard(ctx: AuditContext, rel: str, entry: dict[str, Any]) -> None:
    path = ctx.root / rel
    if not path.is_file():
        ctx.add("shard_missing", f"{rel} is listed in the manifest but absent", shard=rel)
        ctx.dead_shards.add(rel)
        return
    size = path.stat().st_size
    ctx.report.stats.bytes += size
    if isinstance(entry.get("bytes"), int) and size != entry["bytes"]:
        ctx.add("shard_size", f"{rel} is {size} bytes, the manifest says {entry['bytes']}", shard=rel)
    digest = sha256_file(path)
    sha_differs = digest != entry.get("sha256")
    try:
        check_tar(path, ctx.max_member)
    except UnsafeTarError as e:
        ctx.add("shard_unsafe", "; ".join(e.problems), shard=rel)
        ctx.dead_shards.add(rel)
        if sha_differs:
            ctx.add(
                "shard_sha256",
                f"{rel} sha256 is {digest}, the manifest says {entry.get('sha256')}",
                shard=rel,
            )
        return

    changed: list[str] = []  # samples whose bytes no longer match their json / index
    found: set[str] = set()
    count = 0
    at = len(ctx.report.findings)  # shard-level findings go before the samples'
    try:
        for key, group in iter_samples(path, ctx.max_member):
            count += 1
            found.add(key)
            ctx.report.stats.samples += 1
            if check_sample(ctx, rel, key, group):
                changed.append(key)
    except Exception as e:  # a tar that passed check_tar but breaks mid-read (truncation)
        ctx.add(
            "shard_unreadable",
            f"{rel} could not be read to the end after {count} samples: {e}",
            shard=rel,
        )
    ctx.report.stats.shards_read += 1

    if isinstance(entry.get("samples"), int) and count != entry["samples"]:
        ctx.add(
            "shard_count",
            f"{rel} holds {count} samples, the manifest says {entry['samples']}",
            rel,
            at=at,
        )
    if sha_differs:
        msg = f"{rel} sha256 is {digest}, the manifest says {entry.get('sha256')}"
        expected = ctx.index_by_shard.get(rel, set()) if ctx.index is not None else found
        missing, added = sorted(expected - found), sorted(found - expected)
        parts = [
            f"{label}: {short(keys)}"
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
        ctx.add("shard_sha256", msg, rel, next(iter(named)) if len(named) == 1 else None, at=at)

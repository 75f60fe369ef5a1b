"""Webdataset index files: `shards/<name>.idx` beside each `shards/<name>.tar`, in NVIDIA DALI's format.

DALI's `fn.readers.webdataset` needs, for each tar, where every member's bytes are; without an
index file it walks the whole tar first, which takes a long time on a large release. passkit
writes the index when it writes a shard, in the format DALI's own `wds2idx` tool writes (so either
one can make it, and DALI reads both):

    v1.2 <samples>
    <ext> <data offset> <size> <member name> [<ext> <offset> <size> <name> ...]    one line a sample

A sample is a run of consecutive members sharing the name before its first dot (the WebDataset
rule); the offset is where the member's bytes start (after its 512-byte header). The bytes are a
pure function of the tar's layout, so the audit re-derives them from the tar to check the file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from passkit.atomic import atomic_path
from passkit.shards.reader import DEFAULT_MAX_MEMBER, index_tar

INDEX_VERSION = "v1.2"
INDEX_SUFFIX = ".idx"


def index_path(tar: str) -> str:
    """Where a shard's index lives: `shards/x.tar` -> `shards/x.idx` (wds2idx's default name)."""
    if not tar.endswith(".tar"):
        raise ValueError(f"{tar!r} is not a .tar shard")
    return tar[: -len(".tar")] + INDEX_SUFFIX


def format_index(members: Iterable[tuple[str, int, int]]) -> bytes:
    """The index of a tar whose regular members are `members`: (name, data offset, size) in tar order."""
    samples: list[list[str]] = []
    last: str | None = None
    for name, offset, size in members:
        base, _, ext = name.partition(".")
        if not base:
            continue  # a hidden file (".x") is no sample's member; wds2idx skips it too
        part = f"{ext} {offset} {size} {name}"
        if base == last:
            samples[-1].append(part)
        else:
            samples.append([part])
            last = base
    lines = [f"{INDEX_VERSION} {len(samples)}", *(" ".join(s) for s in samples)]
    return ("\n".join(lines) + "\n").encode("ascii")


def derive_index(tar: Path, max_member: int = DEFAULT_MAX_MEMBER) -> bytes:
    """The index of the tar at `tar`, from its headers (passkit.shards.reader's safety rules apply)."""
    return format_index((e.name, e.offset_data, e.size) for e in index_tar(tar, max_member))


def write_index(path: Path, data: bytes) -> dict[str, Any]:
    """Write an index file atomically (a reader never sees half of one); its manifest["files"] entry."""
    with atomic_path(Path(path)) as tmp:
        Path(tmp).write_bytes(data)
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def parse_index(data: bytes) -> list[list[tuple[str, int, int, str]]]:
    """The samples an index file lists: per sample, its members' (ext, offset, size, name).
    ValueError for what is not an index in this format."""
    lines = data.decode("ascii").split("\n")
    head = lines[0].split(" ")
    if len(head) != 2 or head[0] != INDEX_VERSION or not head[1].isdigit():
        raise ValueError(f"the first line is {lines[0]!r}, not '{INDEX_VERSION} <samples>'")
    body = [line for line in lines[1:] if line]
    if len(body) != int(head[1]):
        raise ValueError(f"the header says {head[1]} samples, the file lists {len(body)}")
    out = []
    for line in body:
        f = line.split(" ")
        if len(f) % 4:
            raise ValueError(f"a sample line has {len(f)} fields, not 4 per member: {line[:80]!r}")
        out.append([(f[i], int(f[i + 1]), int(f[i + 2]), f[i + 3]) for i in range(0, len(f), 4)])
    return out

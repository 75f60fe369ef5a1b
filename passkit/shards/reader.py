"""Safe tar reading: every header is checked before a single byte of content is used.

Shards are flat: members are `<key>.<ext>` regular files. Anything else (absolute paths, `..`,
sub-folders, links, devices, oversized members) makes the whole tar unsafe; nothing is
extracted to disk, ever.
"""

from __future__ import annotations

import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MEMBER_NAME = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_.-]+$")
DEFAULT_MAX_MEMBER = 64 * 1024 * 1024


class UnsafeTarError(ValueError):
    def __init__(self, path: Path, problems: list[str]):
        super().__init__(f"{path}: unsafe tar: " + "; ".join(problems))
        self.path = path
        self.problems = problems


@dataclass(frozen=True, slots=True)
class ShardMember:
    name: str
    key: str
    ext: str
    data: bytes


def _member_problem(m: tarfile.TarInfo, max_member: int) -> str | None:
    name = m.name
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return f"absolute path {name!r}"
    if ".." in name.replace("\\", "/").split("/"):
        return f"path traversal {name!r}"
    if m.issym() or m.islnk():
        return f"link {name!r} -> {m.linkname!r}"
    if m.isdev() or m.isfifo():
        return f"device or fifo {name!r}"
    if not m.isfile():
        return f"not a regular file {name!r}"
    if not MEMBER_NAME.match(name):
        return f"member name {name!r} is not <key>.<ext>"
    if m.size > max_member:
        return f"member {name!r} is {m.size} bytes, over the {max_member}-byte limit"
    return None


def check_tar(path: Path, max_member: int = DEFAULT_MAX_MEMBER) -> list[tarfile.TarInfo]:
    """Headers of a shard, or UnsafeTarError listing every problem found."""
    try:
        with tarfile.open(path, mode="r:") as tar:
            members = tar.getmembers()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise UnsafeTarError(Path(path), [f"not a readable tar ({e})"]) from None
    problems = [p for m in members if (p := _member_problem(m, max_member))]
    seen: set[str] = set()
    for m in members:
        if m.name in seen:
            problems.append(f"duplicate member {m.name!r}")
        seen.add(m.name)
    if problems:
        raise UnsafeTarError(Path(path), problems)
    return members


def iter_members(path: Path, max_member: int = DEFAULT_MAX_MEMBER) -> Iterator[ShardMember]:
    members = check_tar(path, max_member)
    with tarfile.open(path, mode="r:") as tar:
        for m in members:
            f = tar.extractfile(m)
            assert f is not None  # regular files only, checked above
            key, _, ext = m.name.partition(".")
            yield ShardMember(m.name, key, ext, f.read())


def iter_samples(path: Path, max_member: int = DEFAULT_MAX_MEMBER) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {ext: bytes}) for consecutive members sharing a key, as WebDataset groups them."""
    key: str | None = None
    group: dict[str, bytes] = {}
    for m in iter_members(path, max_member):
        if m.key != key and key is not None:
            yield key, group
            group = {}
        key = m.key
        group[m.ext] = m.data
    if key is not None:
        yield key, group

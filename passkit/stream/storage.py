"""Where shard bytes come from: local files, HTTP(S), or any fsspec URL, with an optional local cache.

The loader reads samples by byte offset (see passkit.stream.loader), so every shard it touches must
be random-access. A local shard is read in place with `os.pread`. A remote shard (http://, https://,
s3://, gs://, ... -- anything fsspec opens; HTTP goes through `requests`, so no aiohttp is needed) is
either

- downloaded once into `cache_dir` (atomic rename under a per-shard file lock, so DataLoader workers
  and DDP ranks on one machine share one copy; the sha256 is checked while downloading, so a cache
  never holds a corrupt or truncated shard), or
- without a cache, fetched whole into the memory of the worker that needs it and dropped when it
  moves on (a small LRU of open shards). Every worker then fetches the shards it reads: use a cache
  for anything but small experiments.

Member tables come from reading the tar headers once per shard per process, with the same safety
rules as passkit.shards.reader (flat `<key>.<ext>` regular files only, size limit): a hostile
shard raises UnsafeTarError before any content byte is used.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from passkit.atomic import atomic_path
from passkit.remote import download, is_remote, local_path, read_bytes
from passkit.remote import join as join  # the loader reads it from here
from passkit.remote import open_remote as open_remote  # and callers before passkit.remote existed
from passkit.shards.reader import DEFAULT_MAX_MEMBER, UnsafeTarError, _member_problem

# Where a release's bytes come from (local paths and URLs) lives in passkit.remote, which the audit
# and `passkit publish` share without importing the loader (torch); the loader imports it from here.
CHUNK = 1 << 20


class ShardIntegrityError(ValueError):
    """A shard whose bytes do not match the manifest (sha256 or size)."""


def _check(data_hash: str, size: int, want_sha: str | None, want_bytes: int | None, what: str) -> None:
    if want_bytes is not None and size != want_bytes:
        raise ShardIntegrityError(
            f"{what}: {size} bytes, the manifest says {want_bytes}; the copy is truncated or altered "
            "(delete it from the cache, or re-download the release)"
        )
    if want_sha and data_hash != want_sha:
        raise ShardIntegrityError(
            f"{what}: sha256 {data_hash[:16]}..., the manifest says {want_sha[:16]}...; the shard was "
            "altered or corrupted (re-download it; run `passkit audit` on a local release)"
        )


def verify_file(path: Path, sha256: str | None, size: int | None) -> None:
    """Raise ShardIntegrityError unless the file matches the manifest's sha256 and size."""
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
            n += len(block)
    _check(h.hexdigest(), n, sha256, size, str(path))


def cache_path(cache_dir: Path, url: str) -> Path:
    """Cache location of a remote shard: one folder per release URL, so releases never collide."""
    base, _, name = url.rpartition("/")
    tag = hashlib.sha256(base.encode()).hexdigest()[:16]
    return Path(cache_dir) / tag / name


def fetch_to_cache(url: str, cache_dir: Path, sha256: str | None, size: int | None) -> Path:
    """The local copy of a remote shard, downloading it first if needed (see the module doc)."""
    dest = cache_path(cache_dir, url)
    if dest.is_file() and (size is None or dest.stat().st_size == size):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    import fcntl

    with open(dest.with_name(dest.name + ".lock"), "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # workers and ranks on this machine wait for one download
        try:
            if dest.is_file() and (size is None or dest.stat().st_size == size):
                return dest
            with atomic_path(dest) as tmp:  # a shard that fails its check never takes dest's name
                _check(*download(url, tmp), sha256, size, url)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return dest


@dataclass(frozen=True, slots=True)
class Member:
    offset: int  # of the content, in bytes from the start of the tar
    size: int


def scan_members(f: IO[bytes], name: str, max_member: int = DEFAULT_MAX_MEMBER) -> dict[str, dict[str, Member]]:
    """{key: {ext: Member}} from the tar headers, refusing hostile members (UnsafeTarError)."""
    try:
        with tarfile.open(fileobj=f, mode="r:") as tar:
            infos = tar.getmembers()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise UnsafeTarError(Path(name), [f"not a readable tar ({e})"]) from None
    problems = [p for m in infos if (p := _member_problem(m, max_member))]
    table: dict[str, dict[str, Member]] = {}
    for m in infos:
        key, _, ext = m.name.partition(".")
        group = table.setdefault(key, {})
        if ext in group:
            problems.append(f"duplicate member {m.name!r}")
        group[ext] = Member(m.offset_data, m.size)
    if problems:
        raise UnsafeTarError(Path(name), problems)
    return table


class OpenShard:
    """A random-access shard: its member table and `read(member)`."""

    def __init__(self, name: str, members: dict[str, dict[str, Member]], fd: int | None, data: bytes | None):
        self.name = name
        self.members = members
        self._fd = fd
        self._data = data
        self._keys: list[str] | None = None

    @property
    def sample_keys(self) -> list[str]:
        """Keys of the samples (groups with a .jpg member) in tar order."""
        if self._keys is None:
            self._keys = [k for k, g in self.members.items() if "jpg" in g]
        return self._keys

    @classmethod
    def from_file(cls, path: Path, max_member: int = DEFAULT_MAX_MEMBER) -> OpenShard:
        fd = os.open(path, os.O_RDONLY)
        try:
            with os.fdopen(os.dup(fd), "rb") as f:
                members = scan_members(f, str(path), max_member)
        except BaseException:
            os.close(fd)
            raise
        return cls(str(path), members, fd, None)

    @classmethod
    def from_bytes(cls, name: str, data: bytes, max_member: int = DEFAULT_MAX_MEMBER) -> OpenShard:
        return cls(name, scan_members(io.BytesIO(data), name, max_member), None, data)

    def read(self, m: Member) -> bytes:
        if self._data is not None:
            return self._data[m.offset : m.offset + m.size]
        assert self._fd is not None
        out = os.pread(self._fd, m.size, m.offset)
        if len(out) != m.size:
            raise OSError(f"{self.name}: short read at offset {m.offset}; the shard changed while reading")
        return out

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._data = None


@dataclass(frozen=True, slots=True)
class ShardRef:
    """One shard as the manifest lists it."""

    location: str  # local path or URL
    rel: str  # "shards/<name>-000000.tar"
    sha256: str | None
    bytes: int | None


class ShardPool:
    """Per-process LRU of open shards. Picklable before first use (a DataLoader worker gets a fresh one)."""

    def __init__(self, cache_dir: Path | None = None, max_open: int = 8, max_in_memory: int = 2,
                 max_member: int = DEFAULT_MAX_MEMBER):
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.max_open = max_open
        self.max_in_memory = max_in_memory
        self.max_member = max_member
        self._open: OrderedDict[str, OpenShard] = OrderedDict()
        self.fetch_seconds = 0.0

    def __getstate__(self) -> dict[str, Any]:
        state = {k: getattr(self, k) for k in ("cache_dir", "max_open", "max_in_memory", "max_member")}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    def local_file(self, ref: ShardRef) -> Path | None:
        """The local file to read for `ref` (downloading into the cache), or None (remote, no cache)."""
        if not is_remote(ref.location):
            return local_path(ref.location)
        if self.cache_dir is None:
            return None
        t = time.perf_counter()
        path = fetch_to_cache(ref.location, self.cache_dir, ref.sha256, ref.bytes)
        self.fetch_seconds += time.perf_counter() - t
        return path

    def get(self, ref: ShardRef) -> OpenShard:
        shard = self._open.get(ref.location)
        if shard is not None:
            self._open.move_to_end(ref.location)
            return shard
        path = self.local_file(ref)
        if path is not None:
            try:
                shard = OpenShard.from_file(path, self.max_member)
            except FileNotFoundError:
                raise FileNotFoundError(
                    f"{path}: shard listed in the manifest is missing; is the release complete?"
                ) from None
        else:
            t = time.perf_counter()
            data = read_bytes(ref.location)
            self.fetch_seconds += time.perf_counter() - t
            _check(hashlib.sha256(data).hexdigest(), len(data), ref.sha256, ref.bytes, ref.location)
            shard = OpenShard.from_bytes(ref.location, data, self.max_member)
        self._open[ref.location] = shard
        self._evict()
        return shard

    def _evict(self) -> None:
        in_memory = [k for k, s in self._open.items() if s._data is not None]
        while len(self._open) > self.max_open or len(in_memory) > self.max_in_memory:
            victim = in_memory.pop(0) if len(in_memory) > self.max_in_memory else next(iter(self._open))
            if victim in in_memory:
                in_memory.remove(victim)
            self._open.pop(victim).close()

    def close(self) -> None:
        for s in self._open.values():
            s.close()
        self._open.clear()

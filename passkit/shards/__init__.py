"""Tar shards: deterministic atomic writing, and reading that refuses hostile members."""

from passkit.shards.reader import (
    ShardMember,
    TarEntry,
    UnsafeTarError,
    check_tar,
    index_tar,
    iter_members,
    iter_samples,
)
from passkit.shards.writer import ShardInfo, sha256_file, write_tar

__all__ = [
    "ShardInfo",
    "ShardMember",
    "TarEntry",
    "UnsafeTarError",
    "check_tar",
    "index_tar",
    "iter_members",
    "iter_samples",
    "sha256_file",
    "write_tar",
]

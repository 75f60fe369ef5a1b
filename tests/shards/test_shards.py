"""The fast tar paths agree with tarfile, the reference: write_tar's bytes, index_tar's verdicts."""

from __future__ import annotations

import hashlib
import io
import os
import random
import tarfile
from pathlib import Path

import pytest

from passkit.shards import UnsafeTarError, check_tar, index_tar, write_tar
from passkit.shards.writer import FIXED_MTIME


def _tarfile_write(path: Path, members: list[tuple[str, bytes]]) -> None:
    with open(path, "wb") as raw, tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode, info.uid, info.gid = len(data), FIXED_MTIME, 0o644, 0, 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))


def _members(n: int, seed: int = 0) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    return [(f"k{i:05d}.{ext}", rng.randbytes(rng.choice([0, 1, 511, 512, 513, rng.randint(0, 5000)])))
            for i in range(n) for ext in ("jpg", "json")]


@pytest.mark.parametrize("members", [
    [], [("a.jpg", b"")], _members(1), _members(60, seed=3),
    [("x" * 98 + ".j", b"abc")], [("café.jpg", b"z")],  # longest plain name; a non-ASCII one (tarfile's path)
])
def test_write_tar_writes_tarfiles_bytes(tmp_path: Path, members: list[tuple[str, bytes]]) -> None:
    _tarfile_write(tmp_path / "ref.tar", members)
    info = write_tar(tmp_path / "new.tar", members)
    data = (tmp_path / "new.tar").read_bytes()
    assert data == (tmp_path / "ref.tar").read_bytes()
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert (info.bytes, info.members) == (len(data), len(members))


def test_write_tar_refuses_what_tarfile_refuses(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="too long"):
        write_tar(tmp_path / "t.tar", [("x" * 99 + ".j", b"abc")])
    assert not list(tmp_path.iterdir())  # nothing half-written left behind


def test_index_tar_matches_check_tar(tmp_path: Path) -> None:
    members = _members(40, seed=7)
    write_tar(tmp_path / "s.tar", members)
    want = [(m.name, m.offset_data, m.size) for m in check_tar(tmp_path / "s.tar")]
    got = [(m.name, m.offset_data, m.size) for m in index_tar(tmp_path / "s.tar")]
    assert got == want and len(got) == len(members)
    raw = (tmp_path / "s.tar").read_bytes()
    for (name, off, size), (name2, data) in zip(got, members, strict=True):
        assert name == name2 and raw[off : off + size] == data


def _gnu_tar(path: Path, name: str, data: bytes, **extra: object) -> None:
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        for k, v in extra.items():
            setattr(info, k, v)
        tar.addfile(info, io.BytesIO(data) if info.isfile() else None)


@pytest.mark.parametrize("case", ["traversal", "symlink", "long_name", "duplicate", "bad_name", "oversized",
                                  "truncated", "garbage", "empty"])
def test_index_tar_refuses_what_check_tar_refuses(tmp_path: Path, case: str) -> None:
    p = tmp_path / "t.tar"
    if case == "traversal":
        _gnu_tar(p, "../evil.jpg", b"x")
    elif case == "symlink":
        _gnu_tar(p, "a.jpg", b"", type=tarfile.SYMTYPE, linkname="/etc/passwd")
    elif case == "long_name":  # a GNU long-name header: index_tar hands the file to tarfile
        _gnu_tar(p, "k" * 150 + ".jpg", b"x")
    elif case == "duplicate":
        write_tar(p, [("a.jpg", b"1"), ("a.jpg", b"2")])
    elif case == "bad_name":
        write_tar(p, [("a b.jpg", b"1")])
    elif case == "oversized":
        write_tar(p, [("a.jpg", b"1" * 2000)])
    elif case == "truncated":
        write_tar(p, _members(3))
        p.write_bytes(p.read_bytes()[:1500])
    elif case == "garbage":
        p.write_bytes(os.urandom(4096))
    else:
        p.write_bytes(b"")
    limit = 1000 if case == "oversized" else 64 * 1024 * 1024
    try:
        want: object = [(m.name, m.offset_data, m.size) for m in check_tar(p, limit)]
    except UnsafeTarError as e:
        want = UnsafeTarError
        assert e.problems
    try:
        got: object = [(m.name, m.offset_data, m.size) for m in index_tar(p, limit)]
    except UnsafeTarError:
        got = UnsafeTarError
    assert got == want
    # tarfile reads a GNU long name, and stops quietly at a truncated member: both then list what
    # is whole (the audit's checksums catch the truncation); the rest is refused by both.
    assert (want is UnsafeTarError) == (case not in ("long_name", "truncated"))

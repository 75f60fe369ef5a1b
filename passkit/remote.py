"""Where a release's bytes are: a local folder, or a URL that fsspec opens (s3://, gs://, hf://, ...)
or plain HTTP(S) through `requests` (no aiohttp needed).

Shared by the loader (passkit.stream.storage), the audit of a published release (passkit.audit.remote)
and `passkit publish`, and light to import: no torch, and fsspec only when a URL is read.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

REMOTE_TIMEOUT = 60.0
CHUNK = 1 << 20


def is_remote(location: str | os.PathLike[str]) -> bool:
    """True for URLs with a scheme other than file:// (a Windows drive letter is not a scheme)."""
    s = str(location)
    scheme, sep, _ = s.partition("://")
    return bool(sep) and len(scheme) > 1 and scheme != "file"


def local_path(location: str | os.PathLike[str]) -> Path:
    s = str(location)
    return Path(s[len("file://") :]) if s.startswith("file://") else Path(s)


def join(base: str, rel: str) -> str:
    """`base/rel` for a folder path or a URL."""
    if is_remote(base):
        return base.rstrip("/") + "/" + rel.lstrip("/")
    return str(local_path(base) / rel)


@contextlib.contextmanager
def open_remote(url: str) -> Iterator[IO[bytes]]:
    """A readable binary stream for an http(s) URL (requests) or any other fsspec URL."""
    if url.startswith(("http://", "https://")):
        import requests

        try:
            r = requests.get(url, stream=True, timeout=REMOTE_TIMEOUT)
        except requests.RequestException as e:
            raise OSError(f"cannot fetch {url}: {e}") from e
        with r:
            if r.status_code != 200:
                raise OSError(f"cannot fetch {url}: HTTP {r.status_code}; check the release URL")
            r.raw.decode_content = True
            yield r.raw
        return
    try:
        import fsspec
    except ImportError as e:  # pragma: no cover - fsspec comes with datasets
        raise ImportError(f"reading {url} needs fsspec (pip install fsspec, plus s3fs/gcsfs for s3/gs)") from e
    with fsspec.open(url, "rb") as f:
        yield f


def read_bytes(location: str) -> bytes:
    """Whole content of a local path or a URL (manifest, index, a shard without a cache)."""
    if not is_remote(location):
        return local_path(location).read_bytes()
    with open_remote(location) as f:
        return f.read()


def download(url: str, dest: Path) -> tuple[str, int]:
    """Stream a remote file into `dest` (written in place: callers give a temporary name); its sha256
    and size. FileNotFoundError when the URL names nothing."""
    h, n = hashlib.sha256(), 0
    with open_remote(url) as src, open(dest, "wb") as out:
        while block := src.read(CHUNK):
            h.update(block)
            out.write(block)
            n += len(block)
    return h.hexdigest(), n


def list_folder(url: str) -> list[tuple[str, bool]] | None:
    """(name, is a folder) of what a remote folder holds, sorted; [] when it does not exist; None where
    the protocol cannot list (plain HTTP), so a caller can say what it did not check."""
    if url.startswith(("http://", "https://")):
        return None
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    try:
        entries = fs.ls(path, detail=True, refresh=True)
    except FileNotFoundError:
        return []
    out = []
    for e in entries:
        name = str(e["name"]).rstrip("/").rsplit("/", 1)[-1]
        if name and str(e["name"]).rstrip("/") != path.rstrip("/"):
            out.append((name, e.get("type") == "directory"))
    return sorted(out)

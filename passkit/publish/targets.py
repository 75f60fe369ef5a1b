"""Where a release is published: any fsspec URL (s3://bucket/prefix, gs://, a local path, ...).

A target lists what is already there (sizes), streams an object back to hash it, uploads a file and
removes an object. Uploads stream from disk through fsspec (s3fs sends large files in multipart
chunks), so memory holds a chunk per upload, never a file. On a local filesystem a file is written
under a temporary name and renamed, as object stores do by themselves: a copy cut short never shows
under its real name.

Credentials and endpoints come from each backend's usual environment and files (for s3fs: AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, AWS_PROFILE, ~/.aws); passkit never takes them as arguments and
never prints them.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from passkit.publish.objects import PublishError, ReleaseObject
from passkit.remote import CHUNK

READ_BLOCK = 8 * CHUNK  # bytes per request when an object is read back to be hashed


class Target(Protocol):
    url: str

    def existing(self) -> dict[str, int]:
        """Size of every object under the release's prefix, by path inside the release."""
        ...

    def sha256(self, rel: str) -> str:
        """sha256 of an object, read back from the store."""
        ...

    def put_many(self, objs: list[ReleaseObject], root: Path, on_bytes: Callable[[int], None], workers: int) -> None:
        """Upload the local files `root/obj.rel`, up to `workers` at once, reporting bytes sent."""
        ...

    def remove(self, rel: str) -> None:
        ...


def hint(url: str) -> str:
    """Where a backend's credentials and endpoint are read from, for error messages."""
    scheme = url.split("://", 1)[0] if "://" in url else "file"
    return {
        "s3": "for s3://, the bucket must exist, and AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, "
              "~/.aws/credentials) must allow writing it; AWS_ENDPOINT_URL points at another S3 service",
        "gs": "for gs://, gcsfs reads GOOGLE_APPLICATION_CREDENTIALS or gcloud's login",
        "hf": "for hf://, huggingface_hub reads HF_TOKEN or `hf auth login`",
    }.get(scheme, "check that the destination exists and can be written")


class FsspecTarget:
    """A release folder at an fsspec URL."""

    def __init__(self, url: str):
        import fsspec

        self.url = url.rstrip("/")
        try:
            self.fs, root = fsspec.core.url_to_fs(self.url)
        except (ImportError, ValueError) as e:
            raise PublishError(f"cannot open {self.url}: {e} (s3:// needs s3fs, gs:// gcsfs: "
                               "pip install 'passkit[publish]')") from e
        self.root = root.rstrip("/")
        self.local = "file" in _protocols(self.fs)

    def _path(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def existing(self) -> dict[str, int]:
        try:
            found = self.fs.find(self.root, detail=True) if self.fs.exists(self.root) else {}
            # an object store's first path part is its bucket, which passkit never creates: say so now,
            # not after the first upload fails
            bucket = self.root.split("/", 1)[0]
            if not found and not self.local and not self.fs.exists(bucket):
                raise PublishError(f"{self.url.split('://', 1)[0]}://{bucket} does not exist (or these credentials "
                                   f"cannot see it): create it first; {hint(self.url)}")
        except FileNotFoundError:
            found = {}
        except PublishError:
            raise
        except Exception as e:  # the store's own errors: credentials, permissions, endpoint
            raise PublishError(f"cannot list {self.url}: {type(e).__name__}: {e}; {hint(self.url)}") from e
        out = {}
        prefix = self.root + "/"
        for path, info in found.items():
            path = str(path)
            if path.startswith(prefix) and info.get("type", "file") == "file":
                out[path[len(prefix):]] = int(info.get("size") or 0)
        return out

    def sha256(self, rel: str) -> str:
        h = hashlib.sha256()
        with self.fs.open(self._path(rel), "rb", block_size=READ_BLOCK) as f:
            while block := f.read(READ_BLOCK):
                h.update(block)
        return h.hexdigest()

    def put_many(self, objs: list[ReleaseObject], root: Path, on_bytes: Callable[[int], None], workers: int) -> None:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max(1, workers), thread_name_prefix="passkit-upload") as pool:
            for f in [pool.submit(self.upload, o, root / o.rel, on_bytes) for o in objs]:
                f.result()

    def upload(self, obj: ReleaseObject, src: Path, on_bytes: Callable[[int], None]) -> None:
        """One file, streamed; bytes reported as the backend sends them (all at the end where it does not say)."""
        from fsspec.callbacks import Callback

        sent = 0

        class Progress(Callback):
            def call(self, *args: Any, **kwargs: Any) -> None:
                pass

            def relative_update(self, inc: int = 1) -> None:
                nonlocal sent
                sent += inc
                on_bytes(inc)

        dest = self._path(obj.rel)
        parent = dest.rsplit("/", 1)[0]
        try:
            if self.local:
                self.fs.makedirs(parent, exist_ok=True)
                tmp = f"{parent}/.{obj.rel.rsplit('/', 1)[-1]}.partial-{os.getpid()}"
                self.fs.put_file(str(src), tmp, callback=Progress())
                self.fs.mv(tmp, dest)
            else:
                self.fs.put_file(str(src), dest, callback=Progress())
        except Exception as e:
            raise PublishError(f"uploading {obj.rel} to {self.url} failed: {type(e).__name__}: {e}; "
                               f"{hint(self.url)}; rerun to resume") from e
        if sent < obj.size:
            on_bytes(obj.size - sent)

    def remove(self, rel: str) -> None:
        self.fs.rm_file(self._path(rel))


def _protocols(fs: Any) -> set[str]:
    p = fs.protocol
    return set(p) if isinstance(p, (tuple, list)) else {p}


def open_target(url: str) -> Target:
    """The target for a URL: the Hugging Face Hub for hf://datasets/... where huggingface_hub is installed
    (batched commits, see hub.py), fsspec for everything else."""
    if url.startswith("hf://"):
        from passkit.publish.hub import HubTarget

        return HubTarget(url)
    return FsspecTarget(url)

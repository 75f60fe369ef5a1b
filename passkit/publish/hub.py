"""A Hugging Face dataset repository as a publish target: hf://datasets/<owner>/<name>[/<folder>].

fsspec's HfFileSystem makes one commit per file, which a release of thousands of shards cannot afford,
so uploads go through huggingface_hub's commit API instead: one commit per batch of files (the Hub
uploads their LFS content in parallel), shards and other files before the manifest's own commit. The
Hub records the sha256 of every LFS file, which the resume and the verification read from the repo's
file listing; small files that are not in LFS are read back and hashed. The repository must exist
(`hf repo create NAME --repo-type dataset`); the token comes from HF_TOKEN or `hf auth login`.
Readers use the same URL: `passkit audit hf://datasets/...` and the loader read through HfFileSystem.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from passkit.publish.objects import PublishError, ReleaseObject
from passkit.publish.targets import READ_BLOCK

COMMIT_FILES = 500  # files per commit: the Hub's commits slow down and can time out far above this


class HubTarget:
    def __init__(self, url: str, api: Any = None, fs: Any = None):
        try:
            from huggingface_hub import HfApi, HfFileSystem
        except ImportError as e:
            raise PublishError("publishing to hf:// needs huggingface_hub (pip install huggingface_hub)") from e
        self.url = url.rstrip("/")
        parts = self.url.removeprefix("hf://").split("/")
        if len(parts) < 3 or parts[0] != "datasets":
            raise PublishError(f"{url}: a Hub target is hf://datasets/<owner>/<name>[/<folder>]")
        self.repo_id = "/".join(parts[1:3])
        self.prefix = "/".join(parts[3:])
        self.api = api if api is not None else HfApi()
        self.fs = fs if fs is not None else HfFileSystem()
        self._lfs: dict[str, str] = {}  # path in the release -> the Hub's sha256, from the last listing

    def _in_repo(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def existing(self) -> dict[str, int]:
        from huggingface_hub.errors import RepositoryNotFoundError
        from huggingface_hub.hf_api import RepoFile

        try:
            items = list(self.api.list_repo_tree(self.repo_id, path_in_repo=self.prefix or None, recursive=True,
                                                 repo_type="dataset"))
        except RepositoryNotFoundError as e:
            raise PublishError(f"no dataset repository {self.repo_id} on the Hub (or no access to it): create it "
                               f"with `hf repo create {self.repo_id} --repo-type dataset`, and log in (HF_TOKEN)") from e
        except Exception as e:
            if "404" in str(e) and self.prefix:
                return {}  # the folder does not exist yet
            raise PublishError(f"cannot list {self.url}: {type(e).__name__}: {e}") from e
        out: dict[str, int] = {}
        self._lfs = {}
        start = f"{self.prefix}/" if self.prefix else ""
        for item in items:
            if isinstance(item, RepoFile) and item.path.startswith(start):
                rel = item.path[len(start):]
                out[rel] = int(item.size)
                if item.lfs is not None:
                    self._lfs[rel] = item.lfs.sha256
        return out

    def sha256(self, rel: str) -> str:
        if rel in self._lfs:
            return self._lfs[rel]
        h = hashlib.sha256()
        with self.fs.open(f"datasets/{self.repo_id}/{self._in_repo(rel)}", "rb") as f:
            while block := f.read(READ_BLOCK):
                h.update(block)
        return h.hexdigest()

    def put_many(self, objs: list[ReleaseObject], root: Path, on_bytes: Callable[[int], None], workers: int) -> None:
        from huggingface_hub import CommitOperationAdd

        for i in range(0, len(objs), COMMIT_FILES):
            batch = objs[i : i + COMMIT_FILES]
            ops = [CommitOperationAdd(path_in_repo=self._in_repo(o.rel), path_or_fileobj=str(root / o.rel))
                   for o in batch]
            try:
                self.api.create_commit(self.repo_id, ops, repo_type="dataset", num_threads=max(1, workers),
                                       commit_message=f"passkit publish: {len(batch)} file(s), {batch[0].rel} ...")
            except Exception as e:
                raise PublishError(f"uploading to {self.url} failed: {type(e).__name__}: {e}; rerun to resume") from e
            on_bytes(sum(o.size for o in batch))

    def remove(self, rel: str) -> None:
        self.api.delete_file(self._in_repo(rel), self.repo_id, repo_type="dataset",
                             commit_message=f"passkit publish: take down {rel} while the release changes")

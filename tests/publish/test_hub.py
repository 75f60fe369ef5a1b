"""The Hugging Face Hub target, against an in-memory stand-in for huggingface_hub's HfApi (no network):
batched commits with the manifest in its own last commit, resume from the Hub's LFS sha256s,
verification, and the URL forms it takes."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import pytest

from passkit.publish import PublishError, publish
from tests.helpers.staging import basic_items, staged_release

hub = pytest.importorskip("huggingface_hub", reason="huggingface_hub is not installed")


class FakeHub:
    """What HubTarget uses of HfApi and HfFileSystem: files in a dict; .tar and .parquet files as LFS."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.commits: list[list[str]] = []

    def list_repo_tree(self, repo_id: str, path_in_repo: str | None = None, **kw: Any) -> list[Any]:
        from huggingface_hub.hf_api import RepoFile

        out = []
        for path, data in sorted(self.files.items()):
            if path_in_repo and not path.startswith(path_in_repo + "/"):
                continue
            lfs = {"size": len(data), "oid": hashlib.sha256(data).hexdigest(), "pointerSize": 130} \
                if path.endswith((".tar", ".parquet")) else None
            out.append(RepoFile(path=path, size=len(data), oid="0" * 40, lfs=lfs))
        return out

    def create_commit(self, repo_id: str, operations: list[Any], **kw: Any) -> None:
        assert kw["repo_type"] == "dataset"
        self.commits.append([op.path_in_repo for op in operations])
        for op in operations:
            self.files[op.path_in_repo] = Path(op.path_or_fileobj).read_bytes()

    def delete_file(self, path_in_repo: str, repo_id: str, **kw: Any) -> None:
        del self.files[path_in_repo]

    def open(self, path: str, mode: str = "rb") -> io.BytesIO:  # HfFileSystem.open
        return io.BytesIO(self.files[path.split("/", 3)[3]])


def test_hub_target_commits_the_manifest_last_and_resumes(tmp_path: Path) -> None:
    from passkit.publish.hub import HubTarget

    release = staged_release(tmp_path, basic_items(5))
    fake = FakeHub()
    url = "hf://datasets/someone/syn/v1"
    rep = publish(release, url, target=HubTarget(url, api=fake, fs=fake))
    assert fake.commits[-1] == ["v1/manifest.json"] and len(fake.commits) == 3
    assert all(p.startswith("v1/shards/") for p in fake.commits[0])
    assert rep.uploaded[-1] == "manifest.json"
    for rel in rep.uploaded:
        assert fake.files[f"v1/{rel}"] == (release / rel).read_bytes()
    again = publish(release, url, target=HubTarget(url, api=fake, fs=fake))
    assert again.uploaded == [] and len(fake.commits) == 3
    # an LFS file the Hub holds with other content is uploaded again
    fake.files["v1/index.parquet"] = b"x" * (release / "index.parquet").stat().st_size
    third = publish(release, url, target=HubTarget(url, api=fake, fs=fake))
    assert third.uploaded == ["index.parquet"] and third.skipped[-1] == "manifest.json"


def test_hub_urls_must_name_a_dataset_repo() -> None:
    from passkit.publish.hub import HubTarget

    with pytest.raises(PublishError, match="hf://datasets/<owner>/<name>"):
        HubTarget("hf://someone/model", api=object(), fs=object())

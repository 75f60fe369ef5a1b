"""A release at a URL (s3://, gs://, hf://, http(s)://: anything passkit.remote reads), audited
as a folder is.

Every check reads local files, so the small files come first into the audit's scratch folder: the
manifest, then each file it lists (index, attribution files, croissant.json, documents), each
streamed to disk; a listed file the store lacks is simply not there, and the checks report it
missing. Shards are not staged: each shard's check downloads its own shard to a temporary file and
removes it when done (shards.check_shard), so the disk holds the small files and one shard per worker.
shards/ is listed through fsspec for unlisted shards, except over plain HTTP, which cannot list.

Credentials come from each backend's usual environment and files (AWS_* variables and ~/.aws for
s3fs, Google's for gcsfs, HF_TOKEN for the Hub); nothing in a URL, a spec or a log carries them.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from passkit.audit.context import MANIFEST, inside
from passkit.remote import download, join, list_folder

STAGE_THREADS = 8  # listed files fetched at once (small documents: the round trips dominate)


class RemoteReleaseError(OSError):
    """The release's store could not be read at all (a wrong bucket, missing credentials, no network)."""


def _fetch(url: str, dest: Path) -> bool:
    """Download `url` to `dest`; False when the store has no such object."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    try:
        download(url, tmp)
    except FileNotFoundError:
        tmp.unlink(missing_ok=True)
        return False
    tmp.replace(dest)
    return True


def stage_manifest(url: str, local: Path) -> Path:
    """`local` holding the release's manifest.json when the store has one (check_manifest says when not)."""
    local.mkdir(parents=True, exist_ok=True)
    try:
        found = _fetch(join(url, MANIFEST), local / MANIFEST)
        if not found and list_folder(url) == []:
            raise FileNotFoundError(f"nothing is stored at {url}")
    except Exception as e:  # botocore, gcsfs and the Hub raise their own types for auth and bucket errors
        raise RemoteReleaseError(
            f"cannot read {join(url, MANIFEST)}: {type(e).__name__}: {e}. Check the URL (the bucket and prefix "
            "`passkit publish` wrote to), and the credentials and endpoint of its store in the usual places "
            "(for s3://: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL or ~/.aws)") from e
    return local


def stage_files(url: str, local: Path, manifest: dict[str, Any]) -> None:
    """Every file manifest["files"] lists, inside the release, downloaded under `local`."""
    files = manifest.get("files")
    if not isinstance(files, dict):
        return
    wanted = [(rel, p) for rel in sorted(files) if (p := inside(local, rel)) is not None]
    with ThreadPoolExecutor(STAGE_THREADS, thread_name_prefix="passkit-stage") as pool:
        list(pool.map(lambda item: _fetch(join(url, item[0]), item[1]), wanted))


def shard_listing(url: str) -> list[tuple[str, bool]] | None:
    """What the store holds under shards/ ((name, is a folder)); None where it cannot be listed."""
    return list_folder(join(url, "shards"))

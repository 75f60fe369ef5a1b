"""The state one audit shares between its checks, and the small helpers they have in common."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from passkit import licenses
from passkit.audit.findings import AuditReport, Collector
from passkit.audit.keyhash import SeenKeys, new_salt
from passkit.shards.reader import DEFAULT_MAX_MEMBER

if TYPE_CHECKING:
    from passkit.audit.index import IndexFacts
    from passkit.audit.parallel import ShardRunner

MANIFEST = "manifest.json"
INDEX = "index.parquet"


@dataclass(slots=True)
class AuditContext:
    """One audit: its inputs and limits, and what earlier checks learnt that later ones need.

    Each check is a function of this context; `audit()` runs them in order, so the findings come
    out in the same order on every run.
    """

    root: Path  # the release folder; for a release at a URL, the scratch folder its small files were staged in
    report: AuditReport
    out: Collector
    max_member: int = DEFAULT_MAX_MEMBER
    # --check-sources: how many, which (seed) and with which passkit.config.FetchSpec (None: the defaults;
    # never the manifest's: an audit takes no network permissions from the release it audits)
    check_sources: int = 0
    seed: int = 0
    fetch_spec: Any = None
    # --rescan: the folder with the detectors' weights (None: PASSKIT_MODELS or its default)
    rescan: bool = False
    models_dir: Path | None = None
    # how the shards are checked: processes here (workers), or Ray tasks (executor "ray", address)
    workers: int = 1
    executor: str = "local"
    address: str | None = None
    # --sample: the fraction of shards checked sample by sample (None: all of them)
    sample: float | None = None
    on_progress: Callable[[int, int], None] | None = None
    scratch: Path | None = None  # a temporary folder for the index slices and the hashes spilled to disk
    # a release at a URL: the URL, and what its shards/ holds ((name, is a folder); None: it cannot be listed)
    remote: str | None = None
    shard_listing: list[tuple[str, bool]] | None = None
    runner: ShardRunner | None = None  # where shard checks run, started once the manifest is read
    salt: bytes = field(default_factory=new_salt)
    # from the manifest
    m: dict[str, Any] | None = None
    policy: licenses.Policy | None = None
    removed: dict[str, str] = field(default_factory=dict)  # key -> reason
    removed_sha: dict[str, str] = field(default_factory=dict)  # image sha256 -> removed key
    shards: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # valid listed (path, entry)
    wds_indexes: dict[str, str] = field(default_factory=dict)  # shard -> its listed index file (DALI's format)
    # from index.parquet (None: absent or unreadable)
    ix: IndexFacts | None = None
    # from the scan of the shards, merged in shard order
    seen: SeenKeys | None = None  # every sample key's hash, with its first shard (on disk, from check_shards)
    prev_key: str | None = None
    dead_shards: set[str] = field(default_factory=set)  # listed shards not scanned (absent, unsafe, not sampled)

    @property
    def add(self) -> Callable[..., None]:
        return self.out.add


def inside(root: Path, rel: str) -> Path | None:
    """root/rel if it stays inside root (no absolute path, no `..`, no escaping symlink)."""
    if not rel or rel.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", rel):
        return None
    if ".." in rel.replace("\\", "/").split("/"):
        return None
    p = root / rel
    try:
        p.resolve().relative_to(root.resolve())
    except ValueError:
        return None
    return p


def short(keys: Iterable[str], n: int = 5) -> str:
    ks = sorted(keys)
    more = f" and {len(ks) - n} more" if len(ks) > n else ""
    return ", ".join(ks[:n]) + more


def nonempty(v: Any) -> bool:
    return isinstance(v, str) and v.strip() != ""

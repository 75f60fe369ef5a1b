"""What changed between two releases: samples added, removed and changed, and which shards moved.

Trainers ask "what is new in 1.0.1?", auditors "why did this sample go?". Samples are matched by
key (keys are stable: a hash of source and source id). A sample is *changed* when its image bytes
(sha256) or any attribution field differs. Removed samples carry the reason the newer release
records (a takedown, a near-duplicate, a policy change), when it records one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from passkit.release import manifest

COMPARED = ("sha256", "title", "creator", "creator_url", "landing_url", "source_url", "provider", "license",
            "license_url", "attribution", "modification")


@dataclass(slots=True)
class ReleaseDiff:
    a: str
    b: str
    added: list[str] = field(default_factory=list)
    removed: list[dict[str, Any]] = field(default_factory=list)  # {key, reason}
    changed: list[dict[str, Any]] = field(default_factory=list)  # {key, fields: {name: [old, new]}}
    unchanged: int = 0
    shards_same: list[str] = field(default_factory=list)
    shards_changed: list[str] = field(default_factory=list)
    shards_added: list[str] = field(default_factory=list)
    shards_removed: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "identical": self.identical}


def _rows(release: Path) -> dict[str, dict[str, Any]]:
    path = Path(release) / "index.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{release}: no index.parquet — is this a passkit release folder?")
    names = set(pq.read_schema(path).names)
    cols = ["key", *[c for c in COMPARED if c in names]]
    return {r["key"]: r for r in pq.read_table(path, columns=cols).to_pylist()}


def _reasons(release: Path, m: dict[str, Any]) -> dict[str, str]:
    """key -> why the release left it out: its manifest removals, then rejected.parquet."""
    out: dict[str, str] = {}
    rej = Path(release) / "rejected.parquet"
    if rej.is_file():
        names = set(pq.read_schema(rej).names)
        cols = [c for c in ("key", "stage", "reason", "detail") if c in names]
        for r in pq.read_table(rej, columns=cols).to_pylist():
            if r.get("key"):
                detail = f" ({r['detail']})" if r.get("detail") else ""
                out[r["key"]] = f"{r.get('stage')}: {r.get('reason')}{detail}"
    for r in m.get("removals") or []:
        out[r["key"]] = f"takedown: {r.get('reason', '')}"
    return out


def diff(a: Path, b: Path) -> ReleaseDiff:
    """Compare release `a` (older) with release `b` (newer)."""
    ma, mb = manifest.load(a), manifest.load(b)
    ra, rb = _rows(a), _rows(b)
    d = ReleaseDiff(ma.get("release", str(a)), mb.get("release", str(b)))
    d.added = sorted(set(rb) - set(ra))
    why = _reasons(b, mb)
    d.removed = [{"key": k, "reason": why.get(k, "not in the newer release (no reason recorded)")}
                 for k in sorted(set(ra) - set(rb))]
    for k in sorted(set(ra) & set(rb)):
        fields = {c: [ra[k].get(c), rb[k].get(c)] for c in COMPARED
                  if c in ra[k] and c in rb[k] and ra[k].get(c) != rb[k].get(c)}
        if fields:
            d.changed.append({"key": k, "fields": fields})
        else:
            d.unchanged += 1
    sa = {s["path"]: s["sha256"] for s in ma.get("shards") or []}
    sb = {s["path"]: s["sha256"] for s in mb.get("shards") or []}
    for p in sorted(set(sa) | set(sb)):
        if p not in sb:
            d.shards_removed.append(p)
        elif p not in sa:
            d.shards_added.append(p)
        elif sa[p] == sb[p]:
            d.shards_same.append(p)
        else:
            d.shards_changed.append(p)
    return d

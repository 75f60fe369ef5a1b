"""What a release holds, in one dictionary: for `passkit info` and for people skimming."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from passkit.release import manifest


def summarize(release_dir: Path) -> dict[str, Any]:
    release_dir = Path(release_dir)
    m = manifest.load(release_dir)
    index = pq.read_table(release_dir / "index.parquet", columns=["license_name", "provider"]).to_pydict()
    return {
        "release": m["release"],
        "path": str(release_dir),
        "created": m["created"],
        "passkit_version": m["passkit_version"],
        "spec_hash": m["spec_hash"],
        "policy": m["policy"]["name"],
        "detectors": [f"{d['name']}@{d['threshold']}" for d in m["detectors"]],
        "detectors_skipped": m.get("detectors_skipped", []),
        "counts": m["counts"],
        "shards": len(m["shards"]),
        "samples": sum(s["samples"] for s in m["shards"]),
        "bytes": sum(s["bytes"] for s in m["shards"]),
        "licenses": dict(Counter(index["license_name"]).most_common()),
        "providers": dict(Counter(p or "unknown" for p in index["provider"]).most_common()),
        "removals": len(m["removals"]),
        "previous": (m.get("previous") or {}).get("release"),
        "curation": m.get("curation") or {},
        "validation": m["validation"],
    }

"""What a release holds, in one dictionary: for `passkit info` and for people skimming."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.compute as pc

from passkit.parquetio import open_parquet
from passkit.release import manifest

BATCH_ROWS = 1 << 18


def _counts(path: Path, columns: dict[str, Callable[[Any], Any]]) -> dict[str, dict[Any, int]]:
    """Per column: value -> rows, most common first, ties in order of first appearance (what
    Counter.most_common gives), each value passed through its function first.

    Counted by Arrow a batch at a time, so a PASS-size index (millions of rows) costs memory and
    Python work in the number of distinct values, not rows.
    """
    totals: dict[str, dict[Any, int]] = {c: {} for c in columns}
    pf = open_parquet(path)
    for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=list(columns)):
        for c, fold in columns.items():
            vc = pc.value_counts(batch.column(c))  # values in order of first appearance
            acc = totals[c]
            for v, n in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist(), strict=True):
                v = fold(v)
                acc[v] = acc.get(v, 0) + n
    return {c: dict(sorted(acc.items(), key=lambda kv: kv[1], reverse=True)) for c, acc in totals.items()}


def _same(v: Any) -> Any:
    return v


def _or_unknown(v: Any) -> Any:
    return v or "unknown"


def summarize(release_dir: Path) -> dict[str, Any]:
    release_dir = Path(release_dir)
    m = manifest.load(release_dir)
    counts = _counts(release_dir / "index.parquet", {"license_name": _same, "provider": _or_unknown})
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
        "licenses": counts["license_name"],
        "providers": counts["provider"],
        "removals": len(m["removals"]),
        "previous": (m.get("previous") or {}).get("release"),
        "curation": m.get("curation") or {},
        "validation": m["validation"],
    }

"""passkit info: counts by Arrow aggregates give what Counter over every row gave."""

from __future__ import annotations

import time
import tracemalloc
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from passkit.release import info
from passkit.release.info import summarize
from tests.helpers.releases import make_release


def reference(release: Path) -> tuple[dict[str | None, int], dict[str, int]]:
    index = pq.read_table(release / "index.parquet", columns=["license_name", "provider"]).to_pydict()
    return (dict(Counter(index["license_name"]).most_common()),
            dict(Counter(p or "unknown" for p in index["provider"]).most_common()))


def test_counts_match_counter_across_batches_ties_and_unknowns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_release(tmp_path, n=5, shard_max=5)
    # ties broken by first appearance, which can be in a later batch; None and "" both "unknown"
    lic = ["B", "A", None, "A", "B", "C", "C", "D", "B", "A", None, "E"]
    prov = ["x", None, "y", "", "y", "x", None, "z", "", "z", "y", "w"]
    pq.write_table(pa.table({"key": [f"k{i}" for i in range(len(lic))], "license_name": lic, "provider": prov}),
                   root / "index.parquet", row_group_size=5)
    monkeypatch.setattr(info, "BATCH_ROWS", 4)
    s = summarize(root)
    assert (s["licenses"], s["providers"]) == reference(root)
    assert list(s["licenses"].items()) == list(reference(root)[0].items())  # the order too
    assert list(s["providers"].items()) == list(reference(root)[1].items())
    monkeypatch.setattr(info, "BATCH_ROWS", 1 << 18)
    assert list(summarize(root)["providers"].items()) == list(reference(root)[1].items())


def test_summary_of_a_release(tmp_path: Path) -> None:
    root = make_release(tmp_path, n=12, shard_max=5)
    s = summarize(root)
    assert (s["licenses"], s["providers"]) == reference(root)
    assert s["samples"] == 12 and s["shards"] == 3


def test_info_of_200k_rows_counts_in_arrow(tmp_path: Path) -> None:
    """As Python lists these two columns were 400,000 objects; aggregates cost the distinct values."""
    root = make_release(tmp_path, n=2, shard_max=2)
    n = 200_000
    rng = np.random.default_rng(0)
    names = np.array(["CC BY 2.0", "CC BY 4.0", "CC0 1.0", "Public Domain Mark 1.0"])
    pq.write_table(pa.table({"license_name": names[rng.integers(0, 4, n)],
                             "provider": np.array(["flickr", "", "met"])[rng.integers(0, 3, n)]}),
                   root / "index.parquet")
    tracemalloc.start()
    t0 = time.perf_counter()
    s = summarize(root)
    seconds = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert (s["licenses"], s["providers"]) == reference(root)
    assert peak < 4 << 20, f"{peak / 2**20:.1f} MiB of Python allocations"
    assert seconds < 5

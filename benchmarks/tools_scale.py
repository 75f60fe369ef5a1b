"""`passkit diff`, `info`, `query`, the loader's start-up and near-duplicate search at PASS scale.

    .venv/bin/python benchmarks/tools_scale.py make /tmp/pk-scale            # 2M samples, 18M rejected
    .venv/bin/python benchmarks/tools_scale.py run /tmp/pk-scale --runs 3    # time + peak RSS per tool
    .venv/bin/python benchmarks/tools_scale.py dedup --n 2000000 20000000 --runs 1

`make` writes two synthetic releases without images (the tools measured here read only the manifest
and the Parquet files; the loader's start-up plans the first batch and opens no shard): `a` with N
samples in N/1000 shards, and `b`, a newer version with a few hundred samples removed, added and
changed, plus a rejected.parquet of 18M rows (key, stage, reason, detail filled). Columns are made
with numpy/pyarrow directly, so writing both takes about a minute.

`run` times each tool in a fresh subprocess, so its peak RSS (ru_maxrss) is that tool's alone, next to
the RSS of the interpreter with the tool's imports loaded ("base"). Point PYTHONPATH at another
checkout to measure that code on the same data. The last line is the slowest tool's median.

`dedup` times `HashIndex(...).self_pairs()` + `keep_first` on N random 64-bit hashes with 10 %
planted near-duplicates (0..8 bits flipped, the default `release.near_dup_hamming`), each run in a
fresh subprocess with a wall-clock limit (`--limit`; a run past it reports its peak so far).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

PER_SHARD = 1000
CHANGES = 300  # samples removed, added and changed (each) between a and b
HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def _hex_strings(values: np.ndarray, prefix: bytes = b"") -> object:
    """uint64 values -> a pyarrow string array of `prefix` + 16 hex digits, built from buffers."""
    import pyarrow as pa

    n = len(values)
    be = values.astype(">u8").view(np.uint8).reshape(n, 8)
    digits = np.empty((n, 16), dtype=np.uint8)
    digits[:, 0::2] = HEX[be >> 4]
    digits[:, 1::2] = HEX[be & 15]
    width = len(prefix) + 16
    data = np.empty((n, width), dtype=np.uint8)
    data[:, : len(prefix)] = np.frombuffer(prefix, dtype=np.uint8)
    data[:, len(prefix) :] = digits
    offsets = np.arange(n + 1, dtype=np.int32) * width
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data.tobytes()))


def _text(prefix: str, numbers: np.ndarray) -> object:
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.binary_join_element_wise(pa.scalar(prefix), pc.cast(pa.array(numbers), pa.string()), "")


def _index_table(keys: np.ndarray, ids: np.ndarray, titles_changed: np.ndarray) -> object:
    """The index of a release whose samples have these sorted key values and sample numbers."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(keys)
    shard_no = np.arange(n) // PER_SHARD
    shard_names = pa.array([f"shards/bench-{s:06d}.tar" for s in range(int(shard_no[-1]) + 1)])
    lic = np.array(["cc-by-2.0", "cc-by-4.0", "cc0-1.0"])
    lic_name = np.array(["CC BY 2.0", "CC BY 4.0", "CC0 1.0"])
    providers = np.array(["flickr", "wikimedia", "openverse", "smithsonian", "met"])
    title = _text("Picture ", ids)
    if titles_changed.any():
        title = pc.if_else(pa.array(titles_changed), _text("A better title ", ids), title)
    creator = _text("Creator ", ids % 50_000)
    landing = _text("https://example.org/photos/", ids)
    sha = pc.binary_join_element_wise(*[_hex_strings(ids * np.uint64(k + 3) + np.uint64(7 * k))
                                        for k in range(4)], "")
    cols = {
        "key": _hex_strings(keys, b"bench_"),
        "shard": pc.take(shard_names, pa.array(shard_no)),
        "sha256": sha,
        "phash": _hex_strings(ids * np.uint64(0x9E3779B97F4A7C15)),
        "width": pa.array(np.full(n, 512, np.int32)),
        "height": pa.array(np.full(n, 384, np.int32)),
        "bytes": pa.array(40_000 + ids.astype(np.int64) % 20_000),
        "title": title,
        "creator": creator,
        "creator_url": _text("https://example.org/people/", ids % 50_000),
        "landing_url": landing,
        "source_url": _text("https://example.org/images/", ids),
        "provider": pa.array(providers[ids % 5]),
        "license": pa.array(lic[ids % 3]),
        "license_name": pa.array(lic_name[ids % 3]),
        "license_url": pa.array(np.array(["https://creativecommons.org/licenses/by/2.0/",
                                          "https://creativecommons.org/licenses/by/4.0/",
                                          "https://creativecommons.org/publicdomain/zero/1.0/"])[ids % 3]),
        "attribution": pc.binary_join_element_wise(title, pa.scalar(" by "), creator, pa.scalar(", "), landing,
                                                   pa.scalar(" (CC BY)"), ""),
        "modification": pa.array(np.full(n, "resized to 512 px, re-encoded, metadata removed")),
        "source": pa.array(np.full(n, "bench")),
        "source_id": pc.cast(pa.array(ids), pa.string()),
        "query": pa.array(np.full(n, "landscape")),
    }
    return pa.table(cols)


def _manifest(name: str, n: int, tag: str, removals: list[dict[str, str]]) -> dict[str, object]:
    shards = []
    for s in range((n + PER_SHARD - 1) // PER_SHARD):
        count = min(PER_SHARD, n - s * PER_SHARD)
        shards.append({"path": f"shards/bench-{s:06d}.tar", "sha256": f"{tag}{s:060d}"[-64:],
                       "bytes": count * 50_000, "samples": count})
    return {
        "name": "bench", "version": name, "release": f"bench-{name}", "created": "2024-01-01T00:00:00Z",
        "passkit_version": "bench", "spec_hash": "0" * 64, "schema_version": 1,
        "policy": {"name": "by-or-public-domain"},
        "detectors": [{"name": "yolox_nano", "threshold": 0.15}],
        "counts": {"kept": n, "rejected": 18_000_000},
        "shards": shards, "files": {}, "removals": removals, "validation": [], "curation": {},
    }


def make(root: Path, n: int, rejected: int, seed: int = 0) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    keys = np.unique(rng.integers(0, 2**64 - 1, size=n + CHANGES, dtype=np.uint64))[: n + CHANGES]
    ids = rng.permutation(len(keys)).astype(np.uint64)
    # a: all but the last CHANGES samples (by a random choice); b: drop CHANGES, add those, retitle CHANGES
    new = np.zeros(len(keys), bool)
    new[rng.choice(len(keys), CHANGES, replace=False)] = True
    gone = np.zeros(len(keys), bool)
    gone[rng.choice(np.flatnonzero(~new), CHANGES, replace=False)] = True
    retitled = np.zeros(len(keys), bool)
    retitled[rng.choice(np.flatnonzero(~new & ~gone), CHANGES, replace=False)] = True
    t0 = time.perf_counter()
    for name, keep, changed in (("a", ~new, np.zeros(len(keys), bool)), ("b", ~gone, retitled)):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        table = _index_table(keys[keep], ids[keep], changed[keep])
        pq.write_table(table, folder / "index.parquet")
        removals = [] if name == "a" else [{"key": k, "reason": "creator asked"} for k in
                                           _hex_strings(keys[gone][:10], b"bench_").to_pylist()]
        m = _manifest(name, len(table), name, removals)
        m["files"] = {"index.parquet": _file_entry(folder / "index.parquet")}
        (folder / "manifest.json").write_text(json.dumps(m))
        print(f"{name}: {len(table):,} samples written ({time.perf_counter() - t0:.0f} s)", flush=True)

    # b's rejected.parquet: 18M rows of which the removed samples are a few; most columns left null
    reasons = np.array(["people", "license_not_allowed", "http_404", "decode_error", "duplicate", "near_duplicate"])
    stages = np.array(["people", "license", "fetch", "image", "dedup", "dedup"])
    schema = pa.schema([("key", pa.string()), ("source", pa.string()), ("source_id", pa.string()),
                        ("url", pa.string()), ("stage", pa.string()), ("reason", pa.string()),
                        ("detail", pa.string()), ("transient", pa.bool_()), ("title", pa.string())])
    removed_keys = keys[gone]
    step = 1 << 20
    with pq.ParquetWriter(root / "b" / "rejected.parquet", schema) as w:
        for lo in range(0, rejected, step):
            m = min(step, rejected - lo)
            k = rng.integers(0, 2**64 - 1, size=m, dtype=np.uint64)
            if lo == 0:
                k[: len(removed_keys)] = removed_keys
            r = rng.integers(0, len(reasons), size=m)
            null = pa.nulls(m, pa.string())
            w.write_table(pa.table({
                "key": _hex_strings(k, b"bench_"), "source": pa.array(np.full(m, "bench")), "source_id": null,
                "url": null, "stage": pa.array(stages[r]), "reason": pa.array(reasons[r]),
                "detail": pa.array(np.where(r == 0, "face detected", "")), "transient": pa.nulls(m, pa.bool_()),
                "title": null,
            }, schema=schema))
    m = json.loads((root / "b" / "manifest.json").read_text())
    m["files"]["rejected.parquet"] = _file_entry(root / "b" / "rejected.parquet")
    (root / "b" / "manifest.json").write_text(json.dumps(m))
    print(f"b: {rejected:,} rejected rows written ({time.perf_counter() - t0:.0f} s)", flush=True)


def _file_entry(path: Path) -> dict[str, object]:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return {"sha256": h.hexdigest(), "bytes": path.stat().st_size}


# ----------------------------------------------------------------------------- timing children

QUERIES = {
    "query count by licence": "SELECT license, count(*) AS n FROM samples GROUP BY 1 ORDER BY 2 DESC",
    "query rejected by reason": "SELECT reason, count(*) AS n FROM rejected GROUP BY 1 ORDER BY 2 DESC",
    "query one key": "SELECT * FROM samples WHERE title = 'Picture 12345'",
    "query SELECT * LIMIT 20": "SELECT * FROM rejected LIMIT 20",
}


def _imports(tool: str) -> None:
    if tool == "diff":
        import passkit.release.diff  # noqa: F401
    elif tool == "info":
        import passkit.release.info  # noqa: F401
    elif tool.startswith("query"):
        import duckdb  # noqa: F401

        import passkit.query  # noqa: F401
    elif tool == "loader start-up":
        import passkit.stream.loader  # noqa: F401


def _run_tool(tool: str, root: Path) -> str:
    a, b = root / "a", root / "b"
    if tool == "diff":
        from passkit.release.diff import diff

        d = diff(a, b)
        return (f"+{len(d.added)} -{len(d.removed)} ~{len(d.changed)} ={d.unchanged} "
                f"shards changed {len(d.shards_changed)}")
    if tool == "info":
        from passkit.release.info import summarize

        s = summarize(b)
        return f"{s['samples']:,} samples, licences {s['licenses']}"
    if tool.startswith("query"):
        from passkit.query import query

        res = query(b, QUERIES[tool])
        return f"{len(res.rows)} row(s)"
    if tool == "loader start-up":
        from passkit.stream.loader import ReleaseDataset, open_release

        ds = ReleaseDataset(open_release(b), batch_size=256, shuffle=True, seed=1, rank=3, world_size=8)
        p = ds.prepare()
        first = p.plan.batches[0]
        return f"{len(ds.catalog):,} samples, {len(p.plan)} batches, first ids {first[:3].tolist()}"
    raise ValueError(tool)


def child_tool(tool: str, root: Path) -> None:
    _imports(tool)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    result = _run_tool(tool, root)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"tool": tool, "seconds": seconds, "peak_mib": peak / 1024, "base_mib": base / 1024,
                      "result": result}))


def run(root: Path, runs: int, tools: list[str]) -> None:
    rows = []
    for tool in tools:
        res = []
        for _ in range(runs):
            p = subprocess.run([sys.executable, __file__, "child", str(root), "--tool", tool],
                               capture_output=True, text=True)
            if p.returncode != 0:
                print(f"{tool}: failed\n{p.stderr[-2000:]}", flush=True)
                break
            res.append(json.loads(p.stdout.strip().splitlines()[-1]))
        if not res:
            continue
        t = statistics.median(r["seconds"] for r in res)
        mem = statistics.median(r["peak_mib"] for r in res)
        base = statistics.median(r["base_mib"] for r in res)
        rows.append((tool, t, mem, base, res[-1]["result"]))
        print(f"{tool:<26} {t:8.2f} s  peak {mem:7.0f} MiB  (base {base:5.0f})  {res[-1]['result']}", flush=True)
    print()
    print(f"{'tool':<26} {'median s':>9} {'peak MiB':>9} {'base MiB':>9}")
    for tool, t, mem, base, _ in rows:
        print(f"{tool:<26} {t:9.2f} {mem:9.0f} {base:9.0f}")
    if rows:
        worst = max(rows, key=lambda r: r[1])
        print(f"slowest: {worst[0]} {worst[1]:.2f} s, peak RSS {worst[2]:.0f} MiB")


# ----------------------------------------------------------------------------- near-duplicates


def make_hashes(n: int, threshold: int, share: float = 0.10, seed: int = 0) -> np.ndarray:
    """Random hashes (bit 0 set, like a pHash's DC bit) with `share` of them copies of an earlier one
    with at most `threshold` bits flipped."""
    rng = np.random.default_rng(seed)
    h = rng.integers(0, 2**63, size=n, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    planted = int(n * share)
    dst = np.sort(rng.choice(np.arange(n // 2, n), size=planted, replace=False))
    src = rng.integers(0, n // 2, size=planted)
    flips = rng.integers(0, threshold + 1, size=planted)
    mask = np.zeros(planted, np.uint64)
    for k in range(threshold):  # up to `threshold` distinct-or-repeated bits: distance <= flips
        bit = rng.integers(1, 64, size=planted).astype(np.uint64)
        mask ^= np.where(flips > k, np.uint64(1) << bit, np.uint64(0))
    h[dst] = h[src] ^ mask
    return h


def child_dedup(n: int, threshold: int) -> None:
    from passkit.filters.dedup import HashIndex, keep_first

    h = make_hashes(n, threshold)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    pairs = HashIndex(h, threshold).self_pairs()
    t1 = time.perf_counter()
    dups = keep_first(pairs)
    t2 = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    flat = np.array([(d.index, d.kept, d.distance) for d in dups], dtype=np.int64)
    digest = hashlib.sha256(flat.tobytes()).hexdigest()[:16]  # equal digests: the same NearDuplicate list
    print(json.dumps({"n": n, "seconds": t2 - t0, "pairs_s": t1 - t0, "keep_first_s": t2 - t1,
                      "peak_mib": peak / 1024, "base_mib": base / 1024, "pairs": len(pairs),
                      "removed": len(dups), "sample_digest": digest}))


def dedup(ns: list[int], threshold: int, runs: int, limit: float) -> None:
    for n in ns:
        res = []
        for _ in range(runs):
            cmd = [sys.executable, __file__, "dedup-child", "--n", str(n), "--threshold", str(threshold)]
            t0 = time.perf_counter()
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
            try:
                out, _ = p.communicate(timeout=limit)
            except subprocess.TimeoutExpired:
                peak = _peak_of(p.pid)
                p.kill()
                p.wait()
                print(f"n={n:,}: over the {limit:.0f} s limit; peak RSS so far {peak:.0f} MiB", flush=True)
                continue
            r = json.loads(out.strip().splitlines()[-1])
            r["wall"] = time.perf_counter() - t0
            res.append(r)
            print(f"n={n:,}: {r['seconds']:.1f} s (pairs {r['pairs_s']:.1f} s, keep_first {r['keep_first_s']:.1f} s), "
                  f"peak RSS {r['peak_mib']:.0f} MiB (hashes alone {r['base_mib']:.0f}), {r['pairs']:,} pairs, "
                  f"{r['removed']:,} removed, result digest {r['sample_digest']}", flush=True)
        if res:
            print(f"dedup n={n:,} t={threshold}: median {statistics.median(r['seconds'] for r in res):.1f} s, "
                  f"peak RSS {statistics.median(r['peak_mib'] for r in res):.0f} MiB", flush=True)


def _peak_of(pid: int) -> float:
    """VmHWM of a running process (MiB): its peak RSS so far, for runs stopped at the limit."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


TOOLS = ["diff", "info", *QUERIES, "loader start-up"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("root", type=Path)
    m.add_argument("--n", type=int, default=2_000_000)
    m.add_argument("--rejected", type=int, default=18_000_000)
    r = sub.add_parser("run")
    r.add_argument("root", type=Path)
    r.add_argument("--runs", type=int, default=3)
    r.add_argument("--tools", nargs="+", default=TOOLS, choices=TOOLS)
    c = sub.add_parser("child")
    c.add_argument("root", type=Path)
    c.add_argument("--tool", required=True)
    d = sub.add_parser("dedup")
    d.add_argument("--n", type=int, nargs="+", default=[2_000_000])
    d.add_argument("--threshold", type=int, default=8)
    d.add_argument("--runs", type=int, default=1)
    d.add_argument("--limit", type=float, default=1800)
    dc = sub.add_parser("dedup-child")
    dc.add_argument("--n", type=int, required=True)
    dc.add_argument("--threshold", type=int, default=8)
    args = ap.parse_args()
    os.environ.setdefault("PYTHONHASHSEED", "0")
    if args.cmd == "make":
        make(args.root, args.n, args.rejected)
    elif args.cmd == "run":
        run(args.root, args.runs, args.tools)
    elif args.cmd == "child":
        child_tool(args.tool, args.root)
    elif args.cmd == "dedup":
        dedup(args.n, args.threshold, args.runs, args.limit)
    else:
        child_dedup(args.n, args.threshold)


if __name__ == "__main__":
    main()

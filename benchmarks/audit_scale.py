"""`passkit audit` on one worker against two: wall time and peak memory on a synthetic release.

    PYTHONPATH=. .venv/bin/python benchmarks/audit_scale.py                        # 20,000 samples, 3 rounds
    PYTHONPATH=. .venv/bin/python benchmarks/audit_scale.py --samples 100000 --rounds 2 --shard-size 1000
    PYTHONPATH=. .venv/bin/python benchmarks/audit_scale.py --memory-at 20000 200000   # peak RSS against size

The release is written straight in the documented format (tests/helpers/releases.py's manifest,
json and index fields; shards through passkit.shards.write_tar; index.parquet streamed through a
ParquetWriter), from a pool of 512 real JPEGs of 64 to 128 px made once with Pillow (textures,
gradients, noise, four qualities); each sample carries one of them, so every sample is a full JPEG
decode, as in a real audit. It is cached under --work and reused when its parameters match.

Each audit runs in a fresh process (`passkit.audit.audit`, workers 1 then 2, interleaved rounds).
The script prints the median seconds, the audit process's peak RSS (ru_maxrss) and the workers'
(sampled from /proc every 50 ms; forkserver workers are not this process's children, so
RUSAGE_CHILDREN cannot see them), and as the last line `ratio workers1/workers2: X.XX` (the speed-up).
Each round also prints the CPU seconds of all its processes and the load average: on a shared
machine, CPU/wall below the worker count says the cores were busy with others, not idle.
The machine may be shared: medians of interleaved rounds, and say which machine gave them.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from passkit import licenses  # noqa: E402
from passkit.release.manifest import write as write_manifest  # noqa: E402
from passkit.shards import sha256_file, write_tar  # noqa: E402
from tests.helpers.releases import INDEX_COLUMNS, INDEX_SCHEMA, json_bytes, sample_meta  # noqa: E402

POOL = 512


def image_pool(n: int = POOL, seed: int = 0) -> list[tuple[bytes, int, int]]:
    """n varied, metadata-free JPEGs of 64..128 px: (bytes, width, height)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        w, h = (int(v) for v in rng.integers(64, 129, size=2))
        y, x = np.mgrid[0:h, 0:w]
        kind = i % 4
        base = rng.integers(0, 256, size=3)
        if kind == 0:  # gradient
            px = np.stack([(x * 2 + base[0]), (y * 2 + base[1]), (x + y + base[2])], axis=-1)
        elif kind == 1:  # stripes
            f = rng.uniform(0.05, 0.5)
            px = np.stack([127 + 120 * np.sin(f * x + c) for c in base / 40.0], axis=-1)
        elif kind == 2:  # blobs
            cx, cy = rng.integers(0, w), rng.integers(0, h)
            d = np.hypot(x - cx, y - cy)
            px = np.stack([base[c] * np.exp(-d / rng.uniform(10, 60)) + 30 * c for c in range(3)], axis=-1)
        else:  # noise
            px = rng.integers(0, 256, size=(h, w, 3))
        px = (np.asarray(px, dtype=np.float64) + rng.normal(0, 6, size=(h, w, 3))).clip(0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(px, "RGB").save(buf, "JPEG", quality=int(rng.choice([70, 80, 85, 92])))
        out.append((buf.getvalue(), w, h))
    return out


def make_release(root: Path, samples: int, shard_size: int) -> Path:
    """A clean release of `samples` samples (keys sorted within and across shards)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rel = root / "bench-1.0.0"
    stamp = rel / ".complete"
    if stamp.is_file() and stamp.read_text() == f"{samples} {shard_size}":
        return rel
    if rel.exists():
        import shutil

        shutil.rmtree(rel)
    (rel / "shards").mkdir(parents=True)
    pool = image_pool()
    lic_ids = ("cc-by-2.0", "cc-by-4.0", "cc0-1.0")
    metas = []
    for i in range(samples):
        data, w, h = pool[i % POOL]
        m = sample_meta(i, data, w, h, lic_ids[i % 3])
        metas.append((m["key"], i))
    metas.sort()
    shard_entries = []
    writer = pq.ParquetWriter(rel / "index.parquet", INDEX_SCHEMA)
    with open(rel / "attribution.csv", "w", newline="", encoding="utf-8") as fcsv:
        cw = csv.writer(fcsv)
        cols = ["key", "title", "creator", "landing_url", "license", "license_url", "attribution"]
        cw.writerow(cols)
        for s, start in enumerate(range(0, samples, shard_size)):
            shard = f"shards/bench-{s:06d}.tar"
            members, rows = [], []
            for key, i in metas[start:start + shard_size]:
                data, w, h = pool[i % POOL]
                meta = sample_meta(i, data, w, h, lic_ids[i % 3])
                members += [(f"{key}.jpg", data), (f"{key}.json", json_bytes(meta))]
                row = {"key": key, "shard": shard, **{c: meta[c] for c in INDEX_COLUMNS}}
                row["scores"] = list(row["scores"].items())
                rows.append(row)
                cw.writerow([meta[c] for c in cols])
            info = write_tar(rel / shard, members)
            shard_entries.append({"path": shard, "sha256": info.sha256, "bytes": info.bytes,
                                  "samples": len(rows)})
            writer.write_table(pa.Table.from_pylist(rows, schema=INDEX_SCHEMA))
    writer.close()
    files = {p: {"sha256": sha256_file(rel / p), "bytes": (rel / p).stat().st_size}
             for p in ("index.parquet", "attribution.csv")}
    manifest = {
        "schema_version": 1, "name": "bench", "version": "1.0.0", "release": "bench-1.0.0",
        "created": "2024-01-01T00:00:00Z", "passkit_version": "0.1.0",
        "description": "a synthetic release written by benchmarks/audit_scale.py",
        "spec_hash": hashlib.sha256(b"bench").hexdigest(), "policy": licenses.policy("by-or-public-domain").describe(),
        "detectors": [{"name": "mtcnn", "threshold": 0.9, "weights": "facenet-pytorch", "sha256": None}],
        "counts": {"candidates": samples, "kept": samples, "rejected": 0, "by_stage": {}, "by_reason": {}},
        "shards": shard_entries, "files": files, "removals": [], "validation": [],
    }
    write_manifest(rel / "manifest.json", manifest)
    stamp.write_text(f"{samples} {shard_size}")
    return rel


RUNNER = """
import json, resource, sys, time
from passkit.audit import audit
t = time.perf_counter()
r = audit(sys.argv[1], workers=int(sys.argv[2]), sample=float(sys.argv[3]) if sys.argv[3] != "-" else None)
u = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"seconds": time.perf_counter() - t, "ok": r.ok, "samples": r.stats.samples,
                  "cpu_self": u.ru_utime + u.ru_stime,
                  "findings": len(r.findings), "rss_self_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "rss_children_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    except (OSError, IndexError, ValueError):
        return 0.0


def _descendants(pid: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(p.name))
    out, todo = [], [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def run_audit(rel: Path, workers: int, sample: float | None = None) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    p = subprocess.Popen([sys.executable, "-c", RUNNER, str(rel), str(workers), str(sample or "-")],
                         stdout=subprocess.PIPE, text=True, env=env)
    peak_workers, peak_total, done = 0, 0, threading.Event()
    cpu: dict[int, float] = {}  # descendant -> its CPU seconds when last seen

    def sample_rss() -> None:
        nonlocal peak_workers, peak_total
        while not done.is_set():
            pids = _descendants(p.pid)
            kids = [_rss_kb(c) for c in pids]
            cpu.update({c: t for c in pids if (t := _cpu_seconds(c))})
            peak_workers = max([peak_workers, *kids])
            peak_total = max(peak_total, _rss_kb(p.pid) + sum(kids))
            time.sleep(0.05)

    t = threading.Thread(target=sample_rss, daemon=True)
    t.start()
    out, _ = p.communicate()
    done.set()
    t.join()
    res = json.loads(out.strip().splitlines()[-1])
    res["rss_worker_kb"], res["rss_total_kb"] = peak_workers, peak_total
    res["cpu_total"] = res["cpu_self"] + sum(cpu.values())
    if not res["ok"]:
        raise SystemExit(f"the synthetic release failed its audit: {res}")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=20_000)
    ap.add_argument("--shard-size", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--memory-at", type=int, nargs="*", default=[],
                    help="also build releases of these sizes and print the audit's peak RSS at each (workers 2)")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "passkit-audit-bench")
    args = ap.parse_args()

    for n in args.memory_at:
        t0 = time.perf_counter()
        rel = make_release(args.work / f"n{n}", n, args.shard_size)
        made = time.perf_counter() - t0
        r = run_audit(rel, 2)
        print(f"memory at {n} samples: audit process peak RSS {r['rss_self_kb'] / 1024:.0f} MiB, largest worker "
              f"{r['rss_worker_kb'] / 1024:.0f} MiB, all together {r['rss_total_kb'] / 1024:.0f} MiB "
              f"({r['seconds']:.1f}s audit, {made:.0f}s to build)", flush=True)

    t0 = time.perf_counter()
    rel = make_release(args.work / f"n{args.samples}", args.samples, args.shard_size)
    size = sum(p.stat().st_size for p in (rel / "shards").iterdir())
    print(f"release: {args.samples} samples in {-(-args.samples // args.shard_size)} shards, {size / 2**20:.0f} MiB "
          f"({time.perf_counter() - t0:.1f}s to build or reuse); {os.cpu_count()} CPUs", flush=True)
    runs: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    for rnd in range(args.rounds):
        for w in (1, 2):
            r = run_audit(rel, w)
            runs[w].append(r)
            print(f"  round {rnd + 1} workers {w}: {r['seconds']:.2f}s wall, {r['cpu_total']:.1f}s CPU (audit process "
                  f"{r['cpu_self']:.1f}s), peak RSS audit {r['rss_self_kb'] / 1024:.0f} MiB, worker "
                  f"{r['rss_worker_kb'] / 1024:.0f} MiB; load average {os.getloadavg()[0]:.1f}", flush=True)
    med = {w: statistics.median(r["seconds"] for r in rs) for w, rs in runs.items()}
    for w, rs in runs.items():
        cpu = statistics.median(r["cpu_total"] for r in rs)
        print(f"workers {w}: median {med[w]:.2f}s ({args.samples / med[w]:.0f} samples/s), CPU {cpu:.1f}s "
              f"(CPU/wall {cpu / med[w]:.2f}), peak RSS audit process "
              f"{max(r['rss_self_kb'] for r in rs) / 1024:.0f} MiB, worker {max(r['rss_worker_kb'] for r in rs) / 1024:.0f}"
              f" MiB, all processes {max(r['rss_total_kb'] for r in rs) / 1024:.0f} MiB")
    print(f"ratio workers1/workers2: {med[1] / med[2]:.2f}")


if __name__ == "__main__":
    main()

"""Stream a synthetic 1,000,000-row YFCC100M file through the yfcc100m reader and measure memory.

Each run is a fresh process that reads every line into Candidates (nothing is kept) and reports its
RSS at 100k, 500k and 1M rows and its peak RSS (ru_maxrss). The last line is the flatness ratio the
issue asks about: peak RSS after 1M rows / RSS after 100k rows (1.00 = perfectly flat), medians of 3.

    .venv/bin/python benchmarks/yfcc_stream_memory.py [--rows 1000000] [--runs 3] [--users 50000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from passkit.sources.yfcc100m_spec import Yfcc100mSourceSpec
from passkit.sources.yfcc100m import Yfcc100mSource

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

path, rows = sys.argv[1], int(sys.argv[2])
marks = {}
checkpoints = sorted({100_000, rows // 2})
src = Yfcc100mSource(Yfcc100mSourceSpec(paths=[path], max_per_creator=80))
start_rss = rss_mb()
t0 = time.perf_counter()
n = 0
for c in src.candidates():
    n += 1
    if checkpoints and src.stats["lines"] >= checkpoints[0]:
        marks[checkpoints.pop(0)] = rss_mb()
secs = time.perf_counter() - t0
marks[src.stats["lines"]] = rss_mb()
print(json.dumps({"n": n, "secs": secs, "start": start_rss, "marks": marks, "stats": src.stats,
                  "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def write_synthetic(path: Path, rows: int, users: int) -> None:
    """YFCC-shaped lines: 23 columns, '+'-encoded text, CC BY and BY-NC rows, 1 in 100 a video."""
    lic = ("Attribution License\thttp://creativecommons.org/licenses/by/2.0/",
           "Attribution-NonCommercial License\thttp://creativecommons.org/licenses/by-nc/2.0/")
    with path.open("w") as f:
        for i in range(rows):
            u = f"{i % users}@N00"
            f.write(
                f"{i}\t{u}\tuser+{i % users}\t2010-01-01 00:00:00.0\t1262304000\tCanon+EOS+5D\tPhoto+number+{i}\t"
                f"A+long+description+with+%C3%A9+and+more+text+{i}\tfoo,bar,baz+qux\t\t1.0\t2.0\t16\t"
                f"http://www.flickr.com/photos/{u}/{i}/\thttp://farm1.staticflickr.com/1/{i}_abc.jpg\t"
                f"{lic[i % 3 == 0]}\t1\t1\tabc\tabc\tjpg\t{int(i % 100 == 99)}\n"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--users", type=int, default=50_000)
    args = ap.parse_args()
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "yfcc100m_dataset"
        t0 = time.perf_counter()
        write_synthetic(path, args.rows, args.users)
        print(f"wrote {args.rows:,} rows ({path.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t0:.1f} s")
        results = []
        for run in range(args.runs):
            out = subprocess.run([sys.executable, "-c", CHILD, str(path), str(args.rows)], cwd=root,
                                 capture_output=True, text=True, check=True)
            r = json.loads(out.stdout)
            results.append(r)
            m = {int(k): v for k, v in r["marks"].items()}
            print(f"run {run + 1}: {r['stats']['lines']:,} lines -> {r['n']:,} candidates in {r['secs']:.1f} s = "
                  f"{r['stats']['lines'] / r['secs']:,.0f} lines/s; "
                  f"RSS start {r['start']:.1f} MiB, @100k {m[100_000]:.1f}, @{args.rows // 2:,} {m[args.rows // 2]:.1f}, "
                  f"@{args.rows:,} {m[args.rows]:.1f}; peak {r['peak']:.1f} MiB; stats {r['stats']}")
        med = statistics.median
        rate = med(r["stats"]["lines"] / r["secs"] for r in results)
        peak = med(r["peak"] for r in results)
        at100k = med(r["marks"]["100000"] for r in results)
        atend = med(r["marks"][str(args.rows)] for r in results)
        print(f"median: {rate:,.0f} lines/s; peak RSS {peak:.1f} MiB; RSS growth 100k -> {args.rows:,} rows: "
              f"{atend - at100k:+.1f} MiB")
        print(f"peak RSS / RSS at 100k rows: {peak / at100k:.3f}  (peak {peak:.1f} MiB over {args.rows:,} rows)")


if __name__ == "__main__":
    main()

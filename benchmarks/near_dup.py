"""Near-duplicate search over N 64-bit pHashes: time, peak memory, recall, speed-up over brute force.

    .venv/bin/python benchmarks/near_dup.py                 # 1M hashes, threshold 8, 3 runs
    .venv/bin/python benchmarks/near_dup.py --n 2000000 4000000 --runs 1

The hashes are random 64-bit values with bit 0 set (a pHash's DC bit nearly always is) plus 2 %
planted near-duplicates (a copy of an earlier hash with 0..threshold bits flipped), so the true
answer is known. Each run is a fresh subprocess, so its peak RSS (ru_maxrss) is the memory of one
`passkit.filters.dedup.near_duplicates` call on N hashes, Python and numpy included. Recall is checked
against brute force for up to 2,000 random hashes; the brute-force time for all N is extrapolated
from a slice of up to 5,000 x N comparisons. The last line is the median time and memory and the
speed-up over brute force.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import numpy as np


def make_hashes(n: int, threshold: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h = rng.integers(0, 2**63, size=n, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    planted = max(1, n // 50)
    dst = rng.choice(np.arange(n // 2, n), size=planted, replace=False)
    src = rng.integers(0, n // 2, size=planted)
    flips = rng.integers(0, threshold + 1, size=planted)
    for d, s, k in zip(dst.tolist(), src.tolist(), flips.tolist(), strict=True):
        v = int(h[s])
        for b in rng.choice(63, size=k, replace=False).tolist():
            v ^= 1 << (b + 1)
        h[d] = v
    return h


def child(n: int, threshold: int) -> None:
    import resource

    from passkit.filters.dedup import HashIndex, keep_first

    h = make_hashes(n, threshold)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    pairs = HashIndex(h, threshold).self_pairs()  # what near_duplicates() does, pairs kept for the check
    dups = keep_first(pairs)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux

    # recall: every pair within the threshold involving 2,000 random hashes must be found
    rng = np.random.default_rng(1)
    probe = rng.choice(n, size=min(n, 2000, max(200, int(2e9 // n))), replace=False)
    step = max(1, int(2e7 // n))  # rows per brute-force block (<= 160 MB of distances)
    found = set(zip(pairs.query.tolist(), pairs.base.tolist(), strict=True))
    t1 = time.perf_counter()
    slice_rows = min(n, 5_000, max(200, int(5e9 // n)))
    missing = truth = 0
    for lo in range(0, len(probe), step):
        q = probe[lo : lo + step]
        d = np.bitwise_count(h[q][:, None] ^ h[None, :])
        qi, bi = np.nonzero(d <= threshold)
        for a, b in zip(q[qi].tolist(), bi.tolist(), strict=True):
            if a == b:
                continue
            truth += 1
            missing += (min(a, b), max(a, b)) not in found
    t2 = time.perf_counter()
    for lo in range(0, slice_rows, step):
        np.nonzero(np.bitwise_count(h[lo : lo + step][:, None] ^ h[None, :]) <= threshold)
    brute_slice = time.perf_counter() - t2
    brute_all = brute_slice * n / slice_rows / 2  # i < j only
    print(json.dumps({
        "n": n, "threshold": threshold, "seconds": seconds, "peak_mib": peak / 1024,
        "before_mib": base_rss / 1024, "removed": len(dups), "pairs": len(pairs),
        "recall_pairs": truth, "recall_missing": missing, "brute_force_seconds_est": brute_all,
        "recall_check_seconds": t2 - t1,
    }))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[1_000_000])
    ap.add_argument("--threshold", type=int, default=8)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.n[0], args.threshold)
        return
    last = ""
    for n in args.n:
        results = []
        for r in range(args.runs):
            p = subprocess.run([sys.executable, __file__, "--child", "--n", str(n), "--threshold", str(args.threshold)],
                               capture_output=True, text=True, check=True)
            res = json.loads(p.stdout.strip().splitlines()[-1])
            results.append(res)
            print(f"n={n} run {r + 1}: {res['seconds']:.2f} s, peak RSS {res['peak_mib']:.0f} MiB "
                  f"(hashes alone {res['before_mib']:.0f} MiB), {res['removed']} near-duplicates removed, "
                  f"recall {res['recall_pairs'] - res['recall_missing']}/{res['recall_pairs']} pairs, "
                  f"{n / res['seconds']:,.0f} hashes/s", flush=True)
        t = statistics.median(x["seconds"] for x in results)
        mem = statistics.median(x["peak_mib"] for x in results)
        brute = statistics.median(x["brute_force_seconds_est"] for x in results)
        last = (f"near-dup n={n} t={args.threshold}: median {t:.2f} s, peak RSS {mem:.0f} MiB, "
                f"{n / t:,.0f} hashes/s; brute force est. {brute:.0f} s; speed-up {brute / t:.1f}x")
        print(last, flush=True)
    print(last)


if __name__ == "__main__":
    main()

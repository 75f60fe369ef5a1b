"""passkit.stream.loader vs webdataset's default pipeline, on the same shards.

    .venv/bin/python benchmarks/loader_vs_webdataset.py                 # 5,000 images, 5 runs each
    .venv/bin/python benchmarks/loader_vs_webdataset.py --images 1000 --runs 5   # quicker

The data: `--images` JPEGs of 640-1600 px (longer side, random aspect 3:4..16:9, quality 85-95),
cut from the photos that scikit-image and scikit-learn ship (real photo statistics, not noise),
written as a passkit release (WebDataset tars of `--shard-size` samples + manifest + index.parquet)
under `--data` (kept between runs; regenerated when the parameters change).

Both pipelines do the same work per sample: decode the JPEG, RandomResizedCrop(224) (scale
0.08-1, ratio 3/4-4/3), horizontal flip p=0.5, uint8 CHW tensor, JSON metadata, batches of
`--batch-size`, shuffled, `--workers` DataLoader workers:

- webdataset: `WebDataset(urls).shuffle(1000).decode("pil").to_tuple("jpg", "json")`, torchvision
  v2 RandomResizedCrop + RandomHorizontalFlip + PILToTensor, `.batched(...)`, in a DataLoader;
- passkit: `passkit.stream.loader(..., transform=decode.RandomResizedCrop(224), shuffle=True)`
  (crop chosen from the JPEG header, only the crop's part decoded at reduced DCT scale, then
  resized), the loader's defaults otherwise (shuffle buffer of 1000, workers from a fork server).

Each run is a full pass in fresh workers; runs alternate between the pipelines (`--runs` each,
5 by default), so drift in the machine's speed reaches both. Per run it reports:
- the time to the first batch, from building the loader (manifest and index reading included);
  run 1 is each pipeline's first pass in this process (webdataset's imports torchvision, passkit's
  starts the fork server, which imports torch), later runs reuse what run 1 loaded;
- the steady state: images/s from the first batch's arrival to the last's;
- the whole pass in images/s, and images per CPU-second (this process and every process below
  it, workers and fork server included), which other jobs on the machine disturb less;
- the 1-minute load average before and after (this benchmark's own processes count in it), and
  how many CPUs the machine's other processes kept busy during the pass (/proc/stat's busy time
  less this benchmark's). A run whose two passes shared the machine with more than `--quiet`
  (0.25) busy CPUs measured the other job as much as the loaders: its pair is run again, up to
  `--reruns` (2) times, and the summary says which runs were rerun or kept disturbed.
Then the median [min-max] of each, each run's pair ratio, and the machine's CPU model. The last
line is `ratio passkit/webdataset: X.XX`: the medians of the steady-state images/s (wall-clock).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import io
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from passkit.shards import sha256_file, write_tar  # noqa: E402

console = Console(width=150)


# ----------------------------------------------------------------------------- data


def _sources() -> list[np.ndarray]:
    from skimage import data as skd
    from sklearn.datasets import load_sample_image

    out = [load_sample_image("china.jpg"), load_sample_image("flower.jpg")]
    for name in ("chelsea", "coffee", "rocket", "astronaut", "hubble_deep_field", "immunohistochemistry"):
        try:
            img = getattr(skd, name)()
        except Exception:  # noqa: BLE001 - some need a download; skip those
            continue
        if img.ndim == 3 and img.shape[2] == 3:
            out.append(img)
    return out


_SRC: list[np.ndarray] = []


def _make(i: int) -> tuple[str, bytes, bytes]:
    """Sample i: a random crop of a source photo, resized to 640-1600 px, colour-shifted, JPEG."""
    global _SRC
    if not _SRC:
        _SRC = _sources()
    rng = np.random.default_rng(i)
    src = _SRC[i % len(_SRC)]
    h0, w0 = src.shape[:2]
    long_side = int(rng.integers(640, 1601))
    aspect = float(rng.uniform(3 / 4, 16 / 9))
    if rng.random() < 0.3:
        aspect = 1 / aspect  # portrait
    w, h = (long_side, round(long_side / aspect)) if aspect >= 1 else (round(long_side * aspect), long_side)
    # crop a window of the source with the target aspect, then resize up to the target size
    cw = min(w0, int(h0 * w / h))
    ch = min(h0, int(cw * h / w))
    x = int(rng.integers(0, w0 - cw + 1))
    y = int(rng.integers(0, h0 - ch + 1))
    im = Image.fromarray(src[y : y + ch, x : x + cw]).resize((w, h), Image.Resampling.BICUBIC)
    if rng.random() < 0.5:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    px = np.asarray(im).astype(np.int16) + rng.integers(-20, 21, size=3)
    im = Image.fromarray(px.clip(0, 255).astype(np.uint8))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=int(rng.integers(85, 96)))
    data = buf.getvalue()
    key = f"bench_{i:06d}"
    meta = {
        "key": key, "title": f"Benchmark photo {i}", "creator": f"Photographer {i % 17}",
        "creator_url": None, "source_url": f"https://example.org/{i}.jpg",
        "landing_url": f"https://example.org/photos/{i}", "provider": "example", "license": "cc-by-2.0",
        "license_name": "CC BY 2.0", "license_url": "https://creativecommons.org/licenses/by/2.0/",
        "attribution": f'"Benchmark photo {i}" by Photographer {i % 17} is licensed under CC BY 2.0.',
        "modification": "synthetic benchmark image", "source": "bench", "source_id": str(i), "query": "",
        "sha256": hashlib.sha256(data).hexdigest(), "source_sha256": "", "phash": "0" * 16,
        "width": w, "height": h, "orig_width": w, "orig_height": h, "bytes": len(data), "scores": {},
    }
    return key, data, json.dumps(meta, sort_keys=True).encode()


def make_release(dest: Path, n: int, shard_size: int) -> Path:
    """A passkit release of n benchmark images (reused when it exists with the same parameters)."""
    root = dest / f"bench{n}-s{shard_size}-1.0.0"
    if (root / "manifest.json").is_file():
        return root
    (root / "shards").mkdir(parents=True, exist_ok=True)
    shards, rows = [], []
    with Pool(2) as pool, Progress(console=console, transient=True) as prog:
        task = prog.add_task(f"writing {n} JPEGs (640-1600 px)", total=n)
        for s, start in enumerate(range(0, n, shard_size)):
            members: list[tuple[str, bytes]] = []
            rel = f"shards/bench-{s:06d}.tar"
            count = 0
            for key, data, meta in pool.imap(_make, range(start, min(n, start + shard_size)), chunksize=8):
                members += [(f"{key}.jpg", data), (f"{key}.json", meta)]
                rows.append({"key": key, "shard": rel})
                count += 1
                prog.advance(task)
            info = write_tar(root / rel, members)
            shards.append({"path": rel, "sha256": info.sha256, "bytes": info.bytes, "samples": count})
    pq.write_table(pa.Table.from_pylist(rows), root / "index.parquet")
    manifest = {
        "schema_version": 1, "name": "bench", "version": "1.0.0", "release": root.name,
        "shards": shards, "removals": [],
        "files": {"index.parquet": {"sha256": sha256_file(root / "index.parquet"),
                                    "bytes": (root / "index.parquet").stat().st_size}},
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return root


# ----------------------------------------------------------------------------- pipelines


def webdataset_loader(root: Path, batch_size: int, workers: int) -> Any:
    import webdataset as wds
    from torch.utils.data import DataLoader
    from torchvision.transforms import v2

    tf = v2.Compose([v2.RandomResizedCrop(224, antialias=True), v2.RandomHorizontalFlip(), v2.PILToTensor()])
    m = json.loads((root / "manifest.json").read_text())
    urls = [str(root / s["path"]) for s in m["shards"]]
    ds = (
        wds.WebDataset(urls, shardshuffle=len(urls), nodesplitter=wds.single_node_only,
                       workersplitter=wds.split_by_worker, empty_check=False)
        .shuffle(1000)
        .decode("pil")
        .to_tuple("jpg", "json")
        .map_tuple(tf, lambda x: x)
        .batched(batch_size, partial=True)
    )
    return DataLoader(ds, batch_size=None, num_workers=workers)


def passkit_loader(root: Path, batch_size: int, workers: int, epoch: int) -> Any:
    from passkit.stream import decode, loader

    dl = loader(root, batch_size, transform=decode.RandomResizedCrop(224), shuffle=True, seed=0,
                num_workers=workers)
    dl.set_epoch(epoch)
    return dl


def cpu_model() -> str:
    """The CPU's model name and how many this process may use (rates only compare on one machine)."""
    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return f"{name}, {len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()} CPUs"


def busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all CPUs, /proc/stat), NaN where unknown."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return float("nan")
    ticks = [int(x) for x in fields]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")  # guest time is already in user


def load_average() -> float:
    """The 1-minute load average (other jobs on the machine), -1 where the OS has none."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return -1.0


class TreeCPU:
    """User + system CPU seconds of this process and of every process below it, over one pass.

    RUSAGE_CHILDREN counts only children this process waited for: passkit's DataLoader workers
    are forked from a fork server (this process's child, their parent), so they are sampled from
    /proc while they live instead -- webdataset's forked workers the same way, so both pipelines
    are counted alike. A worker's last few milliseconds, after the last batch, go uncounted.
    """

    def __init__(self) -> None:
        self.tick = os.sysconf("SC_CLK_TCK")
        self.proc = Path("/proc").is_dir()
        self.base: dict[tuple[int, int], float] = {}
        self.seen: dict[tuple[int, int], float] = {}
        self.me0 = self._self()
        if self.proc:
            self.base = self._descendants()

    @staticmethod
    def _self() -> float:
        me = resource.getrusage(resource.RUSAGE_SELF)
        return me.ru_utime + me.ru_stime

    def _stat(self, pid: int) -> tuple[int, int, float] | None:
        """(parent pid, start time, CPU seconds) of a process, None when it is gone."""
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        return int(fields[1]), int(fields[19]), (int(fields[11]) + int(fields[12])) / self.tick

    def _descendants(self) -> dict[tuple[int, int], float]:
        kids: dict[int, list[tuple[int, int, float]]] = {}
        for entry in os.scandir("/proc"):
            if entry.name.isdigit() and (st := self._stat(int(entry.name))) is not None:
                kids.setdefault(st[0], []).append((int(entry.name), st[1], st[2]))
        out, todo = {}, [os.getpid()]
        while todo:
            for pid, start, cpu in kids.get(todo.pop(), []):
                out[(pid, start)] = cpu
                todo.append(pid)
        return out

    def sample(self, rescan: bool = False) -> None:
        """Record the CPU time of the processes below this one (all of them when `rescan`)."""
        if not self.proc:
            return
        if rescan:
            self.seen.update(self._descendants())
            return
        for pid, start in list(self.seen):
            st = self._stat(pid)
            if st is not None and st[1] == start:
                self.seen[(pid, start)] = st[2]

    def total(self) -> float:
        """CPU seconds since this object was made: this process, and what its descendants used."""
        if not self.proc:
            kids = resource.getrusage(resource.RUSAGE_CHILDREN)
            return self._self() - self.me0 + kids.ru_utime + kids.ru_stime  # reaped children only
        self.sample(rescan=True)
        return self._self() - self.me0 + sum(cpu - self.base.get(key, 0.0) for key, cpu in self.seen.items())


@dataclass
class Pass:
    images: int
    first: float  # seconds from building the loader to the first batch
    wall: float  # seconds for the whole pass (workers shut down)
    steady: float  # images/s from the first batch's arrival to the last's
    cpu: float  # CPU seconds of this process and its descendants
    load: tuple[float, float]  # 1-minute load average when the pass started and ended
    others: float  # CPUs the machine's other processes kept busy during the pass, on average


def timed_pass(make: Any) -> Pass:
    """One full pass; building the loader (manifest and index reading) counts as part of the time
    to the first batch, and the steady state is what follows it."""
    load0 = load_average()
    busy0 = busy_seconds()
    tree = TreeCPU()
    t0 = time.perf_counter()
    dl = make()
    first = last = 0.0
    n = first_n = 0
    images = None
    for batch, (images, _) in enumerate(dl):
        last = time.perf_counter() - t0
        assert images.dtype.is_floating_point is False and tuple(images.shape[1:]) == (3, 224, 224)
        if batch == 0:
            first, first_n = last, images.shape[0]
        n += images.shape[0]
        tree.sample(rescan=batch % 8 == 0)  # the workers are found at the first batch
    wall = time.perf_counter() - t0
    del images, dl
    gc.collect()
    steady = (n - first_n) / (last - first) if last > first else float("nan")
    cpu = tree.total()
    others = max(0.0, (busy_seconds() - busy0 - cpu) / wall)
    return Pass(n, first, wall, steady, cpu, (load0, load_average()), others)


def spread(values: list[float], fmt: str) -> str:
    """median [min-max], escaped for rich (which would take the brackets for markup)"""
    return escape(f"{statistics.median(values):{fmt}} [{min(values):{fmt}}-{max(values):{fmt}}]")


def main(argv: list[str] | None = None) -> float:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--shard-size", type=int, default=500)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5, help="interleaved runs per pipeline (medians are reported)")
    ap.add_argument("--quiet", type=float, default=0.25,
                    help="CPUs other processes may keep busy during a pass before the run's pair is rerun")
    ap.add_argument("--reruns", type=int, default=2, help="how many times a disturbed run's pair is rerun")
    ap.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "passkit-bench")
    args = ap.parse_args(argv)

    import torch

    from passkit.stream import decode

    torch.set_num_threads(1)
    root = make_release(args.data, args.images, args.shard_size)
    size = sum(p.stat().st_size for p in (root / "shards").glob("*.tar"))
    console.print(f"release {root} ({args.images} images, {size / 1e6:.0f} MB); passkit decoder: {decode.backend()}; "
                  f"{args.workers} workers, batch {args.batch_size}, torch threads 1")
    console.print(f"CPU: {cpu_model()}; load average at start {load_average():.2f}")
    results: dict[str, list[Pass]] = {"webdataset": [], "passkit": []}
    disturbed: list[str] = []  # what happened to runs other processes disturbed
    for run in range(args.runs):
        for attempt in range(args.reruns + 1):
            pair: dict[str, Pass] = {}
            for name in ("webdataset", "passkit"):
                def make(name: str = name, run: int = run) -> Any:
                    if name == "webdataset":
                        return webdataset_loader(root, args.batch_size, args.workers)
                    return passkit_loader(root, args.batch_size, args.workers, run)

                r = pair[name] = timed_pass(make)
                console.print(f"run {run + 1}/{args.runs} {name:>10}: {r.images} images, first batch {r.first:5.2f} s, "
                              f"steady {r.steady:6.1f} img/s, pass {r.wall:6.2f} s = {r.images / r.wall:6.1f} img/s, "
                              f"{r.images / r.cpu:6.1f} img/CPU-s; load {r.load[0]:.2f}->{r.load[1]:.2f}, "
                              f"others {r.others:.2f} CPUs")
            busy = max(r.others for r in pair.values())
            if busy <= args.quiet:
                break
            if attempt < args.reruns:
                disturbed.append(f"run {run + 1} rerun: other processes kept {busy:.2f} CPUs busy")
                console.print(f"  other processes kept {busy:.2f} CPUs busy during this pair "
                              f"(more than {args.quiet}): both passes again")
            else:
                disturbed.append(f"run {run + 1} kept although other processes kept {busy:.2f} CPUs busy")
        for name, r in pair.items():
            results[name].append(r)

    table = Table(title=escape(f"{args.runs} interleaved runs: median [min-max]"))
    for col in ("pipeline", "images", "steady img/s", "first batch (s)", "whole pass img/s", "img/CPU-s"):
        table.add_column(col, justify="right")
    med: dict[str, dict[str, float]] = {}
    for name, rs in results.items():
        med[name] = {"steady": statistics.median(r.steady for r in rs),
                     "first": statistics.median(r.first for r in rs),
                     "cpu": statistics.median(r.images / r.cpu for r in rs)}
        table.add_row(name, str(rs[0].images), spread([r.steady for r in rs], ".1f"),
                      spread([r.first for r in rs], ".2f"), spread([r.images / r.wall for r in rs], ".1f"),
                      spread([r.images / r.cpu for r in rs], ".1f"))
    console.print(table)
    pairs = [p.steady / w.steady for w, p in zip(results["webdataset"], results["passkit"], strict=True)]
    firsts = [p.first / w.first for w, p in zip(results["webdataset"], results["passkit"], strict=True)]
    console.print("steady-state ratio of each run's pair: " + ", ".join(f"{x:.2f}" for x in pairs))
    console.print("other processes: " + ("; ".join(disturbed) if disturbed else
                                         f"no pass shared the machine with more than {args.quiet} busy CPUs"))
    console.print("first-batch ratio of each run's pair: " + ", ".join(f"{x:.2f}" for x in firsts)
                  + " (run 1's passkit pass starts the fork server its workers come from)")
    cpu_ratio = med["passkit"]["cpu"] / med["webdataset"]["cpu"]
    console.print(f"images per CPU-second ratio passkit/webdataset (medians): {cpu_ratio:.2f}")
    console.print(f"first-batch ratio passkit/webdataset (medians): {med['passkit']['first'] / med['webdataset']['first']:.2f}")
    ratio = med["passkit"]["steady"] / med["webdataset"]["steady"]
    console.print("the last line: steady-state images/s (wall-clock, after the first batch), medians, passkit/webdataset")
    print(f"ratio passkit/webdataset: {ratio:.2f}")
    return ratio


if __name__ == "__main__":
    main()

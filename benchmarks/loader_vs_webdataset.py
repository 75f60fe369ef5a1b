"""passkit.stream.loader vs webdataset's default pipeline, on the same shards.

    .venv/bin/python benchmarks/loader_vs_webdataset.py                 # 5,000 images, 3 runs each
    .venv/bin/python benchmarks/loader_vs_webdataset.py --images 1000 --runs 3   # quicker

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
  (crop chosen from the JPEG header, reduced-scale DCT decode, then crop + resize).

Each run is a full pass in fresh workers (time to first batch counts from building the loader); runs alternate between the pipelines; the medians of
`--runs` runs are reported, with the time to first batch (iterator creation to first batch).
Also reported: images per CPU-second (main process + workers), a ratio that stays meaningful when
other jobs share the machine. The last line is `ratio passkit/webdataset: X.XX` (wall-clock images/s).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import io
import json
import resource
import statistics
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from passkit.shards import sha256_file, write_tar  # noqa: E402

console = Console()


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


def cpu_seconds() -> float:
    """User + system CPU time of this process and of its finished children (the DataLoader workers,
    joined when a pass ends)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def timed_pass(make: Any) -> tuple[int, float, float, float]:
    """(images, seconds to first batch, seconds in all, CPU seconds) for one full pass; building the
    loader (manifest and index reading) counts as part of the time to first batch."""
    c0 = cpu_seconds()
    t0 = time.perf_counter()
    dl = make()
    first = None
    n = 0
    images = None
    for images, _ in dl:
        if first is None:
            first = time.perf_counter() - t0
        assert images.dtype.is_floating_point is False and tuple(images.shape[1:]) == (3, 224, 224)
        n += images.shape[0]
    wall = time.perf_counter() - t0
    del images, dl
    gc.collect()
    return n, first or 0.0, wall, cpu_seconds() - c0


def main(argv: list[str] | None = None) -> float:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--shard-size", type=int, default=500)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3, help="runs per pipeline (the median is reported)")
    ap.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "passkit-bench")
    args = ap.parse_args(argv)

    import torch

    from passkit.stream import decode

    torch.set_num_threads(1)
    root = make_release(args.data, args.images, args.shard_size)
    size = sum(p.stat().st_size for p in (root / "shards").glob("*.tar"))
    console.print(f"release {root} ({args.images} images, {size / 1e6:.0f} MB); decoder: {decode.backend()}; "
                  f"{args.workers} workers, batch {args.batch_size}, torch threads 1")
    results: dict[str, list[tuple[int, float, float, float]]] = {"webdataset": [], "passkit": []}
    for run in range(args.runs):
        for name in ("webdataset", "passkit"):
            def make(name: str = name, run: int = run) -> Any:
                if name == "webdataset":
                    return webdataset_loader(root, args.batch_size, args.workers)
                return passkit_loader(root, args.batch_size, args.workers, run)

            n, first, total, cpu = timed_pass(make)
            results[name].append((n, first, total, cpu))
            console.print(f"run {run + 1}/{args.runs} {name:>10}: {n} images in {total:6.2f} s = "
                          f"{n / total:7.1f} images/s, first batch {first:5.2f} s, {n / cpu:6.1f} images/CPU-s")

    table = Table(title=f"median of {args.runs} runs")
    for col in ("pipeline", "images", "images/s", "first batch (s)", "pass (s)", "images/CPU-s"):
        table.add_column(col, justify="right")
    rate, per_cpu = {}, {}
    for name, rs in results.items():
        rate[name] = statistics.median(n / t for n, _, t, _ in rs)
        per_cpu[name] = statistics.median(n / c for n, _, _, c in rs)
        table.add_row(name, str(rs[0][0]), f"{rate[name]:.1f}", f"{statistics.median(r[1] for r in rs):.2f}",
                      f"{statistics.median(r[2] for r in rs):.2f}", f"{per_cpu[name]:.1f}")
    console.print(table)
    ratio = rate["passkit"] / rate["webdataset"]
    console.print(f"CPU efficiency ratio passkit/webdataset (images per CPU-second, insensitive to other "
                  f"load on the machine): {per_cpu['passkit'] / per_cpu['webdataset']:.2f}")
    print(f"ratio passkit/webdataset: {ratio:.2f}")
    return ratio


if __name__ == "__main__":
    main()

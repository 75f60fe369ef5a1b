"""The image check's planar JPEG path against its RGB path, on the ingest benchmark's photos, one thread.

    .venv/bin/python benchmarks/image_check_paths.py                 # 600 photos, 5 interleaved rounds
    .venv/bin/python benchmarks/image_check_paths.py --images 200 --rounds 3

The RGB path (what the people filter gets): libjpeg-turbo decodes to RGB at a reduced DCT scale, OpenCV
resizes three channels, the encoder converts back to YCbCr. The planar path (people filter off): Y, Cb, Cr
planes from decode to encode (passkit.jpeg_planes). Both write the same sizes; the script prints ms per
photo for a full-size decode and for the whole check (image.max_side 512, both `fit` settings), medians of
the rounds, and as the last line `ratio rgb/planar (check, fit shorter): X.XX`.

The photos are the ingest benchmark's corpus (benchmarks/ingest_vs_img2dataset.py makes it if missing).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import simplejpeg

from passkit import images, jpeg_planes
from passkit.config import ImageSpec

HERE = Path(__file__).resolve().parent


def corpus(work: Path, n: int) -> list[bytes]:
    spec = importlib.util.spec_from_file_location("ingest_bench", HERE / "ingest_vs_img2dataset.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    folder = bench.make_corpus(work, max(n, 3000))  # the ingest benchmark's corpus, shared
    return [p.read_bytes() for p in sorted((folder / "img").glob("*.jpg"))[:n]]


def per_item_ms(fn: Callable[[bytes], object], items: list[bytes]) -> float:
    t0 = time.perf_counter()
    for d in items:
        fn(d)
    return 1000 * (time.perf_counter() - t0) / len(items)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=600)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "passkit-ingest-bench")
    args = ap.parse_args()
    if not jpeg_planes.available():
        sys.exit("no libturbojpeg for the planar path: apt-get install libturbojpeg0, or pip install turbojpeg")
    cv2.setNumThreads(1)  # one image at a time on one core, as in a crawl worker's share
    data = corpus(args.work, args.images)
    print(f"{len(data)} photos, planar path via {jpeg_planes.library()}")
    shorter, longer = ImageSpec(max_side=512, fit="shorter"), ImageSpec(max_side=512)
    contestants: dict[str, Callable[[bytes], object]] = {
        "decode, full size, RGB": lambda d: simplejpeg.decode_jpeg(d, colorspace="RGB"),
        "decode, full size, planes": lambda d: jpeg_planes.decode_planes(d),
        "check, fit shorter, RGB": lambda d: images.check(d, shorter, pixels=True),
        "check, fit shorter, planar": lambda d: images.check(d, shorter, pixels=False),
        "check, fit longer, RGB": lambda d: images.check(d, longer, pixels=True),
        "check, fit longer, planar": lambda d: images.check(d, longer, pixels=False),
    }
    for fn in contestants.values():  # warm caches and lazy imports
        for d in data[:20]:
            fn(d)
    times: dict[str, list[float]] = {k: [] for k in contestants}
    for r in range(args.rounds):
        for name, fn in contestants.items():
            times[name].append(per_item_ms(fn, data))
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in times.items()), flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print()
    for name, ms in med.items():
        print(f"{name:28s} {ms:6.2f} ms/photo (median of {args.rounds})")
    print(f"ratio rgb/planar (decode): {med['decode, full size, RGB'] / med['decode, full size, planes']:.2f}")
    print(f"ratio rgb/planar (check, fit longer): {med['check, fit longer, RGB'] / med['check, fit longer, planar']:.2f}")
    print(f"ratio rgb/planar (check, fit shorter): "
          f"{med['check, fit shorter, RGB'] / med['check, fit shorter, planar']:.2f}")


if __name__ == "__main__":
    main()

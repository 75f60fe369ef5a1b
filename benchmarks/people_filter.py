"""People filter throughput: images/s per detector and for the ensembles, on the pipeline's 512 px images.

Each configuration scores the same images (person_dev_coco, then person_dev, after the pipeline's
own image check) three times; the median is reported. Per-detector numbers use one process and one
thread (what one pipeline worker on a 2-core machine gets). Ensembles are measured the way a build
runs them on WORKERS cores: WORKERS spawned worker processes, each with its own `PeopleFilter`,
cpu_count // WORKERS threads for torch/OpenCV/ONNX Runtime (as passkit.executors.local sets), each
scoring batches of BATCH images (detectors one after another, the default; also measured with
`concurrent: true`, one thread per detector).

    PASSKIT_MODELS=../shared/models .venv/bin/python benchmarks/people_filter.py [--images 128] [--workers 2]

The last line is the throughput target's ratio: default-ensemble images/s on WORKERS cores / 30 (target >= 1.0).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
TARGET = 30.0
BATCH = 16
RUNS = 3


def load_images(n: int) -> list[Any]:
    from passkit import images
    from passkit.config import ImageSpec
    from passkit.filters.eval import read_labels

    paths: list[Path] = []
    for name in ("person_dev_coco", "person_dev"):
        folder = SHARED / "data" / name
        if (folder / "labels.csv").is_file():
            paths += [p for p, _ in read_labels(folder)]
    if not paths:
        sys.exit(f"no labelled images under {SHARED / 'data'} (person_dev_coco, person_dev)")
    spec = ImageSpec()
    return [images.check(p.read_bytes(), spec).image for p in paths[:n]]


def _set_threads(threads: int) -> None:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    import cv2
    import torch

    cv2.setNumThreads(threads)
    torch.set_num_threads(threads)


_FILTER: Any = None


def _worker_init(people: dict[str, Any], threads: int) -> None:
    global _FILTER
    _set_threads(threads)
    from passkit.config import PeopleSpec
    from passkit.filters.people import PeopleFilter

    _FILTER = PeopleFilter(PeopleSpec.model_validate(people), threads=threads)
    from PIL import Image

    _FILTER.score([Image.new("RGB", (512, 384), (120, 110, 100))])  # warm up (ORT, cv2 allocations)


def _worker_score(batch: list[bytes]) -> float:
    """Scores one batch; returns the CPU seconds the worker process spent on it (all its threads)."""
    import io

    from PIL import Image

    ims = [Image.open(io.BytesIO(b)).convert("RGB") for b in batch]
    # decode happens in the pipeline's image check, not the filter: keep it out of the timing
    c0 = time.process_time()
    _FILTER.score(ims)
    return time.process_time() - c0


def ensemble_rate(people: dict[str, Any], ims: list[Any], workers: int) -> tuple[list[float], list[float]]:
    """Per run: images/s of the ensemble on `workers` processes (wall clock), and the CPU-bound rate
    `workers / (CPU seconds per image)`, what `workers` idle cores would give (the wall-clock figure
    is lower whenever other processes share the cores)."""
    import io
    import multiprocessing as mp

    blobs = []
    for im in ims:
        buf = io.BytesIO()
        im.save(buf, format="PNG", compress_level=1)  # lossless: the workers see the same pixels
        blobs.append(buf.getvalue())
    batches = [blobs[i : i + BATCH] for i in range(0, len(blobs), BATCH)]
    threads = max(1, (os.cpu_count() or 1) // workers)
    rates, cpu_rates = [], []
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_worker_init,
                             initargs=(people, threads)) as pool:
        list(pool.map(_worker_score, batches[:workers]))  # every worker warm
        for _ in range(RUNS):
            t0 = time.perf_counter()
            cpu = sum(pool.map(_worker_score, batches))
            rates.append(len(ims) / (time.perf_counter() - t0))
            cpu_rates.append(workers * len(ims) / cpu)
    return rates, cpu_rates


def detector_rates(ims: list[Any]) -> dict[str, float]:
    """Median images/s of each detector alone, one process, one thread."""
    import numpy as np

    from passkit.config import DetectorSpec, PeopleSpec
    from passkit.filters.people import PeopleFilter, _to_rgb_array

    _set_threads(1)
    arrays = [_to_rgb_array(im) for im in ims]
    out: dict[str, float] = {}
    for name in ("yolox_nano", "picodet_s_416", "yunet", "yolo_fastest_body", "retinaface_mnet025", "mtcnn", "hog"):
        pf = PeopleFilter(PeopleSpec(detectors=[DetectorSpec(name=name, threshold=0.5, required=False)]),
                          threads=1)
        if not pf.detectors:
            print(f"  {name}: skipped ({pf.skipped[0][1]})")
            continue
        det = pf.detectors[0]
        det.detect(arrays[:2])
        rates, cpu = [], []
        for _ in range(RUNS):
            t0, c0 = time.perf_counter(), time.process_time()
            for i in range(0, len(arrays), BATCH):
                det.detect(arrays[i : i + BATCH])
            rates.append(len(arrays) / (time.perf_counter() - t0))
            cpu.append(1000 * (time.process_time() - c0) / len(arrays))
        out[name] = float(np.median(rates))
        print(f"  {name:<18} {out[name]:7.1f} img/s  ({1000 / out[name]:.1f} ms/img wall, "
              f"{np.median(cpu):.1f} ms/img CPU, 1 thread)", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=128)
    ap.add_argument("--workers", type=int, default=2, help="worker processes for the ensembles (cores)")
    ap.add_argument("--skip-detectors", action="store_true")
    ap.add_argument("--only-default", action="store_true", help="ensembles: the default one only (both modes)")
    args = ap.parse_args()

    from passkit import models
    from passkit.config import PeopleSpec, load_spec

    ims = load_images(args.images)
    print(f"people filter benchmark: {len(ims)} images (<= 512 px), models folder {models.models_dir()}, "
          f"{os.cpu_count()} CPUs, {args.workers} workers, median of {RUNS} runs")
    if not args.skip_detectors:
        print("per detector:")
        detector_rates(ims)

    default = PeopleSpec().model_dump(mode="json")
    # the people section of pipelines/people-high-recall.yaml
    high_recall = load_spec(ROOT / "pipelines" / "people-high-recall.yaml").people.model_dump(mode="json")
    no_weights = {"detectors": [{"name": "mtcnn", "threshold": 0.9}, {"name": "hog", "threshold": 0.5}]}
    concurrent = {**default, "concurrent": True}
    results: dict[str, float] = {}
    cpu_bound: dict[str, float] = {}
    print(f"ensembles ({args.workers} worker processes; load average before: {os.getloadavg()[0]:.1f}):")
    configs = [("default", default), ("default, detectors in concurrent threads", concurrent),
               ("high recall (people-high-recall.yaml)", high_recall), ("no weights (mtcnn + hog)", no_weights)]
    for label, people in configs[: 2 if args.only_default else None]:
        rates, cpu_rates = ensemble_rate(people, ims, args.workers)
        results[label], cpu_bound[label] = statistics.median(rates), statistics.median(cpu_rates)
        print(f"  {label:<38} {results[label]:7.1f} img/s wall  (runs: {', '.join(f'{r:.1f}' for r in rates)}); "
              f"CPU-bound {cpu_bound[label]:.1f} img/s", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.1f} (wall-clock rates drop when other work shares the cores)")
    print(f"default ensemble on {args.workers} cores / target {TARGET:.0f} img/s: "
          f"{results['default'] / TARGET:.2f} wall, {cpu_bound['default'] / TARGET:.2f} CPU-bound")


if __name__ == "__main__":
    main()

"""OpenVINO (CPU) against ONNX Runtime for every ONNX detector: images/s on the pipeline's 512 px images.

Both runtimes of a detector are built side by side and scored on the same images in interleaved
rounds (ORT, OV, ORT, OV, ...), so load from other jobs on a shared machine hits both alike; the
median of the rounds is reported, with OV/ORT ratios measured in the same run. `--threads` is the
intra-op threads each runtime gets (2 = a 2-core machine with one worker; 1 = one of two workers).
YOLOX-nano at 512 runs only on OpenVINO (ORT cannot reshape the graph); its ratio is against
YOLOX-nano at 416 on ORT, today's setting.

    PASSKIT_MODELS=../shared/models .venv/bin/python benchmarks/onnx_runtimes.py [--images 96] [--rounds 5] [--threads 2]

The last line is the smallest OV/ORT ratio over the detectors (> 1.0: OpenVINO is faster for every one).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.people_filter import load_images  # noqa: E402

# (label, detector, input_size) pairs compared: the first runs on ORT, the second on OpenVINO
CASES = [
    ("yolox_nano", ("yolox_nano", None), ("yolox_nano", None)),
    ("yolox_nano@512 (OV) vs @416 (ORT)", ("yolox_nano", None), ("yolox_nano", 512)),
    ("picodet_s_416", ("picodet_s_416", None), ("picodet_s_416", None)),
    ("retinaface_mnet025", ("retinaface_mnet025", None), ("retinaface_mnet025", None)),
]


def build(name: str, size: int | None, runtime: str, threads: int) -> Any:
    from passkit.config import DetectorSpec
    from passkit.filters.people import build_detector
    from passkit.models import models_dir

    spec = DetectorSpec(name=name, threshold=0.5, runtime=runtime, input_size=size)  # type: ignore[arg-type]
    return build_detector(spec, "cpu", models_dir(), threads)


def rate(det: Any, arrays: list[Any]) -> float:
    t = time.perf_counter()
    det.detect(arrays)
    return len(arrays) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=96)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import cv2

    cv2.setNumThreads(1)  # preprocessing on the calling thread, like a pipeline worker
    from passkit.filters.people.common import _to_rgb_array

    arrays = [_to_rgb_array(im) for im in load_images(args.images)]
    ratios = []
    for label, (n0, s0), (n1, s1) in CASES:
        ort, ov = build(n0, s0, "onnxruntime", args.threads), build(n1, s1, "openvino", args.threads)
        ort.detect(arrays[:4]), ov.detect(arrays[:4])  # warm up
        a: list[float] = []
        b: list[float] = []
        for _ in range(args.rounds):
            a.append(rate(ort, arrays))
            b.append(rate(ov, arrays))
        r = statistics.median(x / y for x, y in zip(b, a, strict=True))
        ratios.append(r)
        print(f"{label:36s} ORT {statistics.median(a):6.1f} img/s   OV {statistics.median(b):6.1f} img/s   "
              f"OV/ORT {r:.2f} (median of {args.rounds} paired rounds, {len(arrays)} images, {args.threads} threads)")
    print(f"min OV/ORT ratio: {min(ratios):.2f}")


if __name__ == "__main__":
    main()

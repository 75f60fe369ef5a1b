"""Does the people filter see people better on the downloaded original, on tiles, or at a larger network
input, than on the pipeline's image (longer side `image.max_side`, 512)? Measured per detector.

For every configuration (detector, what it looks at, network input size) each photo of a labelled folder
gets an image score (top box, and noisy-OR of the boxes), then the recall at FRR <= --budget, with the
threshold fitted on all photos and 5-fold cross-validated (passkit.filters.eval), and the CPU ms per
photo on one thread. The sources:

- ``pipeline``: the image the filter gets today (images.check: EXIF-rotated, RGB, longer side <= 512);
- ``original``: the downloaded file, decoded at full size (the network resizes it to its input);
- ``tiles2``: the original cut in a 2 x 2 grid of overlapping tiles, each scored (the image score is the
  best tile's), so a small person fills four times more of the network's input.

    PASSKIT_MODELS=../shared/models .venv/bin/python benchmarks/people_resolution.py ../shared/data/person_dev_coco

The last line compares the best original/tiles configuration with the pipeline image at the detector's
default input: recall difference (cross-validated) and cost ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any

# (label, detector, source, params): input sizes beyond the graph's own need OpenVINO's reshape
CONFIGS: list[tuple[str, str, str, dict[str, Any]]] = [
    ("yolox_nano 416 on pipeline", "yolox_nano", "pipeline", {}),
    ("yolox_nano 512 on pipeline", "yolox_nano", "pipeline", {"input_size": 512}),
    ("yolox_nano 640 on pipeline", "yolox_nano", "pipeline", {"input_size": 640}),
    ("yolox_nano 640 on original", "yolox_nano", "original", {"input_size": 640}),
    ("yolox_nano 416 on tiles2", "yolox_nano", "tiles2", {}),
    ("picodet_s_416 on pipeline", "picodet_s_416", "pipeline", {}),
    ("picodet_s_416 on original", "picodet_s_416", "original", {}),
    ("picodet_s_416 on tiles2", "picodet_s_416", "tiles2", {}),
    ("yunet on pipeline", "yunet", "pipeline", {}),
    ("yunet on original", "yunet", "original", {}),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", type=Path, help="labelled folder (labels.csv + images/), e.g. person_dev_coco")
    ap.add_argument("--budget", type=float, default=0.10, help="false-rejection budget (default 0.10)")
    ap.add_argument("--only", default="", help="comma-separated labels (substrings) of the configurations to run")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import cv2
    import numpy as np
    import torch
    from PIL import Image, ImageOps

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    from passkit import images
    from passkit.config import DetectorSpec, ImageSpec, PeopleSpec
    from passkit.filters.eval import choose_threshold, cross_validate, folds_of, read_labels
    from passkit.filters.people import PeopleFilter, _to_rgb_array, image_score, tile_grid

    pairs = read_labels(args.folder)
    y = [bool(label) for _, label in pairs]
    pipeline, original = [], []
    for path, _ in pairs:
        data = path.read_bytes()
        pipeline.append(_to_rgb_array(images.check(data, ImageSpec()).image))
        original.append(_to_rgb_array(ImageOps.exif_transpose(Image.open(path))))
    sides = [max(a.shape[:2]) for a in original]
    print(f"{args.folder}: {len(y)} photos ({sum(y)} with a person), originals {min(sides)}-{max(sides)} px "
          f"(median {statistics.median(sides):.0f}), pipeline images <= 512 px; FRR budget {args.budget}")
    fold = folds_of(y, 5, 0)
    rows = []
    for label, name, source, params in CONFIGS:
        if args.only and not any(o in label for o in args.only.split(",")):
            continue
        pf = PeopleFilter(PeopleSpec(detectors=[DetectorSpec(name=name, threshold=0.5, required=False, **params)]),
                          threads=1)
        if not pf.detectors:
            print(f"  {label}: skipped ({pf.skipped[0][1]})")
            continue
        det = pf.detectors[0]
        arrays = pipeline if source == "pipeline" else original
        det.detect(arrays[:1])
        top, nor = [], []
        c0 = time.process_time()
        for a in arrays:
            if source == "tiles2":
                crops = [np.ascontiguousarray(a[y0:y1, x0:x1]) for x0, y0, x1, y1 in tile_grid(*a.shape[:2], 2)]
                found = det.detect(crops or [a])
                top.append(max(image_score(b) for b in found))
                nor.append(max(image_score(b, "noisy_or") for b in found))
            else:
                (b,) = det.detect([a])
                top.append(image_score(b))
                nor.append(image_score(b, "noisy_or"))
        ms = 1000 * (time.process_time() - c0) / len(arrays)
        out = {"label": label, "ms": ms}
        for how, s in (("top", top), ("noisy_or", nor)):
            t = choose_threshold([v for v, p in zip(s, y, strict=True) if p],
                                 [v for v, p in zip(s, y, strict=True) if not p], args.budget)
            fitted = sum(v >= t for v, p in zip(s, y, strict=True) if p) / sum(y)
            cv, _ = cross_validate(s, [0.0] * len(s), y, args.budget, fold)
            out[how] = (fitted, cv["recall"], cv["frr"])
        rows.append(out)
        print(f"  {label:<30} {ms:6.1f} ms/photo  top: recall {out['top'][0]:.3f} fitted, {out['top'][1]:.3f} CV "
              f"(FRR {out['top'][2]:.3f})  noisy_or: {out['noisy_or'][0]:.3f} fitted, {out['noisy_or'][1]:.3f} CV "
              f"(FRR {out['noisy_or'][2]:.3f})", flush=True)
    for name in ("yolox_nano", "picodet_s_416"):
        base = next((r for r in rows if r["label"].startswith(name) and r["label"].endswith("on pipeline")), None)
        other = [r for r in rows if r["label"].startswith(name) and not r["label"].endswith("on pipeline")]
        if base and other:
            best = max(other, key=lambda r: r["noisy_or"][1])
            print(f"{name}: best of original/tiles ({best['label']}) against the pipeline image: CV recall "
                  f"{best['noisy_or'][1] - base['noisy_or'][1]:+.3f} (noisy_or), cost {best['ms'] / base['ms']:.2f}x")


if __name__ == "__main__":
    main()

"""People filter: an ensemble of face and person detectors; an image is rejected when any detector fires.

Each detector turns an RGB image into boxes `[x0, y0, x1, y1, score]` (pixels of the image it was
given, best first) with a score in [0, 1]; its *top* score is compared with its threshold from the spec.
An image "has a person" when at least one detector fires (a logical OR: for a people-free dataset a
miss costs more than a false rejection).

Layout: `ensemble` (PeopleFilter, PeopleResult, tiling, the review band), `common` (the Detector
base, errors, NMS and box lists, the tile grid, runtime and device helpers), `detectors` (name ->
class, from the registry), and one module per detector. To add a detector: write its module (a
`Detector` subclass with `name`, `task`, `from_spec` and `detect`) and add its entry to
`passkit.models.REGISTRY` (`detector="module:Class"`, its weights files or the package that carries
them; the spec's detector names and the manifest's licence and source come from there too).

Detectors (the names specs use):

- ``mtcnn`` (`mtcnn.py`): faces, facenet-pytorch's MTCNN (weights inside the package). Score: the
  O-net face probability (MTCNN only reports faces whose probability is >= 0.7, so the score is 0 or >= 0.7).
- ``hog`` (`hog.py`): whole people, OpenCV's Dalal-Triggs HOG + linear SVM (coefficients inside
  OpenCV, so it needs no download); a weak, texture-sensitive stand-in for a user without downloaded
  weights (its image size and margin -> score map: see hog.py).
- ``yolox_nano`` (`yolox_nano.py`): people (COCO class 0), YOLOX-nano ONNX; score = obj * cls_person.
  `input_size` (default 416) runs the graph at another square size, through OpenVINO's reshape.
- ``picodet_s_416`` (`picodet.py`): people (COCO class 0), PP-PicoDet-S 416 ONNX; score = cls_person.
- ``retinaface_mnet025`` (`retinaface.py`): faces, RetinaFace MobileNet-0.25 ONNX; score = face probability.
- ``yunet`` (`yunet.py`): faces, YuNet-n through `cv2.FaceDetectorYN`; score = YuNet's face score.
- ``yolo_fastest_body`` (`yolo_fastest_body.py`): people, Yolo-Fastest 1.1 body (Darknet) through
  `cv2.dnn`; score = obj * p(body) (OpenCV zeroes scores under ~0.2, so the score is 0 or >= 0.2).
- ``torchvision`` (`torchvision_coco.py`): a torchvision COCO detector from a local weights file.
- ``faster_rcnn_v2``, ``keypoint_rcnn`` (`torchvision_strong.py`): people, torchvision's large COCO
  detectors for GPU machines (`passkit models fetch --set strong`); score = the person class's.
  Tested on random-init weights only: no recall measured.

Default ensemble (`PeopleSpec`), chosen with `passkit filter eval` on person_dev (24 sample photos)
and person_dev_coco (297 real COCO photos: 162 with a person, 135 without), images resized to 512 px:

- with weights (`passkit models fetch`): yolox_nano >= 0.15 (review band from 0.05), yolo_fastest_body
  >= 0.20 (its scores are 0 or >= 0.2, so no band), yunet >= 0.85 (review from 0.70). Chosen as the
  highest recall with false rejections inside the 10 % budget (a grid over the three thresholds on
  person_dev_coco's per-image scores). On COCO: recall 0.883 rejected outright, 0.920 counting the
  review queue, false-rejection rate 0.074, precision 0.935, 9.4 % of images to review (per
  detector: yolox_nano 0.846 / 0.901 with review, yolo_fastest_body 0.778, yunet 0.290 / 0.463).
  person_dev: recall 1.0; FRR 0.20 (the skimage horse silhouette, motorcycle, retina and aero score
  0.35-0.51 on yolox_nano; none is served by the demo, and every photo the demo serves scores under
  0.05). The thresholds sit low because people that fill under 1 % of a COCO photo score 0.1-0.4.
  Detectors fail on the same images (tiny, occluded, seen from behind), so no setting of these
  three reaches recall 0.99 at FRR <= 0.10 on COCO (0.883 is the grid's best).
- high recall: `tiles: 2` with `tile_threshold: 0.65` on yolox_nano (a 2 x 2 grid of overlapping
  tiles, whose detections need a higher score than the whole image's: a tile upsamples clutter
  too): COCO recall 0.907 outright at FRR 0.089 (grid's best over every detector here, tiles
  included), at ~3x the yolox_nano cost; see `pipelines/people-high-recall.yaml`.
- without weights: MTCNN >= 0.90 and HOG >= 0.50 stand in (`fallback_for`): person_dev recall 1.0
  (HOG alone catches pywt ascent), FRR 0.05; COCO recall 0.475, FRR 0.074. Install the weights.

Runtimes: each ONNX detector runs on the runtime measured faster for it (benchmarks/onnx_runtimes.py):
OpenVINO (CPU, `pip install 'passkit[openvino]'`, same scores to 1e-4) for picodet_s_416,
retinaface_mnet025 and a reshaped yolox_nano, ONNX Runtime for yolox_nano at 416, when OpenVINO is
missing and on the GPU; a detector's `runtime` setting pins one.

Threads: nothing here changes the process-wide thread settings of torch or OpenCV. ONNX Runtime
sessions get `threads` intra-op threads (default: `torch.get_num_threads()` at construction), so
a worker that sets its torch threads (or OMP_NUM_THREADS before importing torch) before building the
filter gets that many everywhere. One torch thread per worker is best: MTCNN's many small P-net
batches get slower, not faster, with more intra-op threads. Build one `PeopleFilter` per process
(spawned, or after the fork); the detectors hold native thread pools and are not thread-safe, so do not
call one filter from several threads at once.
"""

from __future__ import annotations

from typing import Any

from passkit.filters.people.common import (
    MAX_BOXES,
    NMS_IOU,
    TILE_MIN_SIDE,
    TILE_OVERLAP,
    Detector,
    DetectorUnavailable,
    PeopleFilterError,
    _to_rgb_array,
    ort_providers,
    tile_grid,
)
from passkit.filters.people.detectors import DETECTORS, build_detector, detector_class
from passkit.filters.people.ensemble import PeopleFilter, PeopleResult, image_score, tile_key
from passkit.filters.people.hog import HOG_MARGIN0, HOG_SIDE

__all__ = [
    "DETECTORS",
    "HOG_MARGIN0",
    "HOG_SIDE",
    "MAX_BOXES",
    "NMS_IOU",
    "TILE_MIN_SIDE",
    "TILE_OVERLAP",
    "Detector",
    "DetectorUnavailable",
    "PeopleFilter",
    "PeopleFilterError",
    "PeopleResult",
    "_to_rgb_array",
    "build_detector",
    "detector_class",
    "image_score",
    "ort_providers",
    "tile_grid",
    "tile_key",
]


def __getattr__(attr: str) -> Any:
    """Detector classes by class name (`people.HOGDetector`), as the single module offered them,
    imported on first use like `build_detector` does, so importing the package stays light."""
    for name, ref in DETECTORS.items():
        if ref.split(":")[1] == attr:
            return detector_class(name)
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")

"""People filter: an ensemble of face and person detectors; an image is rejected when any detector fires.

Each detector turns an RGB image into boxes `[x0, y0, x1, y1, score]` (pixels of the image it was
given, best first) with a score in [0, 1]; its *top* score is compared with its threshold from the spec.
An image "has a person" when at least one detector fires (a logical OR: for a people-free dataset a
miss costs more than a false rejection).

Detectors (names as in `passkit.config.DetectorName`):

- ``mtcnn``: faces, facenet-pytorch's MTCNN (weights inside the package). Score: the O-net face
  probability (MTCNN only reports faces whose probability is >= 0.7, so the score is 0 or >= 0.7).
- ``hog``: whole people, OpenCV's Dalal-Triggs HOG + linear SVM (coefficients inside OpenCV, so it
  needs no download). The image is first resized so its longer side is `HOG_SIDE` (768) px, so a
  person about 85 px tall in a 512 px image still fills the 64x128 window. Score: a logistic of the
  SVM margin `m` of the best window, `1 / (1 + exp(-HOG_SLOPE * (m - HOG_MARGIN0)))`; monotone in
  `m`, 0.5 at `m = HOG_MARGIN0` (0.9). HOG is a weak, texture-sensitive detector; it is in the
  default ensemble only so a user without downloaded weights still catches whole, distant people
  (pywt ascent: margin 1.30, score 0.83), and its margins move by ~0.3 under JPEG re-encoding, so
  score the decoded, resized pixels, not a re-encoded JPEG.
- ``yolox_nano``: people (COCO class 0), YOLOX-nano ONNX on onnxruntime; score = obj * cls_person.
- ``yunet``: faces, YuNet-n through `cv2.FaceDetectorYN`; score = YuNet's face score.
- ``yolo_fastest_body``: people, Yolo-Fastest 1.1 body (Darknet) through `cv2.dnn`; score = obj * p(body)
  (OpenCV zeroes scores under ~0.2, so the score is 0 or >= 0.2).

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

Threads: nothing here changes the process-wide thread settings of torch or OpenCV. ONNX Runtime
sessions get `threads` intra-op threads (default: `torch.get_num_threads()` at construction), so
a worker that sets its torch threads (or OMP_NUM_THREADS before importing torch) before building the
filter gets that many everywhere. One torch thread per worker is best: MTCNN's many small P-net
batches get slower, not faster, with more intra-op threads. Build one `PeopleFilter` per process
(spawned, or after the fork); the detectors hold native thread pools and are not thread-safe, so do not
call one filter from several threads at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from passkit import models
from passkit.config import DetectorSpec, PeopleSpec

MAX_BOXES = 5  # boxes kept per detector per image (best first)
NMS_IOU = 0.45

# HOG: working size and the margin -> score map (see the module docstring; chosen by measurement on
# person_dev and person_dev_coco resized to 512 px; 640 and 1024 px and cluster-support scores
# separated people from textures no better, and 1024 px costs twice as much)
HOG_SIDE = 768
HOG_MARGIN0 = 0.9
HOG_SLOPE = 4.0
HOG_HIT_FLOOR = -0.5  # windows with a lower margin are not reported at all (score < ~0.002)
HOG_WIN_STRIDE = (8, 8)
HOG_PADDING = (16, 16)
HOG_SCALE = 1.05

MTCNN_MIN_SIDE = 40  # MTCNN (min face 20 px) crashes on images under 20 px; smaller ones are upsampled
MTCNN_MAX_SIDE = 2048  # ... but never past this long side (a 1 px wide strip is padded instead)
YUNET_MIN_SIDE = 64  # see YuNetDetector.detect
YUNET_MAX_SIDE = 4096
TILE_OVERLAP = 0.25  # tiles of an n x n grid overlap by this fraction of a tile, so no person is cut in two
TILE_MIN_SIDE = 96  # images whose shorter side is under n * this are not tiled (tiles would be tiny)


class PeopleFilterError(RuntimeError):
    """The people filter cannot be built as specified (e.g. a required detector's weights are missing)."""


class DetectorUnavailable(PeopleFilterError):
    """This environment cannot run a detector (not its weights: its runtime); a detector marked
    `required: false` is then skipped with this reason, like one whose weights are missing."""


def _opencv_api(path: str) -> Any:
    """cv2 attribute `path` (e.g. "dnn.readNetFromDarknet"), or DetectorUnavailable saying why."""
    import cv2

    obj: Any = cv2
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise DetectorUnavailable(
                f"OpenCV {cv2.__version__} has no cv2.{path} (OpenCV 5 removed the Darknet loader and the "
                "HOG people detector): install opencv-python-headless<5, as passkit requires, or take the "
                "detector out of people.detectors"
            )
    return obj


@dataclass(slots=True)
class PeopleResult:
    scores: dict[str, float]  # detector name -> top person/face score in [0, 1] (0.0 when nothing found)
    boxes: dict[str, list[list[float]]] = field(default_factory=dict)  # [[x0, y0, x1, y1, score], ...]
    fired: list[str] = field(default_factory=list)  # detectors whose top score >= their threshold
    review: list[str] = field(default_factory=list)  # detectors whose top score is in [review, threshold)

    @property
    def has_person(self) -> bool:
        return bool(self.fired)

    @property
    def needs_review(self) -> bool:
        """No detector fired but one scored inside its review band: a human decides."""
        return not self.fired and bool(self.review)

    @property
    def verdict(self) -> str:
        """"person" (rejected), "review" (human queue) or "clear" (released)."""
        return "person" if self.fired else ("review" if self.review else "clear")


# ----------------------------------------------------------------------------- helpers


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    if img.mode != "RGB":
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            img = Image.alpha_composite(bg, rgba)
        img = img.convert("RGB")
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float = NMS_IOU, top: int = MAX_BOXES) -> list[int]:
    """Greedy NMS on xyxy boxes; indices of the kept boxes, best first, at most `top`."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    x0, y0, x1, y1 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    area = np.maximum(0, x1 - x0) * np.maximum(0, y1 - y0)
    while order.size and len(keep) < top:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0, np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]))
        h = np.maximum(0, np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]))
        inter = w * h
        union = area[i] + area[rest] - inter
        order = rest[inter <= iou * np.maximum(union, 1e-9)]
    return keep


def _box_list(boxes: np.ndarray, scores: np.ndarray, keep: Sequence[int]) -> list[list[float]]:
    return [[*(round(float(v), 1) for v in boxes[i]), round(float(scores[i]), 4)] for i in keep]


def tile_key(name: str) -> str:
    """The score name of a detector's tile detections when they are thresholded apart."""
    return f"{name}@tiles"


def _merged(bl: list[list[float]]) -> list[list[float]]:
    """Boxes gathered from the whole image and its tiles, after non-maximum suppression."""
    if not bl:
        return []
    arr = np.asarray(bl, dtype=np.float32)
    return _box_list(arr[:, :4], arr[:, 4], _nms(arr[:, :4], arr[:, 4]))


def tile_grid(h: int, w: int, n: int, overlap: float = TILE_OVERLAP) -> list[tuple[int, int, int, int]]:
    """The n x n overlapping tiles (x0, y0, x1, y1) of an h x w image; [] when n < 2 or it is too small."""
    if n < 2 or min(h, w) < n * TILE_MIN_SIDE:
        return []
    th, tw = round(h / (n - (n - 1) * overlap)), round(w / (n - (n - 1) * overlap))
    out = []
    for i in range(n):
        for j in range(n):
            y0, x0 = round(i * (h - th) / (n - 1)), round(j * (w - tw) / (n - 1))
            out.append((x0, y0, x0 + tw, y0 + th))
    return out


def ort_providers(device: str) -> list[str]:
    """ONNX Runtime providers for a device; "cuda" needs onnxruntime-gpu (CUDA first, CPU as fallback);
    "auto" takes CUDA when this onnxruntime has it and the CPU otherwise."""
    if device not in ("cuda", "auto"):
        return ["CPUExecutionProvider"]
    import onnxruntime as ort

    have = ort.get_available_providers()
    if "CUDAExecutionProvider" not in have:
        if device == "auto":
            return ["CPUExecutionProvider"]
        raise PeopleFilterError(
            f"people.device is 'cuda' but onnxruntime {ort.__version__} has no CUDAExecutionProvider "
            f"(available: {', '.join(have)}). Install onnxruntime-gpu in place of onnxruntime "
            "(pip uninstall -y onnxruntime && pip install onnxruntime-gpu), or set people.device: cpu."
        )
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


def _torch_device(device: str) -> str:
    """`device` for torch, or a clear error when "cuda" is asked for and torch cannot use it."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise PeopleFilterError(
            f"people.device is 'cuda' but torch {torch.__version__} sees no CUDA device (built for CUDA: "
            f"{torch.version.cuda or 'no'}); install a CUDA build of torch on a GPU machine, or set people.device: cpu"
        )
    return device


def _cv2_cuda() -> bool:
    """True when this OpenCV build can run DNN layers on CUDA (opencv-python-headless cannot)."""
    import cv2

    try:
        return cv2.cuda.getCudaEnabledDeviceCount() > 0
    except (AttributeError, cv2.error):
        return False


def _ort_session(path: Path, threads: int, device: str = "cpu") -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=so, providers=ort_providers(device))


# ----------------------------------------------------------------------------- detectors


class Detector:
    """One detector with its model loaded once. `detect` takes RGB uint8 arrays (H, W, 3)."""

    name: str = ""
    task: str = ""

    def __init__(self, weights: str, sha256: str | None, version: str | None = None):
        self.weights = weights  # what the manifest records: sha256 or "package==version"
        self.sha256 = sha256
        self.version = version
        self.params: dict[str, Any] = {}  # settings that change scores, recorded in the manifest

    def detect(self, images: list[np.ndarray]) -> list[list[list[float]]]:
        raise NotImplementedError


class MTCNNDetector(Detector):
    name, task = "mtcnn", "face"

    def __init__(self, device: str = "cpu"):
        try:
            import facenet_pytorch
            from facenet_pytorch import MTCNN
        except ImportError as e:  # pragma: no cover - install problem
            raise PeopleFilterError(
                "detector 'mtcnn' needs facenet-pytorch (pip install --no-deps facenet-pytorch==2.6.0)"
            ) from e
        ident = models.identity("mtcnn")
        super().__init__(ident, None, ident.split("==", 1)[1])
        self.package_dir = Path(facenet_pytorch.__file__).parent
        self.device = _torch_device(device)
        self.model = MTCNN(keep_all=True, device=self.device)
        self.model.eval()

    def detect(self, images: list[np.ndarray]) -> list[list[list[float]]]:
        import torch

        out: list[list[list[float]]] = [[] for _ in images]
        prepared: list[tuple[np.ndarray, float]] = []
        for arr in images:
            h, w = arr.shape[:2]
            up = 1.0
            if min(h, w) < MTCNN_MIN_SIDE:
                up = max(1.0, min(MTCNN_MIN_SIDE / min(h, w), MTCNN_MAX_SIDE / max(h, w)))
                size = (max(1, round(w * up)), max(1, round(h * up)))
                arr = np.asarray(Image.fromarray(arr).resize(size, Image.BILINEAR))
                ph, pw = max(0, MTCNN_MIN_SIDE - arr.shape[0]), max(0, MTCNN_MIN_SIDE - arr.shape[1])
                if ph or pw:  # still too thin: pad (bottom/right, so box coordinates are unchanged)
                    arr = np.pad(arr, ((0, ph), (0, pw), (0, 0)), mode="edge")
            prepared.append((np.ascontiguousarray(arr), up))
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (arr, _) in enumerate(prepared):
            groups.setdefault(arr.shape[:2], []).append(i)
        with torch.inference_mode():
            for idx in groups.values():
                batch = np.stack([prepared[i][0] for i in idx])
                boxes, probs = self.model.detect(batch)
                for j, i in enumerate(idx):
                    b, p = boxes[j], probs[j]
                    if b is None or p is None:
                        continue
                    b = np.asarray(b, dtype=np.float32).reshape(-1, 4) / prepared[i][1]
                    p = np.asarray(p, dtype=np.float32).reshape(-1)
                    ok = np.isfinite(p)
                    b, p = b[ok], p[ok]
                    order = np.argsort(-p, kind="stable")[:MAX_BOXES]
                    out[i] = _box_list(b, np.clip(p, 0, 1), order)
        return out


class HOGDetector(Detector):
    name, task = "hog", "person"

    def __init__(
        self,
        side: int = HOG_SIDE,
        margin0: float = HOG_MARGIN0,
        slope: float = HOG_SLOPE,
    ):
        import cv2

        super().__init__(
            f"opencv=={cv2.__version__} builtin HOGDescriptor_getDefaultPeopleDetector", None, cv2.__version__
        )
        self.side, self.margin0, self.slope = side, margin0, slope
        self.params = {
            "side": side,
            "score": f"1/(1+exp(-{slope}*(margin-{margin0})))",
            "win_stride": list(HOG_WIN_STRIDE),
            "scale": HOG_SCALE,
        }
        self.hog = _opencv_api("HOGDescriptor")()  # 64x128 window, 9 bins: the Dalal-Triggs people detector
        self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())

    def score_of(self, margin: float) -> float:
        """SVM margin -> [0, 1]: logistic, 0.5 at `margin0`."""
        z = -self.slope * (margin - self.margin0)
        return 1.0 / (1.0 + math.exp(min(z, 700.0)))

    def margins(self, arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw windows (xyxy in `arr` pixels) and their SVM margins, ungrouped."""
        import cv2

        h, w = arr.shape[:2]
        f = self.side / max(h, w)
        bgr = np.ascontiguousarray(arr[:, :, ::-1])
        if f != 1.0:
            interp = cv2.INTER_LINEAR if f > 1 else cv2.INTER_AREA
            bgr = cv2.resize(bgr, (max(1, round(w * f)), max(1, round(h * f))), interpolation=interp)
        if bgr.shape[0] < 128 or bgr.shape[1] < 64:  # pad so at least one window fits
            ph, pw = max(0, 128 - bgr.shape[0]), max(0, 64 - bgr.shape[1])
            bgr = cv2.copyMakeBorder(bgr, 0, ph, 0, pw, cv2.BORDER_REPLICATE)
        rects, weights = self.hog.detectMultiScale(
            bgr,
            hitThreshold=HOG_HIT_FLOOR,
            winStride=HOG_WIN_STRIDE,
            padding=HOG_PADDING,
            scale=HOG_SCALE,
            groupThreshold=0,
        )
        if len(rects) == 0:
            return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
        r = np.asarray(rects, dtype=np.float32).reshape(-1, 4)
        xyxy = np.stack([r[:, 0], r[:, 1], r[:, 0] + r[:, 2], r[:, 1] + r[:, 3]], axis=1) / f
        xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, w)
        xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, h)
        return xyxy, np.asarray(weights, dtype=np.float32).reshape(-1)

    def detect(self, images: list[np.ndarray]) -> list[list[list[float]]]:
        out = []
        for arr in images:
            boxes, m = self.margins(arr)
            if not len(m):
                out.append([])
                continue
            scores = np.array([self.score_of(float(v)) for v in m], dtype=np.float32)
            out.append(_box_list(boxes, scores, _nms(boxes, scores, 0.3)))
        return out


class YOLOXNanoDetector(Detector):
    name, task = "yolox_nano", "person"
    size = 416
    strides = (8, 16, 32)
    floor = 0.01  # candidates under this are dropped before NMS

    def __init__(self, path: Path, threads: int, device: str = "cpu"):
        super().__init__(models.identity(self.name), models.get(self.name).main.sha256)  # type: ignore[union-attr]
        self.session = _ort_session(path, threads, device)
        self.providers = list(self.session.get_providers())
        self.input_name = self.session.get_inputs()[0].name
        grids, strides = [], []
        for s in self.strides:
            n = self.size // s
            gy, gx = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
            grids.append(np.stack([gx.ravel(), gy.ravel()], axis=1))
            strides.append(np.full((n * n, 1), s))
        self.grid = np.concatenate(grids).astype(np.float32)
        self.stride = np.concatenate(strides).astype(np.float32)

    def preprocess(self, arr: np.ndarray) -> tuple[np.ndarray, float]:
        import cv2

        h, w = arr.shape[:2]
        r = min(self.size / h, self.size / w)
        nw, nh = max(1, int(w * r)), max(1, int(h * r))
        bgr = np.ascontiguousarray(arr[:, :, ::-1])
        resized = cv2.resize(bgr, (nw, nh), interpolation=cv2.INTER_LINEAR)
        canvas = np.full((self.size, self.size, 3), 114, dtype=np.uint8)
        canvas[:nh, :nw] = resized
        return canvas.transpose(2, 0, 1)[None].astype(np.float32), r

    def decode(self, raw: np.ndarray, r: float) -> list[list[float]]:
        pred = raw.reshape(-1, raw.shape[-1])
        score = pred[:, 4] * pred[:, 5]
        keep = (score >= self.floor) & np.isfinite(pred[:, :6]).all(axis=1)
        if not keep.any():
            return []
        p, score = pred[keep], score[keep]
        g, s = self.grid[keep], self.stride[keep]
        cxy = (p[:, 0:2] + g) * s
        wh = np.exp(np.minimum(p[:, 2:4], 20.0)) * s
        boxes = np.concatenate([cxy - wh / 2, cxy + wh / 2], axis=1) / r
        return _box_list(boxes, score, _nms(boxes, score))

    def detect(self, images: list[np.ndarray]) -> list[list[list[float]]]:
        out = []
        for arr in images:
            x, r = self.preprocess(arr)
            (raw,) = self.session.run(None, {self.input_name: x})
            out.append(self.decode(raw, r))
        return out


class YuNetDetector(Detector):
    name, task = "yunet", "face"
    floor = 0.3  # FaceDetectorYN's own score threshold: faces under it are not reported

    def __init__(self, path: Path, device: str = "cpu"):
        import cv2

        super().__init__(models.identity(self.name), models.get(self.name).main.sha256)  # type: ignore[union-attr]
        backend, target = cv2.dnn.DNN_BACKEND_OPENCV, cv2.dnn.DNN_TARGET_CPU
        if device in ("cuda", "auto") and _cv2_cuda():
            backend, target = cv2.dnn.DNN_BACKEND_CUDA, cv2.dnn.DNN_TARGET_CUDA
        self.backend = "opencv-cuda" if backend == cv2.dnn.DNN_BACKEND_CUDA else "opencv-cpu"
        self.det = cv2.FaceDetectorYN.create(str(path), "", (320, 320), self.floor, 0.3, 100, backend, target)

    def detect(self, images: list[np.ndarray]) -> list[list[list[float]]]:
        import cv2

        out = []
        for arr in images:
            h, w = arr.shape[:2]
            bgr = np.ascontiguousarray(arr[:, :, ::-1])
            up = 1.0
            if min(h, w) < YUNET_MIN_SIDE:
                # FaceDetectorYN (OpenCV 4.14) returns garbage (score 1.0, infinite boxes) on inputs
                # with a side <= 32 px: upsample small images; skip strips too thin to hold a face.
                up = min(YUNET_MIN_SIDE / min(h, w), YUNET_MAX_SIDE / max(h, w))
                if min(h, w) * up < YUNET_MIN_SIDE - 0.5:
                    out.append([])
                    continue
                bgr = cv2.resize(bgr, (round(w * up), round(h * up)), interpolation=cv2.INTER_LINEAR)
            self.det.setInputSize((bgr.shape[1], bgr.shape[0]))
            _, faces = self.det.detect(bgr)
            if faces is None or not len(faces):
                out.append([])
                continue
            f = np.asarray(faces, dtype=np.float32).reshape(-1, 15)
            f = f[np.isfinite(f[:, [0, 1, 2, 3, 14]]).all(axis=1)]
            boxes = np.stack([f[:, 0], f[:, 1], f[:, 0] + f[:, 2], f[:, 1] + f[:, 3]], axis=1) / up
            scores = np.clip(f[:, 14], 0, 1)
            order = np.argsort(-scores, kind="stable")[:MAX_BOXES]
            out.append(_box_list(boxes, scores, order))
        return out


class YoloFastestBodyDetector(Detector):
    name, task = "yolo_fastest_body", "person"
    size = 320

    def __init__(self, weights: Path, cfg: Path, device: str = "cpu"):
        import cv2

        super().__init__(models.identity(self.name), models.get(self.name).main.sha256)  # type: ignore[union-attr]
        self.net = _opencv_api("dnn.readNetFromDarknet")(str(cfg), str(weights))
        cuda = device in ("cuda", "auto") and _cv2_cuda()
        self.backend = "opencv-cuda" if cuda else "opencv-cpu"
        self.net.setPreferableBackend(cv2.dnn.DNN_BACKEND_CUDA if cuda else cv2.dnn.DNN_BACKEND_OPENCV)
        self.net.setPreferableTarget(cv2.dnn.DNN_TARGET_CUDA if cuda else cv2.dnn.DNN_TARGET_CPU)
        self.outs = self.net.getUnconnectedOutLayersNames()

    def detect(self, images: list[np.ndarray]) -> list[list[list[float]]]:
        import cv2

        out = []
        for arr in images:
            h, w = arr.shape[:2]
            # the network wants RGB: blobFromImage on an RGB array without swapRB
            blob = cv2.dnn.blobFromImage(arr, 1 / 255.0, (self.size, self.size), swapRB=False, crop=False)
            self.net.setInput(blob)
            pred = np.concatenate([o.reshape(-1, o.shape[-1]) for o in self.net.forward(self.outs)])
            score = pred[:, 5]
            keep = (score > 0) & np.isfinite(pred[:, :6]).all(axis=1)
            if not keep.any():
                out.append([])
                continue
            p, score = pred[keep], score[keep]
            cx, cy, bw, bh = p[:, 0] * w, p[:, 1] * h, p[:, 2] * w, p[:, 3] * h
            boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
            out.append(_box_list(boxes, score, _nms(boxes, score)))
        return out


class TorchvisionDetector(Detector):
    """A torchvision COCO detector (e.g. Faster R-CNN) from a local weights file; score = its person score.

    For users who already have torchvision weights: nothing is downloaded. The file's sha256 is checked
    against the spec's `sha256` when given, and against the hash prefix torchvision publishes in the
    file name of its own release weights (`<arch>_coco-<8 hex>.pth`) when the arch is a known one.
    """

    name, task = "torchvision", "person"
    floor = 0.05  # boxes under this score are dropped (torchvision's own box_score_thresh)

    def __init__(self, arch: str, path: Path, sha256: str | None, device: str = "cpu"):
        import torch
        import torchvision

        if not path.is_file():
            raise FileNotFoundError(
                f"people filter: torchvision weights file {path} does not exist; set the detector's "
                "`weights` to a local .pth file (e.g. one from download.pytorch.org/models)"
            )
        actual = models.sha256_file(path)
        if sha256 and actual != sha256.lower():
            raise models.ChecksumError(path, sha256.lower(), actual)
        known = models.torchvision_release(arch)
        if not sha256 and known is not None and not actual.startswith(known[1]):
            raise models.ChecksumError(path, f"{known[1]}... (torchvision's {arch} release)", actual)
        super().__init__(actual, actual, f"torchvision=={torchvision.__version__}")
        try:
            builder = torchvision.models.get_model_builder(arch)
        except ValueError as e:
            raise PeopleFilterError(f"detector torchvision: unknown arch {arch!r} ({e})") from None
        kw: dict[str, Any] = {"weights": None, "weights_backbone": None, "num_classes": 91}
        try:
            model = builder(**kw, box_score_thresh=self.floor)
        except TypeError:
            model = builder(**kw, score_thresh=self.floor)
        state = torch.load(path, map_location="cpu", weights_only=True)
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise PeopleFilterError(
                f"detector torchvision: {path} is not a state dict of {arch} with 91 COCO classes: {str(e)[:300]}"
            ) from None
        self.device = _torch_device(device)
        self.model = model.eval().to(self.device)
        self.arch = arch
        self.params = {"arch": arch}

    def detect(self, images: list[np.ndarray]) -> list[list[list[float]]]:
        import torch

        out = []
        with torch.inference_mode():
            batch = [torch.tensor(a).permute(2, 0, 1).float().div(255).to(self.device) for a in images]
            for pred in self.model(batch):
                keep = pred["labels"] == 1  # COCO category 1: person
                b = pred["boxes"][keep].float().cpu().numpy()
                sc = pred["scores"][keep].float().cpu().numpy()
                if not len(sc):
                    out.append([])
                    continue
                out.append(_box_list(b, np.clip(sc, 0, 1), _nms(b, sc)))
        return out


def _needs_files_msg(name: str, base: Path, absent: list[str]) -> str:
    return (
        f"people filter: detector {name!r} is required but its weights are not in {base} "
        f"(missing: {', '.join(absent)}). Set {models.ENV_VAR} to a folder that holds them, or run "
        f"`passkit models fetch {name}`; or mark the detector `required: false` in the spec to skip it."
    )


def build_detector(spec: DetectorSpec, device: str, base: Path, threads: int) -> Detector:
    """Load one detector; raises `FileNotFoundError` when its weights are absent (checked by the caller)."""
    name = spec.name
    if name == "mtcnn":
        return MTCNNDetector(device)
    if name == "hog":
        return HOGDetector()
    if name == "torchvision":
        assert spec.weights is not None  # DetectorSpec's validator
        return TorchvisionDetector(spec.arch or models.TORCHVISION_DEFAULT_ARCH, Path(spec.weights).expanduser(),
                                   spec.sha256, device)
    model = models.get(name)
    path = models.find(name, base)  # ChecksumError propagates: a wrong file is never silently skipped
    if path is None:
        raise FileNotFoundError(_needs_files_msg(name, base, models.missing(name, base)))
    if name == "yolox_nano":
        return YOLOXNanoDetector(path, threads, device)
    if name == "yunet":
        return YuNetDetector(path, device)
    if name == "yolo_fastest_body":
        cfg = next(f for f in model.files if f.role == "config")
        return YoloFastestBodyDetector(path, base / cfg.path, device)
    raise PeopleFilterError(f"no detector implementation for {name!r}")  # pragma: no cover


# ----------------------------------------------------------------------------- the filter


class PeopleFilter:
    """The detector ensemble of a `PeopleSpec`, models loaded once. Build one per worker process.

    Rule: an image is rejected when any detector's top score reaches its threshold; otherwise it goes
    to human review when any top score lies in that detector's review band `[review, threshold)`;
    otherwise it is released. Detectors with `tiles: n` also look at an n x n grid of overlapping
    tiles (their boxes mapped back to the image), so people a few percent of the frame tall fill
    more of the network's input. Detectors with `fallback_for` run only when every detector they
    stand in for was skipped for missing weights (MTCNN and HOG for a user without downloads).
    With `concurrent`, each detector scores the batch in its own thread (ONNX Runtime, OpenCV and
    torch release the GIL), so a batch takes about as long as its slowest detector when cores are
    free; with one worker per core (a build's default) sequential scoring is faster (no oversubscription).
    """

    def __init__(self, spec: PeopleSpec, models_dir: Path | None = None, *, threads: int | None = None):
        self.spec = spec
        self.models_dir = Path(models_dir) if models_dir is not None else models.models_dir()
        if threads is None:
            import torch

            threads = torch.get_num_threads()
        self.threads = threads
        self.detectors: list[Detector] = []
        self.thresholds: dict[str, float] = {}
        self.reviews: dict[str, float] = {}
        self.tiles: dict[str, int] = {}
        self.split: set[str] = set()  # detectors whose tile detections are scored apart, as '<name>@tiles'
        self.skipped: list[tuple[str, str]] = []
        self.standby: list[tuple[str, str]] = []  # fallbacks not needed: what they stand in for is active
        seen: set[str] = set()
        for d in spec.detectors:
            if d.name in seen:
                raise PeopleFilterError(f"people filter: detector {d.name!r} is listed twice")
            seen.add(d.name)
        built: dict[str, Detector] = {}
        skipped_names: set[str] = set()
        # first every primary detector, then the fallbacks, which depend on what was skipped
        for d in sorted(spec.detectors, key=lambda x: bool(x.fallback_for)):
            if d.fallback_for:
                active = [n for n in d.fallback_for if n in built]
                if active:
                    self.standby.append((d.name, f"stand-in for {', '.join(d.fallback_for)}; "
                                                 f"not needed while {', '.join(active)} ran"))
                    continue
            try:
                built[d.name] = build_detector(d, spec.device, self.models_dir, threads)
            except DetectorUnavailable as e:
                if d.required:
                    raise
                skipped_names.add(d.name)
                self.skipped.append((d.name, str(e)))
            except FileNotFoundError as e:
                if d.required:
                    raise PeopleFilterError(str(e)) from None
                absent = models.missing(d.name, self.models_dir) if d.name != "torchvision" else [str(d.weights)]
                skipped_names.add(d.name)
                self.skipped.append(
                    (d.name, f"weights not found in {self.models_dir} (missing: {', '.join(absent)})")
                )
        for d in spec.detectors:  # spec order
            if d.name in built:
                self.detectors.append(built[d.name])
                self.thresholds[d.name] = d.threshold
                if d.review is not None:
                    self.reviews[d.name] = d.review
                self.tiles[d.name] = d.tiles
                if d.tiles > 1 and d.tile_threshold is not None:
                    self.split.add(d.name)
                    self.thresholds[tile_key(d.name)] = d.tile_threshold
                    if d.tile_review is not None:
                        self.reviews[tile_key(d.name)] = d.tile_review
        self.skipped.sort(key=lambda x: [d.name for d in spec.detectors].index(x[0]))

    @property
    def names(self) -> list[str]:
        """The score names, in spec order: each detector, and '<name>@tiles' where tiles score apart."""
        out: list[str] = []
        for d in self.detectors:
            out.append(d.name)
            if d.name in self.split:
                out.append(tile_key(d.name))
        return out

    def describe(self) -> list[dict[str, Any]]:
        """The active detectors, in spec order, for the release manifest (skipped ones: `skipped`).

        Deterministic for a given spec, models folder content and package versions, so every worker
        process describes the ensemble identically.
        """
        out: list[dict[str, Any]] = []
        for det in self.detectors:
            m = models.get(det.name)
            entry: dict[str, Any] = {
                "name": det.name,
                "task": det.task,
                "threshold": self.thresholds[det.name],
                "weights": det.weights,
                "sha256": det.sha256,
                "version": det.version,
                "license": m.license,
                "source": m.source,
            }
            if det.name in self.reviews:
                entry["review"] = self.reviews[det.name]
            if self.tiles.get(det.name, 1) > 1:
                entry["tiles"] = self.tiles[det.name]
            if det.name in self.split:
                entry["tile_threshold"] = self.thresholds[tile_key(det.name)]
                if tile_key(det.name) in self.reviews:
                    entry["tile_review"] = self.reviews[tile_key(det.name)]
            if det.params:
                entry["params"] = dict(det.params)
            out.append(entry)
        return out

    def _run(self, det: Detector, arrays: list[np.ndarray]) -> dict[str, list[list[list[float]]]]:
        """One detector on a batch, with its tiles when it has them (boxes in each image's pixels):
        {name: boxes per image}, plus {'<name>@tiles': ...} when its tiles are scored apart."""
        n = self.tiles.get(det.name, 1)
        if n < 2:
            return {det.name: det.detect(arrays)}
        crops: list[np.ndarray] = []
        where: list[tuple[int, int, int, bool]] = []  # image index, x offset, y offset, is a tile
        for i, a in enumerate(arrays):
            crops.append(a)
            where.append((i, 0, 0, False))
            for x0, y0, x1, y1 in tile_grid(a.shape[0], a.shape[1], n):
                crops.append(np.ascontiguousarray(a[y0:y1, x0:x1]))
                where.append((i, x0, y0, True))
        split = det.name in self.split
        found: list[list[list[float]]] = [[] for _ in arrays]
        in_tiles: list[list[list[float]]] = [[] for _ in arrays]
        for (i, dx, dy, tile), boxes in zip(where, det.detect(crops), strict=True):
            (in_tiles if split and tile else found)[i].extend(
                [b[0] + dx, b[1] + dy, b[2] + dx, b[3] + dy, b[4]] for b in boxes)
        out = {det.name: [_merged(bl) for bl in found]}
        if split:
            out[tile_key(det.name)] = [_merged(bl) for bl in in_tiles]
        return out

    def detect(self, images: list[Image.Image]) -> dict[str, list[list[list[float]]]]:
        """Raw boxes per score name per image (every box each detector reports, up to MAX_BOXES)."""
        arrays = [_to_rgb_array(im) for im in images]
        out: dict[str, list[list[list[float]]]] = {}
        if not self.spec.concurrent or len(self.detectors) < 2:
            for det in self.detectors:
                out.update(self._run(det, arrays))
            return out
        with ThreadPoolExecutor(max_workers=len(self.detectors), thread_name_prefix="people") as pool:
            for f in [pool.submit(self._run, det, arrays) for det in self.detectors]:
                out.update(f.result())
            return out

    def combine(self, boxes: dict[str, list[list[float]]]) -> PeopleResult:
        """One image's boxes per detector -> scores, fired, review (the ensemble rule)."""
        scores = {name: (float(b[0][4]) if b else 0.0) for name, b in boxes.items()}
        fired = [name for name in boxes if scores[name] >= self.thresholds[name]]
        review = [
            name for name in boxes
            if name in self.reviews and self.reviews[name] <= scores[name] < self.thresholds[name]
        ]
        return PeopleResult(scores=scores, boxes=boxes, fired=fired, review=review)

    def score(self, images: list[Image.Image]) -> list[PeopleResult]:
        """Score RGB images of any size (the pipeline passes the resized <= 512 px images)."""
        if not images:
            return []
        per_det = self.detect(images)
        return [self.combine({name: per_det[name][i] for name in self.names}) for i in range(len(images))]

"""``retinaface_mnet025``: faces, RetinaFace MobileNet-0.25 ONNX on OpenVINO or ONNX Runtime.

The detector family the PASS paper filtered faces with. The graph's FPN upsampling is fixed at 640 x 640,
so an image is pasted top-left at its own size (BGR minus the mean, padding 0), scaled down only when
it is larger: upscaling passkit's 512 px images to 640 scored a little worse on person_dev_coco
(recall 0.444 against 0.451 at FRR <= 0.10).
Score = the face softmax probability of a prior; boxes are SSD-style offsets from fixed priors
(variance 0.1, 0.2).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from passkit import models
from passkit.filters.people.common import Detector, _box_list, _nms, onnx_model, weights_file

if TYPE_CHECKING:
    from passkit.config import DetectorSpec

MEAN_BGR = np.array([104.0, 117.0, 123.0], dtype=np.float32)
STEPS = (8, 16, 32)
MIN_SIZES = ((16, 32), (64, 128), (256, 512))
VARIANCE = (0.1, 0.2)
NMS_IOU = 0.4  # upstream's


def priors(size: int) -> np.ndarray:
    """(N, 4) prior boxes cx, cy, w, h in input pixels, in the graph's order: per level, row-major
    cells, two sizes per cell."""
    out = []
    for step, sizes in zip(STEPS, MIN_SIZES, strict=True):
        n = -(-size // step)
        gy, gx = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        cx = np.repeat((gx.ravel() + 0.5) * step, len(sizes))
        cy = np.repeat((gy.ravel() + 0.5) * step, len(sizes))
        wh = np.tile(np.asarray(sizes, dtype=np.float64), n * n)
        out.append(np.stack([cx, cy, wh, wh], axis=1))
    return np.concatenate(out).astype(np.float32)


class RetinaFaceDetector(Detector):
    name, task = "retinaface_mnet025", "face"
    size = 640
    floor = 0.02  # candidates under this are dropped before NMS

    def __init__(self, path: Path, threads: int, device: str = "cpu", runtime: str = "auto"):
        super().__init__(models.identity(self.name), models.get(self.name).main.sha256)  # type: ignore[union-attr]
        # OpenVINO: as fast as ONNX Runtime on one thread, 1.3x on two
        self.model = onnx_model(path, threads, device, runtime, None, self.name, prefer="openvino")
        self.runtime, self.providers = self.model.runtime, self.model.providers
        self.priors = priors(self.size)

    @classmethod
    def from_spec(cls, spec: DetectorSpec, device: str, base: Path, threads: int) -> Detector:
        return cls(weights_file(cls.name, base), threads, device, spec.runtime)

    def preprocess(self, arr: np.ndarray) -> tuple[np.ndarray, float]:
        """NCHW float32 input, and the factor r from image pixels to network pixels."""
        import cv2

        h, w = arr.shape[:2]
        r = min(self.size / h, self.size / w, 1.0)
        bgr = np.ascontiguousarray(arr[:, :, ::-1])
        resized = bgr
        if r < 1.0:
            nw, nh = max(1, min(self.size, round(w * r))), max(1, min(self.size, round(h * r)))
            resized = cv2.resize(bgr, (nw, nh), interpolation=cv2.INTER_LINEAR)
        nh, nw = resized.shape[:2]
        canvas = np.zeros((self.size, self.size, 3), dtype=np.float32)
        canvas[:nh, :nw] = resized.astype(np.float32) - MEAN_BGR
        return canvas.transpose(2, 0, 1)[None], r

    def decode(self, loc: np.ndarray, conf: np.ndarray, r: float, hw: tuple[int, int]) -> list[list[float]]:
        """Prior offsets and face probabilities -> face boxes in image pixels (clipped to it), best first."""
        loc, score = loc.reshape(-1, 4), conf.reshape(-1, 2)[:, 1]
        keep = (score >= self.floor) & np.isfinite(loc).all(axis=1)
        if not keep.any():
            return []
        p, loc, score = self.priors[keep], loc[keep], score[keep]
        cxy = p[:, :2] + loc[:, :2] * VARIANCE[0] * p[:, 2:]
        wh = p[:, 2:] * np.exp(np.minimum(loc[:, 2:] * VARIANCE[1], 20.0))
        boxes = np.concatenate([cxy - wh / 2, cxy + wh / 2], axis=1) / r
        h, w = hw
        boxes = np.clip(boxes, 0, [w, h, w, h])
        return _box_list(boxes, score, _nms(boxes, score, iou=NMS_IOU))

    def detect(self, images: list[np.ndarray]) -> list[list[list[float]]]:
        out = []
        for arr in images:
            x, r = self.preprocess(arr)
            loc, conf, _ = self.model.run(x)
            out.append(self.decode(loc, conf, r, arr.shape[:2]))
        return out

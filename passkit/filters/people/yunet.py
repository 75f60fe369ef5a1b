"""``yunet``: faces, YuNet-n through `cv2.FaceDetectorYN`; score = YuNet's face score."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from passkit import models
from passkit.filters.people.common import MAX_BOXES, Detector, _box_list, _cv2_cuda, weights_file

if TYPE_CHECKING:
    from passkit.config import DetectorSpec

YUNET_MIN_SIDE = 64  # see YuNetDetector.detect
YUNET_MAX_SIDE = 4096


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

    @classmethod
    def from_spec(cls, spec: DetectorSpec, device: str, base: Path, threads: int) -> Detector:
        return cls(weights_file(cls.name, base), device)

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

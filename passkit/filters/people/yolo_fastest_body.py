"""``yolo_fastest_body``: people, Yolo-Fastest 1.1 body (Darknet) through `cv2.dnn`; score = obj * p(body)
(OpenCV zeroes scores under ~0.2, so the score is 0 or >= 0.2)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from passkit import models
from passkit.filters.people.common import Detector, _box_list, _cv2_cuda, _nms, _opencv_api, weights_file

if TYPE_CHECKING:
    from passkit.config import DetectorSpec


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

    @classmethod
    def from_spec(cls, spec: DetectorSpec, device: str, base: Path, threads: int) -> Detector:
        path = weights_file(cls.name, base)
        cfg = next(f for f in models.get(cls.name).files if f.role == "config")
        return cls(path, base / cfg.path, device)

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

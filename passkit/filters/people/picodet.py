"""``picodet_s_416``: people (COCO class 0), PP-PicoDet-S 416 ONNX on OpenVINO or ONNX Runtime.

Preprocessing is PaddleDetection's eval pipeline (RGB, plain cubic resize to 416 x 416, ImageNet
mean/std); the graph already applies the class sigmoid, and boxes are decoded from the 4 x 8-bin side
distributions (GFL, reg_max 7) outside it. Score = the person class probability of a point. The graph's
channel shuffles hard-code the 416 grid, so it runs only at 416.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from passkit import models
from passkit.filters.people.common import Detector, _box_list, _nms, onnx_model, weights_file

if TYPE_CHECKING:
    from passkit.config import DetectorSpec

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class PicoDetDetector(Detector):
    name, task = "picodet_s_416", "person"
    size = 416
    strides = (8, 16, 32, 64)
    bins = 8  # reg_max + 1 bins per box side
    floor = 0.01  # candidates under this are dropped before NMS

    def __init__(self, path: Path, threads: int, device: str = "cpu", runtime: str = "auto"):
        super().__init__(models.identity(self.name), models.get(self.name).main.sha256)  # type: ignore[union-attr]
        # OpenVINO ran it 1.5x (one thread) to 2.7x (two) faster than ONNX Runtime, same scores
        self.model = onnx_model(path, threads, device, runtime, None, self.name, prefer="openvino")
        self.runtime, self.providers = self.model.runtime, self.model.providers
        centers, strides = [], []
        for s in self.strides:
            n = -(-self.size // s)  # 52, 26, 13, 7
            gy, gx = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
            centers.append((np.stack([gx.ravel(), gy.ravel()], axis=1) + 0.5) * s)
            strides.append(np.full((n * n, 1), s))
        self.center = np.concatenate(centers).astype(np.float32)
        self.stride = np.concatenate(strides).astype(np.float32)

    @classmethod
    def from_spec(cls, spec: DetectorSpec, device: str, base: Path, threads: int) -> Detector:
        return cls(weights_file(cls.name, base), threads, device, spec.runtime)

    def preprocess(self, arr: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
        """NCHW float32 input, and the (x, y) factors from network pixels back to image pixels."""
        import cv2

        h, w = arr.shape[:2]
        resized = cv2.resize(arr, (self.size, self.size), interpolation=cv2.INTER_CUBIC)
        x = (resized.astype(np.float32) / 255.0 - MEAN) / STD
        return np.ascontiguousarray(x.transpose(2, 0, 1)[None]), (w / self.size, h / self.size)

    def decode(self, outs: list[np.ndarray], scale: tuple[float, float], hw: tuple[int, int]) -> list[list[float]]:
        """Per-level class and box outputs -> person boxes in image pixels (clipped to it), best first."""
        levels = len(self.strides)
        cls = np.concatenate([o.reshape(-1, o.shape[-1]) for o in outs[:levels]])
        reg = np.concatenate([o.reshape(-1, o.shape[-1]) for o in outs[levels:]])
        score = cls[:, 0]
        keep = (score >= self.floor) & np.isfinite(score)
        if not keep.any():
            return []
        score = score[keep]
        dist = _softmax(reg[keep].reshape(-1, 4, self.bins)) @ np.arange(self.bins, dtype=np.float32)
        d = dist * self.stride[keep]
        c = self.center[keep]
        boxes = np.concatenate([c - d[:, :2], c + d[:, 2:]], axis=1) * np.array([*scale, *scale], dtype=np.float32)
        h, w = hw
        boxes = np.clip(boxes, 0, [w, h, w, h])
        return _box_list(boxes, score, _nms(boxes, score))

    def detect(self, images: list[np.ndarray]) -> list[list[list[float]]]:
        out = []
        for arr in images:
            x, scale = self.preprocess(arr)
            out.append(self.decode(self.model.run(x), scale, arr.shape[:2]))
        return out

"""``yolox_nano``: people (COCO class 0), YOLOX-nano ONNX on OpenVINO or ONNX Runtime; score = obj * cls_person.

The graph is fully convolutional and its decode is outside it, so it runs at any square input that is
a multiple of 32 (`input_size`); sizes other than the file's 416 need OpenVINO's reshape.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from passkit import models
from passkit.filters.people.common import Detector, _box_list, _nms, onnx_model, weights_file

if TYPE_CHECKING:
    from passkit.config import DetectorSpec


class YOLOXNanoDetector(Detector):
    name, task = "yolox_nano", "person"
    default_size = 416  # the input the ONNX file declares
    strides = (8, 16, 32)
    floor = 0.01  # candidates under this are dropped before NMS

    def __init__(self, path: Path, threads: int, device: str = "cpu", runtime: str = "auto", size: int | None = None):
        super().__init__(models.identity(self.name), models.get(self.name).main.sha256)  # type: ignore[union-attr]
        self.size = size or self.default_size
        shape = None if self.size == self.default_size else (1, 3, self.size, self.size)
        # at 416 and one thread (a pipeline worker on 2 cores) ONNX Runtime ran it 1.2x faster than OpenVINO
        self.model = onnx_model(path, threads, device, runtime, shape, self.name, prefer="onnxruntime")
        self.runtime, self.providers = self.model.runtime, self.model.providers
        if self.size != self.default_size:
            self.params["input_size"] = self.size
        grids, strides = [], []
        for s in self.strides:
            n = self.size // s
            gy, gx = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
            grids.append(np.stack([gx.ravel(), gy.ravel()], axis=1))
            strides.append(np.full((n * n, 1), s))
        self.grid = np.concatenate(grids).astype(np.float32)
        self.stride = np.concatenate(strides).astype(np.float32)

    @classmethod
    def from_spec(cls, spec: DetectorSpec, device: str, base: Path, threads: int) -> Detector:
        return cls(weights_file(cls.name, base), threads, device, spec.runtime, spec.input_size)

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
            (raw,) = self.model.run(x)
            out.append(self.decode(raw, r))
        return out

"""``mtcnn``: faces, facenet-pytorch's MTCNN (weights inside the package, so nothing to download).

Score: the O-net face probability (MTCNN only reports faces whose probability is >= 0.7, so the score
is 0 or >= 0.7). torch and facenet-pytorch are imported when the detector is built, not before.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from passkit import models
from passkit.filters.people.common import MAX_BOXES, Detector, PeopleFilterError, _box_list, _torch_device

if TYPE_CHECKING:
    from passkit.config import DetectorSpec

MTCNN_MIN_SIDE = 40  # MTCNN (min face 20 px) crashes on images under 20 px; smaller ones are upsampled
MTCNN_MAX_SIDE = 2048  # ... but never past this long side (a 1 px wide strip is padded instead)


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

    @classmethod
    def from_spec(cls, spec: DetectorSpec, device: str, base: Path, threads: int) -> Detector:
        return cls(device)

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

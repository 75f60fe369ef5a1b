"""``hog``: whole people, OpenCV's Dalal-Triggs HOG + linear SVM (coefficients inside OpenCV, so it
needs no download).

The image is first resized so its longer side is `HOG_SIDE` (768) px, so a person about 85 px tall in
a 512 px image still fills the 64x128 window. Score: a logistic of the SVM margin `m` of the best
window, `1 / (1 + exp(-HOG_SLOPE * (m - HOG_MARGIN0)))`; monotone in `m`, 0.5 at `m = HOG_MARGIN0`
(0.9). HOG is a weak, texture-sensitive detector; it is in the default ensemble only so a user without
downloaded weights still catches whole, distant people (pywt ascent: margin 1.30, score 0.83), and its
margins move by ~0.3 under JPEG re-encoding, so score the decoded, resized pixels, not a re-encoded JPEG.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from passkit.filters.people.common import Detector, _box_list, _nms, _opencv_api

if TYPE_CHECKING:
    from passkit.config import DetectorSpec

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

    @classmethod
    def from_spec(cls, spec: DetectorSpec, device: str, base: Path, threads: int) -> Detector:
        return cls()

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

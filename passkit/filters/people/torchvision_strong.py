"""``faster_rcnn_v2`` and ``keypoint_rcnn``: torchvision's large COCO person detectors, for machines
with a GPU, their release weights fetched by `passkit models fetch --set strong`.

Images go to the model in batches of `batch_size` (torchvision resizes each to `min_size` and pads
the batch), on CUDA when the spec's device is cuda (or auto on a GPU machine) and on the CPU
otherwise. torchvision maps boxes back to each image's pixels; the score is the person class's.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from passkit import models, tvweights
from passkit.filters.people.common import (
    Detector,
    PeopleFilterError,
    _box_list,
    _needs_files_msg,
    _nms,
    _torch_device,
)

if TYPE_CHECKING:
    from passkit.config import DetectorSpec


class _TorchvisionRelease(Detector):
    """A torchvision detection model built without weights, then loaded from the hash-checked release file."""

    task = "person"
    num_classes = 91
    person_label = 1  # torchvision's COCO category ids: 1 is person (Keypoint R-CNN: 1 of {0: none, 1: person})
    floor = 0.05  # torchvision's box_score_thresh: boxes under it are never reported
    min_size = 800  # torchvision's default input scale, the one its COCO numbers were measured at
    max_size = 1333
    proposals = 1000  # RPN proposals per image kept for the box head (torchvision's default)
    # detections per image out of torchvision (its default is 100); the filter keeps the best
    # MAX_BOXES after NMS and uses the top score, so 25 changes no score and spares the keypoint head
    detections = 25
    batch_size = 8

    def __init__(self, path: Path, sha256: str, device: str = "cpu", **settings: int):
        """`settings`: min_size, max_size, proposals, detections, batch_size (tests shrink them)."""
        import torch
        import torchvision

        super().__init__(sha256, sha256, f"torchvision=={torchvision.__version__}")
        for k in ("min_size", "max_size", "proposals", "detections", "batch_size"):
            setattr(self, k, int(settings.pop(k, getattr(self, k))))  # fixed per instance from here on
        if settings:
            raise TypeError(f"unknown settings {sorted(settings)}")
        builder = torchvision.models.get_model_builder(models.get(self.name).extra["builder"])
        model = builder(weights=None, weights_backbone=None, num_classes=self.num_classes,
                        box_score_thresh=self.floor, min_size=self.min_size, max_size=self.max_size,
                        rpn_post_nms_top_n_test=self.proposals, box_detections_per_img=self.detections)
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except RuntimeError as e:
            raise PeopleFilterError(f"detector {self.name}: {path} is not its state dict: {str(e)[:300]}") from None
        self.device = _torch_device(device)
        self.model = model.eval().to(self.device)
        self.params = {"min_size": self.min_size, "max_size": self.max_size, "proposals": self.proposals,
                       "detections": self.detections}

    @classmethod
    def from_spec(cls, spec: DetectorSpec, device: str, base: Path, threads: int) -> Detector:
        path, digest = tvweights.check(cls.name, base)
        if path is None:
            raise FileNotFoundError(
                _needs_files_msg(cls.name, base, models.missing(cls.name, base))
                + " (`passkit models fetch --set strong` fetches both strong detectors)"
            )
        return cls(path, digest, device)

    def decode(self, pred: dict[str, Any]) -> list[list[float]]:
        """One image's torchvision prediction -> person boxes [x0, y0, x1, y1, score], best first."""
        keep = pred["labels"] == self.person_label
        b = pred["boxes"][keep].float().cpu().numpy()
        sc = pred["scores"][keep].float().cpu().numpy()
        if not len(sc):
            return []
        return _box_list(b, np.clip(sc, 0, 1), _nms(b, sc))

    def detect(self, images: list[np.ndarray]) -> list[list[list[float]]]:
        import torch

        out: list[list[list[float]]] = []
        with torch.inference_mode():
            for i in range(0, len(images), self.batch_size):
                # uint8 crosses to the device (a quarter of the float bytes), then becomes 0-1 float there
                batch = [torch.tensor(a).to(self.device).permute(2, 0, 1).float().div_(255)
                         for a in images[i:i + self.batch_size]]
                out.extend(self.decode(p) for p in self.model(batch))
        return out


class FasterRCNNV2Detector(_TorchvisionRelease):
    name = "faster_rcnn_v2"


class KeypointRCNNDetector(_TorchvisionRelease):
    """Keypoint R-CNN finds people only (2 classes); its keypoints are computed but not used."""

    name = "keypoint_rcnn"
    num_classes = 2

"""Which class implements each detector name: the one table `build_detector` reads.

A table of "module:Class" strings rather than imported classes, so a detector's module (and the
runtime it pulls in: torch for MTCNN and torchvision, facenet-pytorch) is imported only when a spec
uses that detector. Modules are relative to this package.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from passkit.filters.people.common import Detector, PeopleFilterError

if TYPE_CHECKING:
    from passkit.config import DetectorSpec

# name (as in passkit.config.DetectorName and passkit.models.REGISTRY) -> "module:Class"
DETECTORS: dict[str, str] = {
    "mtcnn": "mtcnn:MTCNNDetector",
    "hog": "hog:HOGDetector",
    "yolox_nano": "yolox_nano:YOLOXNanoDetector",
    "yunet": "yunet:YuNetDetector",
    "yolo_fastest_body": "yolo_fastest_body:YoloFastestBodyDetector",
    "torchvision": "torchvision_coco:TorchvisionDetector",
}


def detector_class(name: str) -> type[Detector]:
    """The class of detector `name`, its module imported on first use."""
    try:
        module, cls = DETECTORS[name].split(":")
    except KeyError:
        raise PeopleFilterError(f"no detector implementation for {name!r}") from None
    return getattr(importlib.import_module(f"{__package__}.{module}"), cls)


def build_detector(spec: DetectorSpec, device: str, base: Path, threads: int) -> Detector:
    """Load one detector; raises `FileNotFoundError` when its weights are absent (checked by the caller)."""
    return detector_class(spec.name).from_spec(spec, device, base, threads)

"""Which class implements each detector name, as `passkit.models.REGISTRY` says.

The registry holds "module:Class" strings rather than imported classes, so a detector's module (and
the runtime it pulls in: torch for MTCNN and torchvision, facenet-pytorch) is imported only when a
spec uses that detector. Modules are relative to this package.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from passkit import models
from passkit.filters.people.common import Detector, PeopleFilterError

if TYPE_CHECKING:
    from passkit.config import DetectorSpec

DETECTORS: dict[str, str] = {name: m.detector for name, m in models.REGISTRY.items()}  # name -> "module:Class"


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

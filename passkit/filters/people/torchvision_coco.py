"""``torchvision``: a torchvision COCO detector from a local weights file the user supplies."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from passkit import models
from passkit.filters.people.common import Detector, PeopleFilterError, _box_list, _nms, _torch_device

if TYPE_CHECKING:
    from passkit.config import DetectorSpec


class TorchvisionDetector(Detector):
    """A torchvision COCO detector (e.g. Faster R-CNN) from a local weights file; score = its person score.

    For users who already have torchvision weights: nothing is downloaded. The file's sha256 is checked
    against the spec's `sha256` when given, and against the hash prefix torchvision publishes in the
    file name of its own release weights (`<arch>_coco-<8 hex>.pth`) when the arch is a known one.
    """

    name, task = "torchvision", "person"
    floor = 0.05  # boxes under this score are dropped (torchvision's own box_score_thresh)

    def __init__(self, arch: str, path: Path, sha256: str | None, device: str = "cpu"):
        import torch
        import torchvision

        if not path.is_file():
            raise FileNotFoundError(
                f"people filter: torchvision weights file {path} does not exist; set the detector's "
                "`weights` to a local .pth file (e.g. one from download.pytorch.org/models)"
            )
        actual = models.sha256_file(path)
        if sha256 and actual != sha256.lower():
            raise models.ChecksumError(path, sha256.lower(), actual)
        known = models.torchvision_release(arch)
        if not sha256 and known is not None and not actual.startswith(known[1]):
            raise models.ChecksumError(path, f"{known[1]}... (torchvision's {arch} release)", actual)
        super().__init__(actual, actual, f"torchvision=={torchvision.__version__}")
        try:
            builder = torchvision.models.get_model_builder(arch)
        except ValueError as e:
            raise PeopleFilterError(f"detector torchvision: unknown arch {arch!r} ({e})") from None
        kw: dict[str, Any] = {"weights": None, "weights_backbone": None, "num_classes": 91}
        try:
            model = builder(**kw, box_score_thresh=self.floor)
        except TypeError:
            model = builder(**kw, score_thresh=self.floor)
        state = torch.load(path, map_location="cpu", weights_only=True)
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise PeopleFilterError(
                f"detector torchvision: {path} is not a state dict of {arch} with 91 COCO classes: {str(e)[:300]}"
            ) from None
        self.device = _torch_device(device)
        self.model = model.eval().to(self.device)
        self.arch = arch
        self.params = {"arch": arch}

    @classmethod
    def from_spec(cls, spec: DetectorSpec, device: str, base: Path, threads: int) -> Detector:
        assert spec.weights is not None  # DetectorSpec's validator
        return cls(spec.arch or models.TORCHVISION_DEFAULT_ARCH, Path(spec.weights).expanduser(),
                   spec.sha256, device)

    def detect(self, images: list[np.ndarray]) -> list[list[list[float]]]:
        import torch

        out = []
        with torch.inference_mode():
            batch = [torch.tensor(a).permute(2, 0, 1).float().div(255).to(self.device) for a in images]
            for pred in self.model(batch):
                keep = pred["labels"] == 1  # COCO category 1: person
                b = pred["boxes"][keep].float().cpu().numpy()
                sc = pred["scores"][keep].float().cpu().numpy()
                if not len(sc):
                    out.append([])
                    continue
                out.append(_box_list(b, np.clip(sc, 0, 1), _nms(b, sc)))
        return out

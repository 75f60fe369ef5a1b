"""The detector ensemble: builds the detectors a `PeopleSpec` names, scores images with each (with
tiles where asked), and applies the rule: rejected when any detector fires, human review when one
scores inside its review band, released otherwise.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from passkit import models
from passkit.config import PeopleSpec
from passkit.filters.people.common import (
    Detector,
    DetectorUnavailable,
    PeopleFilterError,
    _box_list,
    _nms,
    _to_rgb_array,
    tile_grid,
)
from passkit.filters.people.detectors import build_detector


@dataclass(slots=True)
class PeopleResult:
    scores: dict[str, float]  # detector name -> image score in [0, 1] (top box, or noisy-OR of boxes; 0.0: none)
    boxes: dict[str, list[list[float]]] = field(default_factory=dict)  # [[x0, y0, x1, y1, score], ...]
    fired: list[str] = field(default_factory=list)  # detectors whose image score >= their threshold
    review: list[str] = field(default_factory=list)  # detectors whose image score is in [review, threshold)

    @property
    def has_person(self) -> bool:
        return bool(self.fired)

    @property
    def needs_review(self) -> bool:
        """No detector fired but one scored inside its review band: a human decides."""
        return not self.fired and bool(self.review)

    @property
    def verdict(self) -> str:
        """"person" (rejected), "review" (human queue) or "clear" (released)."""
        return "person" if self.fired else ("review" if self.review else "clear")


# ----------------------------------------------------------------------------- tiling


def tile_key(name: str) -> str:
    """The score name of a detector's tile detections when they are thresholded apart."""
    return f"{name}@tiles"


def image_score(boxes: list[list[float]], how: str = "top") -> float:
    """A detector's image score from its boxes (best first). noisy_or treats the boxes as independent
    chances that the image shows a person: three people at 0.15 give 0.39, where the top is 0.15."""
    if not boxes:
        return 0.0
    if how == "noisy_or":
        return float(1.0 - np.prod([1.0 - float(b[4]) for b in boxes]))
    return float(boxes[0][4])


def _merged(bl: list[list[float]]) -> list[list[float]]:
    """Boxes gathered from the whole image and its tiles, after non-maximum suppression."""
    if not bl:
        return []
    arr = np.asarray(bl, dtype=np.float32)
    return _box_list(arr[:, :4], arr[:, 4], _nms(arr[:, :4], arr[:, 4]))


# ----------------------------------------------------------------------------- the filter


class PeopleFilter:
    """The detector ensemble of a `PeopleSpec`, models loaded once. Build one per worker process.

    Rule: an image is rejected when any detector's image score reaches its threshold; otherwise it goes
    to human review when any image score lies in that detector's review band `[review, threshold)`;
    otherwise it is released. A detector's image score is its best box's score, or with `image_score:
    noisy_or` the noisy-OR of its boxes (a crowd of faint detections counts as evidence). Detectors with `tiles: n` also look at an n x n grid of overlapping
    tiles (their boxes mapped back to the image), so people a few percent of the frame tall fill
    more of the network's input. Detectors with `fallback_for` run only when every detector they
    stand in for was skipped for missing weights (MTCNN and HOG for a user without downloads).
    With `concurrent`, each detector scores the batch in its own thread (ONNX Runtime, OpenCV and
    torch release the GIL), so a batch takes about as long as its slowest detector when cores are
    free; with one worker per core (a build's default) sequential scoring is faster (no oversubscription).
    """

    def __init__(self, spec: PeopleSpec, models_dir: Path | None = None, *, threads: int | None = None):
        self.spec = spec
        self.models_dir = Path(models_dir) if models_dir is not None else models.models_dir()
        if threads is None:
            import torch

            threads = torch.get_num_threads()
        self.threads = threads
        self.detectors: list[Detector] = []
        self.thresholds: dict[str, float] = {}
        self.reviews: dict[str, float] = {}
        self.tiles: dict[str, int] = {}
        self.aggregate: dict[str, str] = {}  # score name -> "top" | "noisy_or"
        self.split: set[str] = set()  # detectors whose tile detections are scored apart, as '<name>@tiles'
        self.skipped: list[tuple[str, str]] = []
        self.standby: list[tuple[str, str]] = []  # fallbacks not needed: what they stand in for is active
        seen: set[str] = set()
        for d in spec.detectors:
            if d.name in seen:
                raise PeopleFilterError(f"people filter: detector {d.name!r} is listed twice")
            seen.add(d.name)
        built: dict[str, Detector] = {}
        skipped_names: set[str] = set()
        # first every primary detector, then the fallbacks, which depend on what was skipped
        for d in sorted(spec.detectors, key=lambda x: bool(x.fallback_for)):
            if d.fallback_for:
                active = [n for n in d.fallback_for if n in built]
                if active:
                    self.standby.append((d.name, f"stand-in for {', '.join(d.fallback_for)}; "
                                                 f"not needed while {', '.join(active)} ran"))
                    continue
            try:
                built[d.name] = build_detector(d, spec.device, self.models_dir, threads)
            except DetectorUnavailable as e:
                if d.required:
                    raise
                skipped_names.add(d.name)
                self.skipped.append((d.name, str(e)))
            except FileNotFoundError as e:
                if d.required:
                    raise PeopleFilterError(str(e)) from None
                absent = models.missing(d.name, self.models_dir) if d.name != "torchvision" else [str(d.weights)]
                skipped_names.add(d.name)
                self.skipped.append(
                    (d.name, f"weights not found in {self.models_dir} (missing: {', '.join(absent)})")
                )
        for d in spec.detectors:  # spec order
            if d.name in built:
                self.detectors.append(built[d.name])
                self.thresholds[d.name] = d.threshold
                self.aggregate[d.name] = self.aggregate[tile_key(d.name)] = d.image_score
                if d.review is not None:
                    self.reviews[d.name] = d.review
                self.tiles[d.name] = d.tiles
                if d.tiles > 1 and d.tile_threshold is not None:
                    self.split.add(d.name)
                    self.thresholds[tile_key(d.name)] = d.tile_threshold
                    if d.tile_review is not None:
                        self.reviews[tile_key(d.name)] = d.tile_review
        self.skipped.sort(key=lambda x: [d.name for d in spec.detectors].index(x[0]))

    @property
    def names(self) -> list[str]:
        """The score names, in spec order: each detector, and '<name>@tiles' where tiles score apart."""
        out: list[str] = []
        for d in self.detectors:
            out.append(d.name)
            if d.name in self.split:
                out.append(tile_key(d.name))
        return out

    def describe(self) -> list[dict[str, Any]]:
        """The active detectors, in spec order, for the release manifest (skipped ones: `skipped`).

        Deterministic for a given spec, models folder content and package versions, so every worker
        process describes the ensemble identically.
        """
        out: list[dict[str, Any]] = []
        for det in self.detectors:
            m = models.get(det.name)
            entry: dict[str, Any] = {
                "name": det.name,
                "task": det.task,
                "threshold": self.thresholds[det.name],
                "weights": det.weights,
                "sha256": det.sha256,
                "version": det.version,
                "license": m.license,
                "source": m.source,
            }
            if det.name in self.reviews:
                entry["review"] = self.reviews[det.name]
            if self.aggregate.get(det.name, "top") != "top":
                entry["image_score"] = self.aggregate[det.name]
            if self.tiles.get(det.name, 1) > 1:
                entry["tiles"] = self.tiles[det.name]
            if det.name in self.split:
                entry["tile_threshold"] = self.thresholds[tile_key(det.name)]
                if tile_key(det.name) in self.reviews:
                    entry["tile_review"] = self.reviews[tile_key(det.name)]
            if det.params:
                entry["params"] = dict(det.params)
            out.append(entry)
        return out

    def _run(self, det: Detector, arrays: list[np.ndarray]) -> dict[str, list[list[list[float]]]]:
        """One detector on a batch, with its tiles when it has them (boxes in each image's pixels):
        {name: boxes per image}, plus {'<name>@tiles': ...} when its tiles are scored apart."""
        n = self.tiles.get(det.name, 1)
        if n < 2:
            return {det.name: det.detect(arrays)}
        crops: list[np.ndarray] = []
        where: list[tuple[int, int, int, bool]] = []  # image index, x offset, y offset, is a tile
        for i, a in enumerate(arrays):
            crops.append(a)
            where.append((i, 0, 0, False))
            for x0, y0, x1, y1 in tile_grid(a.shape[0], a.shape[1], n):
                crops.append(np.ascontiguousarray(a[y0:y1, x0:x1]))
                where.append((i, x0, y0, True))
        split = det.name in self.split
        found: list[list[list[float]]] = [[] for _ in arrays]
        in_tiles: list[list[list[float]]] = [[] for _ in arrays]
        for (i, dx, dy, tile), boxes in zip(where, det.detect(crops), strict=True):
            (in_tiles if split and tile else found)[i].extend(
                [b[0] + dx, b[1] + dy, b[2] + dx, b[3] + dy, b[4]] for b in boxes)
        out = {det.name: [_merged(bl) for bl in found]}
        if split:
            out[tile_key(det.name)] = [_merged(bl) for bl in in_tiles]
        return out

    def detect(self, images: list[Image.Image]) -> dict[str, list[list[list[float]]]]:
        """Raw boxes per score name per image (every box each detector reports, up to MAX_BOXES)."""
        arrays = [_to_rgb_array(im) for im in images]
        out: dict[str, list[list[list[float]]]] = {}
        if not self.spec.concurrent or len(self.detectors) < 2:
            for det in self.detectors:
                out.update(self._run(det, arrays))
            return out
        with ThreadPoolExecutor(max_workers=len(self.detectors), thread_name_prefix="people") as pool:
            for f in [pool.submit(self._run, det, arrays) for det in self.detectors]:
                out.update(f.result())
            return out

    def combine(self, boxes: dict[str, list[list[float]]]) -> PeopleResult:
        """One image's boxes per detector -> scores, fired, review (the ensemble rule)."""
        scores = {name: image_score(b, self.aggregate.get(name, "top")) for name, b in boxes.items()}
        fired = [name for name in boxes if scores[name] >= self.thresholds[name]]
        review = [
            name for name in boxes
            if name in self.reviews and self.reviews[name] <= scores[name] < self.thresholds[name]
        ]
        return PeopleResult(scores=scores, boxes=boxes, fired=fired, review=review)

    def score(self, images: list[Image.Image]) -> list[PeopleResult]:
        """Score RGB images of any size (the pipeline passes the resized <= 512 px images)."""
        if not images:
            return []
        per_det = self.detect(images)
        return [self.combine({name: per_det[name][i] for name in self.names}) for i in range(len(images))]

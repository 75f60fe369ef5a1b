"""How well a people ensemble was shown to work: its measured recall, and where it was measured.

A release's manifest records the measurement of the ensemble that filtered it (`lookup`). A
measurement belongs to one exact ensemble: the detectors that ran, their weights (sha256), thresholds,
review bands, image scores, tiling and parameters; change any of them and the numbers no longer
describe the release, so the manifest says "unmeasured" and gives the command that measures it.

Each entry here was produced by `passkit filter eval` (the command is recorded with it); `fitted` is
the spec's own thresholds scored on the whole set, `cv` the threshold choice cross-validated (each
fold scored with thresholds chosen on the others), so it is the figure to expect on new photos.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

# the settings of a detector that change verdicts (describe()'s keys): `weights` is the file's sha256, or
# the package and version that carry the weights (MTCNN, HOG); the rest (licence, source) do not
MATCH_KEYS = ("name", "weights", "threshold", "review", "image_score", "tiles", "tile_threshold", "tile_review",
              "params")

COCO = ("person_dev_coco: 297 COCO train2017 photos (162 with a person, 135 without, 640 px), "
        "scored at image.max_side 512")
EVAL = "passkit filter eval <person_dev_coco> --boxes <YOLO labels from scripts/coco_person_boxes.py> --json"

_YOLOX = "695e750a5d5754bb5a8d5325643b59282191a7e7a564e435a415fd3c578eab14"
_PICODET = "cdab77bdde16e4f76bec734c4e5791801d1739e4c7ec1995e0e110e04300d0c2"
_YUNET = "25a606a145a5b6d7271ae138fbd00eba91dad8b83222ae3f2c7ecd0f4a7b0e31"


@dataclass(frozen=True)
class Measurement:
    label: str
    detectors: tuple[dict[str, Any], ...]  # MATCH_KEYS of each detector that ran, in spec order
    dataset: str
    frr_budget: float  # the false-rejection budget the thresholds were chosen under
    fitted: dict[str, float]  # recall, recall_with_review, frr, review_rate
    cv: dict[str, Any]  # the same, held out (folds, seed), plus what other fold seeds gave
    by_size: dict[str, float]  # held-out recall by tallest person / image height (COCO boxes)
    command: str

    def record(self) -> dict[str, Any]:
        """The manifest's `people_measurement` block."""
        out = asdict(self)
        del out["detectors"]
        return {"status": "measured", **out}


def _det(name: str, weights: str, threshold: float, review: float | None = None,
         image_score: str = "top", **extra: Any) -> dict[str, Any]:
    return {"name": name, "weights": weights, "threshold": threshold, "review": review,
            "image_score": image_score, **extra}


KNOWN: tuple[Measurement, ...] = (
    Measurement(
        label="default ensemble (passkit.config.PeopleSpec, weights installed)",
        detectors=(
            _det("yolox_nano", _YOLOX, 0.5, 0.15, "noisy_or"),
            _det("picodet_s_416", _PICODET, 0.612, 0.55, "noisy_or"),
            _det("yunet", _YUNET, 0.9, 0.8),
        ),
        dataset=COCO,
        frr_budget=0.10,
        fitted={"recall": 0.9259, "recall_with_review": 0.963, "frr": 0.0889, "review_rate": 0.0673},
        cv={"folds": 5, "seed": 0, "recall": 0.9259, "recall_with_review": 0.963, "frr": 0.0889,
            "review_rate": 0.0741,
            "other_seeds": "seeds 1-3: recall 0.926 in each, held-out FRR 0.104, 0.126, 0.096"},
        by_size={"<10%": 0.7179, "10-25%": 0.963, ">=25%": 1.0},
        command=EVAL,
    ),
    Measurement(
        label="high recall (pipelines/people-high-recall.yaml)",
        detectors=(
            _det("yolox_nano", _YOLOX, 0.19, 0.08, "noisy_or"),
            _det("picodet_s_416", _PICODET, 0.53, 0.45, "noisy_or"),
            _det("yunet", _YUNET, 0.85, 0.7),
        ),
        dataset=COCO,
        frr_budget=0.20,
        fitted={"recall": 0.9568, "recall_with_review": 0.9938, "frr": 0.1926, "review_rate": 0.0842},
        cv={"folds": 5, "seed": 0, "recall": 0.963, "recall_with_review": 0.9938, "frr": 0.2074,
            "review_rate": 0.0774},
        by_size={"<10%": 0.8462, "10-25%": 1.0, ">=25%": 1.0},
        command=EVAL.replace("--json", "--spec pipelines/people-high-recall.yaml --frr-budget 0.2 --json"),
    ),
    Measurement(
        label="stand-ins without downloaded weights (the default ensemble's fallbacks: MTCNN + HOG)",
        detectors=(
            _det("mtcnn", "facenet-pytorch==2.6.0", 0.9),
            _det("hog", "opencv==4.14.0 builtin HOGDescriptor_getDefaultPeopleDetector", 0.5,
                 params={"side": 768, "score": "1/(1+exp(-4.0*(margin-0.9)))", "win_stride": [8, 8], "scale": 1.05}),
        ),
        dataset=COCO,
        frr_budget=0.10,
        fitted={"recall": 0.4753, "recall_with_review": 0.4753, "frr": 0.0741, "review_rate": 0.0},
        cv={"folds": 5, "seed": 0, "recall": 0.4938, "recall_with_review": 0.4938, "frr": 0.0889, "review_rate": 0.0},
        by_size={"<10%": 0.0256, "10-25%": 0.3704, ">=25%": 0.7188},
        command="PASSKIT_MODELS=<empty folder> " + EVAL,
    ),
)


def _key(detectors: list[dict[str, Any]] | tuple[dict[str, Any], ...]) -> str:
    """The verdict-changing settings of an ensemble as one comparable string (absent = the default)."""
    rows = []
    for d in detectors:
        r = {k: d.get(k) for k in MATCH_KEYS}
        r["image_score"] = r["image_score"] or "top"
        r["tiles"] = r["tiles"] if r["tiles"] and r["tiles"] > 1 else None
        r["params"] = r["params"] or None
        rows.append(r)
    return json.dumps(rows, sort_keys=True)


def lookup(detectors: list[dict[str, Any]]) -> dict[str, Any]:
    """The manifest's record of how well these detectors (the ensemble's describe()) were measured."""
    if not detectors:
        return {"status": "off", "why": "no people detector ran"}
    key = _key(detectors)
    for m in KNOWN:
        if _key(m.detectors) == key:
            return m.record()
    return {
        "status": "unmeasured",
        "why": "no recorded measurement matches these detectors, weights and thresholds",
        "how": "passkit filter eval <labelled folder> --spec <this pipeline spec> --json (see README, People filter)",
    }

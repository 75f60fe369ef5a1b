"""The review tests' demo build: one per test module (each changes the decision table)."""

from __future__ import annotations

import pytest
import yaml

from tests.helpers import ROOT

EPOCH = "1767225600"

# A demo build whose detectors never fire on the demo's people (thresholds 1.0) but put them in the
# review band: MTCNN and HOG need no downloaded weights, so this runs with or without PASSKIT_MODELS.
REVIEW_PEOPLE = {
    "detectors": [
        {"name": "mtcnn", "threshold": 1.0, "review": 0.7},
        {"name": "hog", "threshold": 1.0, "review": 0.6},
    ]
}


@pytest.fixture(scope="module")
def review_build(tmp_path_factory):
    """A demo build with a review band; returns (base, spec)."""
    from passkit.config import parse_spec

    base = tmp_path_factory.mktemp("rv")
    data = yaml.safe_load((ROOT / "pipelines" / "demo.yaml").read_text())
    data["people"] = REVIEW_PEOPLE
    data["work"]["workers"] = 1
    spec = parse_spec(data)
    from passkit.build import build

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOURCE_DATE_EPOCH", EPOCH)  # pins manifest.created: rebuilds compare byte for byte
        build(spec, base=base)
        yield base, spec

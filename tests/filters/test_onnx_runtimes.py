"""OpenVINO and ONNX Runtime give the same scores for every ONNX detector on real photos, and the
runtime choice falls back cleanly. Skips when openvino (`passkit[openvino]`) or the weights are missing.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from passkit import models
from passkit.config import DetectorSpec, PeopleSpec
from passkit.filters.people import (
    DetectorUnavailable,
    PeopleFilter,
    PeopleFilterError,
    build_detector,
    common,
)
from passkit.filters.people.common import _to_rgb_array, have_openvino
from tests.filters.test_people import MODELS, load512

ONNX_DETECTORS = ["yolox_nano", "picodet_s_416", "retinaface_mnet025"]

need_openvino = pytest.mark.skipif(not have_openvino(), reason="openvino is not installed (pip install 'passkit[openvino]')")


def _have(name: str) -> bool:
    try:
        return models.find(name, MODELS) is not None
    except models.ModelError:
        return False


def build(name: str, runtime: str) -> object:
    return build_detector(DetectorSpec(name=name, threshold=0.5, runtime=runtime), "cpu", MODELS, 1)


@pytest.fixture(scope="module")
def arrays(person_dev_dir: Path) -> list[np.ndarray]:
    with open(person_dev_dir / "labels.csv", newline="") as f:
        return [_to_rgb_array(load512(person_dev_dir / r["file"])) for r in csv.DictReader(f)]


@need_openvino
@pytest.mark.parametrize("name", ONNX_DETECTORS)
def test_openvino_and_onnxruntime_give_the_same_scores(arrays, name):
    if not _have(name):
        pytest.skip(f"detector weights ({name}) not found in {MODELS}; set {models.ENV_VAR}=/path/to/models")
    ort, ov = build(name, "onnxruntime"), build(name, "openvino")
    assert (ort.runtime, ov.runtime) == ("onnxruntime", "openvino")
    a, b = ort.detect(arrays), ov.detect(arrays)
    assert sum(bool(x) for x in a) >= 5  # the comparison covers real detections
    for boxes_a, boxes_b in zip(a, b, strict=True):
        top_a, top_b = (boxes_a[0][4] if boxes_a else 0.0), (boxes_b[0][4] if boxes_b else 0.0)
        assert abs(top_a - top_b) <= 1e-4, (name, top_a, top_b)
        # raw scores agree to 1e-4; the box lists are rounded to 4 places and 0.1 px
        if boxes_a and boxes_b and top_a > 0.3:
            assert np.allclose(boxes_a[0][:4], boxes_b[0][:4], atol=0.5), (boxes_a[0], boxes_b[0])


@need_openvino
def test_raw_outputs_agree(arrays):
    """Below the rounding of box lists: every raw output of every graph within 1e-4."""
    missing = [name for name in ONNX_DETECTORS if not _have(name)]
    if missing:
        pytest.skip(f"detector weights ({', '.join(missing)}) not found in {MODELS}; set {models.ENV_VAR}=/path/to/models")
    for name in ONNX_DETECTORS:
        ort, ov = build(name, "onnxruntime"), build(name, "openvino")
        x = ort.preprocess(arrays[0])[0]
        for o1, o2 in zip(ort.model.run(x), ov.model.run(x), strict=True):
            assert o1.shape == o2.shape and float(np.abs(o1 - o2).max()) <= 1e-4, name


@pytest.mark.skipif(not _have("yolox_nano"), reason=f"detector weights (yolox_nano) not found in {MODELS}; "
                    f"set {models.ENV_VAR}=/path/to/models")
def test_auto_runtime_takes_the_faster_and_falls_back(monkeypatch):
    """auto: each detector's measured faster runtime (yolox_nano at 416: ONNX Runtime; PicoDet: OpenVINO),
    OpenVINO for a reshaped input, ONNX Runtime when OpenVINO is missing."""
    assert build("yolox_nano", "auto").runtime == "onnxruntime"
    if _have("picodet_s_416"):
        assert build("picodet_s_416", "auto").runtime == ("openvino" if have_openvino() else "onnxruntime")
    monkeypatch.setattr(common, "have_openvino", lambda: False)
    if _have("picodet_s_416"):
        assert build("picodet_s_416", "auto").runtime == "onnxruntime"
    with pytest.raises(DetectorUnavailable, match="onnxruntime cannot run input"):
        build_detector(DetectorSpec(name="yolox_nano", threshold=0.5, input_size=512), "cpu", MODELS, 1)
    with pytest.raises(DetectorUnavailable, match=r"pip install 'passkit\[openvino\]'"):
        build("yolox_nano", "openvino")
    # an optional detector whose runtime is missing is skipped with that reason, not an error
    spec = PeopleSpec(detectors=[DetectorSpec(name="yolox_nano", threshold=0.5, runtime="openvino", required=False)])
    pf = PeopleFilter(spec, MODELS, threads=1)
    assert pf.names == [] and "openvino is not installed" in dict(pf.skipped)["yolox_nano"]


def test_openvino_is_cpu_only(tmp_path):
    with pytest.raises(PeopleFilterError, match="runs on the CPU"):
        common.onnx_model(tmp_path / "x.onnx", 1, "cuda", "openvino", None, "yolox_nano")

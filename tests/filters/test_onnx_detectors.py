"""PP-PicoDet-S 416 and RetinaFace MobileNet-0.25: decoding against the contract in the models folder's
SOURCES.md (hand-computed cases on synthetic outputs) and scores on real person_dev photos, resized the
way the pipeline resizes them; YOLOX-nano at another input size. Weights come from `PASSKIT_MODELS`;
without them these tests skip and say so.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from passkit import models
from passkit.config import DetectorSpec
from passkit.filters.people import DetectorUnavailable, build_detector
from passkit.filters.people.common import _to_rgb_array, have_openvino
from passkit.filters.people.picodet import PicoDetDetector
from passkit.filters.people.retinaface import RetinaFaceDetector, priors
from tests.filters.test_people import MODELS, load512

NEW = ["picodet_s_416", "retinaface_mnet025"]


def _have(*names: str) -> bool:
    try:
        return all(models.find(n, MODELS) is not None for n in names)
    except models.ModelError:
        return False


def need(*names: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        not _have(*names),
        reason=f"detector weights ({', '.join(names)}) not found in {MODELS}; set {models.ENV_VAR}=/path/to/models "
        "or run `passkit models fetch`",
    )


def build(name: str, runtime: str = "auto", **kw) -> object:
    return build_detector(DetectorSpec(name=name, threshold=0.5, runtime=runtime, **kw), "cpu", MODELS, 1)


@pytest.fixture(scope="module")
def photos(person_dev_dir: Path) -> dict[str, tuple[np.ndarray, int]]:
    """person_dev photo name -> (RGB array at the pipeline's 512 px, has_person)."""
    with open(person_dev_dir / "labels.csv", newline="") as f:
        return {
            Path(r["file"]).name: (_to_rgb_array(load512(person_dev_dir / r["file"])), int(r["has_person"]))
            for r in csv.DictReader(f)
        }


def _iou(a: list[float], b: list[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union


# ----------------------------------------------------------------------------- registry


def test_registry_pins_the_new_weights_as_sources_md_gives_them():
    pico, retina = models.get("picodet_s_416"), models.get("retinaface_mnet025")
    assert pico.task == "person" and retina.task == "face"
    assert pico.main.sha256 == "cdab77bdde16e4f76bec734c4e5791801d1739e4c7ec1995e0e110e04300d0c2"
    assert pico.main.size == 4_040_573 and "Apache-2.0" in pico.license and "not byte-verified" in pico.license
    assert "hpc203/picodet-onnxruntime @ dfe4d6cd0a18cd4126ee381e81df8a0b1e6ad97b" in pico.source
    assert retina.main.sha256 == "e0e19bad8494b3f7a7edb39a90194ff055923e13a3453569a454386f857fe538"
    assert retina.main.size == 1_729_306 and retina.license.startswith("MIT")
    assert "kgzhwang/Pytorch_Retinaface @ 6e724185520256cfa136feb4910203b1f55c5274" in retina.source


@need(*NEW)
def test_new_weights_verify_in_the_models_folder():
    for name in NEW:
        assert set(models.verify(name, MODELS).values()) == {"ok"}, models.verify(name, MODELS)


# ----------------------------------------------------------------------------- decoding, hand-checked


def _pico_outputs(point: int, cls: float, bins: list[int]) -> list[np.ndarray]:
    """Synthetic PicoDet outputs: one point with person probability `cls` and each box side's
    distribution peaked on one bin; every other point scores 0."""
    sizes = [2704, 676, 169, 49]
    cls_out = [np.zeros((1, n, 80), np.float32) for n in sizes]
    reg_out = [np.zeros((1, n, 32), np.float32) for n in sizes]
    cls_out[0][0, point, 0] = cls
    for side, b in enumerate(bins):
        reg_out[0][0, point, side * 8 + b] = 60.0  # softmax ~ one-hot on bin b
    return cls_out + reg_out


def test_picodet_decode_matches_the_contract():
    det = PicoDetDetector.__new__(PicoDetDetector)  # decode needs only the grid, not the weights
    det.center, det.stride = _pico_grid()
    # stride-8 cell (gx 3, gy 2): center (28, 20); sides l, t, r, b = bins 2, 1, 3, 0 -> 16, 8, 24, 0 px
    outs = _pico_outputs(2 * 52 + 3, 0.9, [2, 1, 3, 0])
    # a 832 x 416 image: x scale 2, y scale 1
    (box,) = det.decode(outs, (832 / 416, 416 / 416), (416, 832))
    assert box == pytest.approx([24.0, 12.0, 104.0, 20.0, 0.9], abs=0.05)
    # uniform bins: each side is the mean bin 3.5 strides; clipped to the image at the edge
    outs = _pico_outputs(0, 0.5, [0, 0, 0, 0])
    for o in outs[4:]:
        o[:] = 0.0
    (box,) = det.decode(outs, (1.0, 1.0), (416, 416))
    assert box == pytest.approx([0.0, 0.0, 4 + 28, 4 + 28, 0.5], abs=0.05)


def _pico_grid() -> tuple[np.ndarray, np.ndarray]:
    centers, strides = [], []
    for s in (8, 16, 32, 64):
        n = math.ceil(416 / s)
        gy, gx = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        centers.append((np.stack([gx.ravel(), gy.ravel()], axis=1) + 0.5) * s)
        strides.append(np.full((n * n, 1), s))
    return np.concatenate(centers).astype(np.float32), np.concatenate(strides).astype(np.float32)


def test_retinaface_priors_and_decode_match_the_contract():
    p = priors(640)
    assert p.shape == (16800, 4)
    # level 8, cell (gx 5, gy 4), both sizes; level 16 starts at 80 * 80 * 2
    i = (4 * 80 + 5) * 2
    assert p[i].tolist() == [44.0, 36.0, 16.0, 16.0] and p[i + 1].tolist() == [44.0, 36.0, 32.0, 32.0]
    assert p[12800].tolist() == [8.0, 8.0, 64.0, 64.0] and p[16000 + 1].tolist() == [16.0, 16.0, 512.0, 512.0]
    det = RetinaFaceDetector.__new__(RetinaFaceDetector)
    det.priors = p
    loc = np.zeros((1, 16800, 4), np.float32)
    conf = np.tile(np.array([1.0, 0.0], np.float32), (1, 16800, 1))
    # cx = 44 + 1 * 0.1 * 16, cy = 36 - 0.1 * 16, w = 16 * exp(ln 2), h = 16
    loc[0, i] = [1.0, -1.0, math.log(2) / 0.2, 0.0]
    conf[0, i] = [0.1, 0.9]
    (box,) = det.decode(loc, conf, 1.0, (512, 512))
    assert box == pytest.approx([29.6, 26.4, 61.6, 42.4, 0.9], abs=0.05)
    (box,) = det.decode(loc, conf, 0.5, (2000, 2000))  # an image scaled by 0.5 into the input
    assert box == pytest.approx([59.2, 52.8, 123.2, 84.8, 0.9], abs=0.1)


# ----------------------------------------------------------------------------- real photos


@need(*NEW, "yolox_nano", "yunet")
@pytest.mark.parametrize("name", NEW)
def test_new_detectors_on_person_dev(photos, name):
    """A photo with a person (a face, for RetinaFace) scores high, the no-person photos the demo serves
    score low, and every box lies inside its image."""
    det = build(name)
    names = list(photos)
    found = dict(zip(names, det.detect([photos[n][0] for n in names]), strict=True))
    top = {n: (b[0][4] if b else 0.0) for n, b in found.items()}
    for n in ("skimage_astronaut.png", "matplotlib_grace_hopper.jpg"):
        assert top[n] >= 0.9, (n, top[n])
    for n in ("skimage_chelsea.png", "skimage_coffee.png", "skimage_brick.png", "sklearn_flower.jpg",
              "skimage_hubble_deep_field.jpg", "skimage_rocket.jpg"):
        assert photos[n][1] == 0 and top[n] < 0.35, (n, top[n])
    for n, boxes in found.items():
        h, w = photos[n][0].shape[:2]
        for x0, y0, x1, y1, s in boxes:
            assert 0 <= x0 <= x1 <= w and 0 <= y0 <= y1 <= h and 0 <= s <= 1, (n, [x0, y0, x1, y1, s])


@need(*NEW, "yolox_nano", "yunet")
def test_new_detectors_find_what_the_existing_ones_find(photos):
    """Decoding on a real photo agrees with independently decoded detectors: PicoDet's astronaut is
    YOLOX-nano's, RetinaFace's face is YuNet's."""
    arr = photos["skimage_astronaut.png"][0]
    (pico,), (yolox,) = build("picodet_s_416").detect([arr]), build("yolox_nano").detect([arr])
    assert _iou(pico[0], yolox[0]) > 0.7, (pico[0], yolox[0])
    (retina,), (yunet,) = build("retinaface_mnet025").detect([arr]), build("yunet").detect([arr])
    assert _iou(retina[0], yunet[0]) > 0.5, (retina[0], yunet[0])


# ----------------------------------------------------------------------------- input size


def test_input_size_is_a_yolox_setting_only():
    assert DetectorSpec(name="yolox_nano", threshold=0.5, input_size=512).input_size == 512
    with pytest.raises(ValueError, match="input_size is a setting of yolox_nano only"):
        DetectorSpec(name="picodet_s_416", threshold=0.5, input_size=512)
    with pytest.raises(ValueError, match="multiple of 32"):
        DetectorSpec(name="yolox_nano", threshold=0.5, input_size=500)
    # unset settings stay out of the canonical spec, so older specs keep their hash
    dumped = DetectorSpec(name="yolox_nano", threshold=0.5).model_dump(mode="json")
    assert "runtime" not in dumped and "input_size" not in dumped


@need("yolox_nano")
def test_onnxruntime_cannot_run_yolox_at_another_size_and_says_so():
    with pytest.raises(DetectorUnavailable, match=r"onnxruntime cannot run input \[1, 3, 512, 512\].*openvino"):
        build("yolox_nano", "onnxruntime", input_size=512)


@need("yolox_nano")
@pytest.mark.skipif(not have_openvino(), reason="openvino is not installed (pip install 'passkit[openvino]')")
def test_yolox_at_512_on_openvino(photos):
    det = build("yolox_nano", input_size=512)
    assert det.runtime == "openvino" and det.params == {"input_size": 512} and det.grid.shape == (5376, 2)
    arr = photos["skimage_astronaut.png"][0]
    (boxes,) = det.detect([arr])
    assert boxes[0][4] > 0.8
    h, w = arr.shape[:2]
    assert all(-1 <= b[0] <= b[2] <= w + 1 and -1 <= b[1] <= b[3] <= h + 1 for b in boxes)
    (at416,) = build("yolox_nano").detect([arr])
    assert _iou(boxes[0], at416[0]) > 0.8

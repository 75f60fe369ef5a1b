"""The strong torchvision detectors (faster_rcnn_v2, keypoint_rcnn) without their weights: random-init
state dicts of the same architectures stand in for the release files, and torch.hub's download is
replaced, so the fetch, check, load, batch and decode path runs with no network and no GPU.

Nothing here says how well the real weights find people: random weights score what they are built to.
"""

from __future__ import annotations

import dataclasses
import hashlib
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from passkit import models, tvweights
from passkit.cli import main
from passkit.config import DetectorSpec, PeopleSpec
from passkit.filters.people import PeopleFilter, PeopleFilterError
from passkit.filters.people.torchvision_strong import FasterRCNNV2Detector, KeypointRCNNDetector

STRONG = models.SETS["strong"]
PERSON_LOGIT = 8.0  # every proposal becomes a person: softmax gives e^8 / (e^8 + other classes)
EXPECTED = {"faster_rcnn_v2": np.exp(8) / (np.exp(8) + 90), "keypoint_rcnn": np.exp(8) / (np.exp(8) + 1)}
SMALL = {"min_size": 96, "max_size": 160, "proposals": 20, "detections": 3}  # seconds, not minutes, on a CPU


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core box more threads made these forwards 5-10x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _random_state(name: str) -> dict[str, torch.Tensor]:
    """A random-init state dict of the entry's architecture whose box classifier says 'person'."""
    import torchvision

    torch.manual_seed(0)
    nc = 2 if name == "keypoint_rcnn" else 91
    m = torchvision.models.get_model(models.get(name).extra["builder"], weights=None, weights_backbone=None,
                                     num_classes=nc)
    cls = m.roi_heads.box_predictor.cls_score
    with torch.no_grad():
        cls.weight.zero_()
        cls.bias.zero_()
        cls.bias[1] = PERSON_LOGIT
    return m.state_dict()


def _pin_to(mp: pytest.MonkeyPatch, name: str, data: bytes) -> None:
    """Point the registry's hash prefix at these bytes (the real prefix belongs to bytes we cannot get)."""
    m = models.get(name)
    extra = {**m.extra, "sha256_prefix": hashlib.sha256(data).hexdigest()[:8]}
    mp.setitem(models.REGISTRY, name, dataclasses.replace(m, extra=extra))


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, bytes]:
    """name -> bytes of a saved random-init state dict, laid out like the release file."""
    d = tmp_path_factory.mktemp("tvw")
    out = {}
    for name in STRONG:
        p = d / f"{name}.pth"
        torch.save(_random_state(name), p)
        out[name] = p.read_bytes()
    return out


@pytest.fixture(scope="module")
def models_folder(weights, tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("models")
    for name, data in weights.items():
        dest = base / models.get(name).extra["file"]
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
    return base


@pytest.fixture
def pinned(weights, monkeypatch) -> None:
    for name, data in weights.items():
        _pin_to(monkeypatch, name, data)


@pytest.fixture(scope="module")
def strong_filter(models_folder, weights) -> PeopleFilter:
    with pytest.MonkeyPatch.context() as mp:
        for name, data in weights.items():
            _pin_to(mp, name, data)
        for cls in (FasterRCNNV2Detector, KeypointRCNNDetector):
            for k, v in {**SMALL, "batch_size": 2}.items():
                mp.setattr(cls, k, v)
        spec = PeopleSpec(device="cpu", detectors=[DetectorSpec(name=n, threshold=0.5) for n in STRONG])
        return PeopleFilter(spec, models_folder, threads=1)


# ----------------------------------------------------------------------------- registry


def test_registry_entries_are_torchvisions_own_release():
    """Each entry names a torchvision Weights member that still serves the pinned URL, whose file name
    carries the recorded hash prefix, and whose classes put 'person' at label 1."""
    import torchvision

    for name in STRONG:
        m = models.get(name)
        e = m.extra
        w = tvweights.weights_enum(name)
        assert w.url == e["url"] and e["url"].endswith(f"-{e['sha256_prefix']}.pth") and len(e["sha256_prefix"]) == 8
        assert w in list(torchvision.models.get_model_weights(e["builder"]))
        assert w.meta["categories"][1] == "person"
        assert m.task == "person" and "BSD-3-Clause" in m.license and e["url"] in m.source
        assert e["file"] == "torchvision/" + e["url"].rsplit("/", 1)[1]


# ----------------------------------------------------------------------------- fetch (download replaced)


@pytest.fixture
def hub(monkeypatch, weights):
    """torch.hub's download replaced: writes the random-init bytes of the file asked for, records the call."""
    import torch.hub

    calls: list[tuple[str, str, str | None]] = []
    by_file = {Path(models.get(n).extra["file"]).name: data for n, data in weights.items()}

    def fake(url: str, dst: str, hash_prefix: str | None = None, progress: bool = True) -> None:
        calls.append((url, dst, hash_prefix))
        Path(dst).write_bytes(by_file[url.rsplit("/", 1)[1]])

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake)
    return calls


def test_fetch_goes_through_torchvisions_weights_api_and_is_idempotent(hub, pinned, tmp_path):
    res = models.fetch("faster_rcnn_v2", tmp_path)
    e = models.get("faster_rcnn_v2").extra
    assert res == {e["file"]: "fetched"}
    # torchvision asked torch.hub for its own URL and passed the hash prefix from the file name
    assert hub == [(e["url"], str(tmp_path / e["file"]), "dd69338a")]
    assert models.verify("faster_rcnn_v2", tmp_path) == {e["file"]: "ok"}
    assert models.fetch("faster_rcnn_v2", tmp_path) == {e["file"]: "present"} and len(hub) == 1
    assert models.missing("faster_rcnn_v2", tmp_path) == []


def test_fetch_refuses_bytes_without_the_pinned_prefix(hub, tmp_path):
    with pytest.raises(models.FetchError, match="is not the pinned dd69338a"):
        models.fetch("faster_rcnn_v2", tmp_path)  # the real prefix: random bytes cannot match it
    assert not list(tmp_path.rglob("*.pth"))


def test_fetch_replaces_a_corrupt_file_and_uses_a_mirror(hub, pinned, tmp_path):
    e = models.get("keypoint_rcnn").extra
    bad = tmp_path / e["file"]
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"truncated")
    assert models.verify("keypoint_rcnn", tmp_path)[e["file"]].startswith("sha256 mismatch")
    assert models.fetch("keypoint_rcnn", tmp_path, mirror="http://mirror.internal/m/") == {e["file"]: "fetched"}
    assert hub == [(f"http://mirror.internal/m/{e['file']}", str(bad), e["sha256_prefix"])]
    assert models.verify("keypoint_rcnn", tmp_path) == {e["file"]: "ok"}


def test_fetch_without_network_says_so(monkeypatch, tmp_path):
    import torch.hub

    def offline(*a, **k):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(models.FetchError) as ei:
        models.fetch("keypoint_rcnn", tmp_path)
    assert "no internet" in str(ei.value) and models.ENV_VAR in str(ei.value)
    assert not list(tmp_path.rglob("*.pth"))


def test_cli_fetch_set_strong(hub, pinned, tmp_path, monkeypatch, capsys):
    assert main(["models", "verify", "--set", "strong", "--dir", str(tmp_path)]) == 1  # asked for, missing
    assert main(["models", "fetch", "--set", "strong", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in STRONG:
        assert f"fetched: {name} {models.get(name).extra['file']}" in out
    assert main(["models", "verify", "--set", "strong", "--dir", str(tmp_path)]) == 0
    assert main(["models", "fetch", "--set", "nope", "--dir", str(tmp_path)]) == 2
    asked: list[str] = []
    monkeypatch.setattr(models, "fetch", lambda n, *a, **k: asked.append(n) or {})
    assert main(["models", "fetch", "--dir", str(tmp_path)]) == 0
    assert asked and not set(asked) & set(STRONG)  # a plain fetch leaves the large set out


# ----------------------------------------------------------------------------- detectors (random weights)


def test_detectors_load_batch_and_decode_on_the_cpu(strong_filter, weights):
    """Three images of different sizes in batches of two: every proposal is a person by construction,
    so each image gets person boxes inside its own pixels with the constructed score."""
    sizes = [(160, 120), (100, 200), (64, 64)]
    rng = np.random.default_rng(0)
    ims = [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for w, h in sizes]
    rs = strong_filter.score(ims)
    assert len(rs) == 3
    for r, (w, h) in zip(rs, sizes, strict=True):
        assert r.verdict == "person" and set(r.scores) == set(STRONG)
        for name in STRONG:
            boxes = r.boxes[name]
            assert 1 <= len(boxes) <= SMALL["detections"]
            assert r.scores[name] == pytest.approx(EXPECTED[name], abs=1e-3)
            for x0, y0, x1, y1, s in boxes:
                assert 0 <= x0 <= x1 <= w and 0 <= y0 <= y1 <= h and 0 <= s <= 1
    for det in strong_filter.detectors:
        assert det.batch_size == 2 and next(det.model.parameters()).device.type == "cpu"
    d = {e["name"]: e for e in strong_filter.describe()}
    for name in STRONG:
        assert d[name]["sha256"] == hashlib.sha256(weights[name]).hexdigest() == d[name]["weights"]
        assert d[name]["params"]["min_size"] == SMALL["min_size"] and "torchvision==" in d[name]["version"]


def test_decode_keeps_the_person_label_only():
    det = object.__new__(FasterRCNNV2Detector)  # decode needs no model
    pred = {
        "boxes": torch.tensor([[0, 0, 10, 10], [5, 5, 50, 80], [100, 0, 120, 30], [6, 5, 50, 80]], dtype=torch.float),
        "labels": torch.tensor([3, 1, 1, 1]),  # a car, then people (the last overlaps the first person)
        "scores": torch.tensor([0.99, 0.8, 0.6, 0.7]),
    }
    assert det.decode(pred) == [[5.0, 5.0, 50.0, 80.0, 0.8], [100.0, 0.0, 120.0, 30.0, 0.6]]
    assert det.decode({k: v[:1] for k, v in pred.items()}) == []


def test_device_placement_and_missing_weights(models_folder, pinned, tmp_path, monkeypatch):
    for k, v in SMALL.items():
        monkeypatch.setattr(FasterRCNNV2Detector, k, v)
    one = [DetectorSpec(name="faster_rcnn_v2", threshold=0.5)]
    if not torch.cuda.is_available():
        auto = PeopleFilter(PeopleSpec(device="auto", detectors=one), models_folder, threads=1)
        assert auto.detectors[0].device == "cpu"  # the CPU fallback
        with pytest.raises(PeopleFilterError, match="sees no CUDA device"):
            PeopleFilter(PeopleSpec(device="cuda", detectors=one), models_folder, threads=1)
    with pytest.raises(PeopleFilterError, match="fetch --set strong"):
        PeopleFilter(PeopleSpec(detectors=one), tmp_path)
    opt = PeopleFilter(PeopleSpec(detectors=[one[0].model_copy(update={"required": False})]), tmp_path)
    assert not opt.detectors and opt.skipped[0][0] == "faster_rcnn_v2" and "torchvision/" in opt.skipped[0][1]


def test_wrong_bytes_are_an_error_not_a_skip(tmp_path):
    e = models.get("keypoint_rcnn").extra
    (tmp_path / e["file"]).parent.mkdir(parents=True)
    (tmp_path / e["file"]).write_bytes(b"not the release")
    spec = PeopleSpec(detectors=[DetectorSpec(name="keypoint_rcnn", threshold=0.5, required=False)])
    with pytest.raises(models.ChecksumError, match="torchvision's published prefix"):
        PeopleFilter(spec, tmp_path)

"""`passkit filter eval`: metrics, sweep, curve, on hand-made items, person_dev and person_dev_coco."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from passkit.cli import main
from passkit.filters.eval import EvalError, Item, metrics, read_labels, sweep
from tests.helpers import ROOT


def test_metrics_count_reject_review_and_clear():
    items = [
        Item("a", True, {"x": 0.9}), Item("b", True, {"x": 0.4}), Item("c", True, {"x": 0.1}),
        Item("d", False, {"x": 0.8}), Item("e", False, {"x": 0.3}), Item("f", False, {"x": 0.0}),
        Item("g", False, {}, "error", "decode_error: bad"),
    ]  # fmt: skip
    m = metrics(items, {"x": 0.5}, {"x": 0.3})
    assert (m.tp, m.fn, m.fp, m.tn, m.review) == (1, 2, 1, 2, 2)
    assert m.recall == pytest.approx(1 / 3, abs=1e-4) and m.recall_with_review == pytest.approx(2 / 3, abs=1e-4)
    assert m.frr == pytest.approx(1 / 3, abs=1e-4) and m.precision == 0.5 and m.review_rate == pytest.approx(2 / 6, abs=1e-4)
    no_band = metrics(items, {"x": 0.5}, {})
    assert no_band.review == 0 and no_band.recall_with_review == no_band.recall
    rows = sweep(items, {"x": 0.5}, {"x": 0.3})
    at = {r["threshold"]: r for r in rows if r["detector"] == "x"}
    assert at[0.1]["recall"] == 1.0 and at[0.95]["recall"] == 0.0
    ens = {r["factor"]: r for r in rows if r["detector"] == "ensemble"}
    assert ens[1.0]["recall"] == m.recall and ens[0.25]["recall"] >= ens[2.0]["recall"]


def test_labels_are_checked(tmp_path):
    with pytest.raises(EvalError, match="labels.csv"):
        read_labels(tmp_path)
    (tmp_path / "labels.csv").write_text("file,label\na.jpg,1\n")
    with pytest.raises(EvalError, match="file,has_person"):
        read_labels(tmp_path)
    (tmp_path / "labels.csv").write_text("file,has_person\n../etc/passwd,1\n")
    with pytest.raises(EvalError, match="outside"):
        read_labels(tmp_path)
    (tmp_path / "labels.csv").write_text("file,has_person\na.jpg,maybe\n")
    with pytest.raises(EvalError, match="0 or 1"):
        read_labels(tmp_path)
    (tmp_path / "labels.csv").write_text("file,has_person\na.jpg,1\n")
    with pytest.raises(EvalError, match="do not exist"):
        read_labels(tmp_path)
    assert main(["filter", "eval", str(tmp_path)]) == 2


def _eval(folder: Path, tmp_path: Path, capsys, *extra: str) -> dict:
    png = tmp_path / "curve.png"
    assert main(["filter", "eval", str(folder), "--json", "--items", "--png", str(png), *extra]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and rep["png"] == str(png)
    return rep


def test_eval_on_person_dev(person_dev_dir, tmp_path, capsys):
    rep = _eval(person_dev_dir, tmp_path, capsys)
    assert (rep["images"], rep["positives"], rep["negatives"], rep["errors"]) == (24, 4, 20, 0)
    assert rep["ensemble"]["recall"] == 1.0  # every person photo rejected outright
    names = [d["name"] for d in rep["detectors"]]
    by_file = {it["file"]: it for it in rep["items"]}
    for f in ("images/skimage_astronaut.png", "images/pywt_ascent.png"):
        assert by_file[f]["verdict"] == "person", by_file[f]
    for f in ("images/skimage_chelsea.png", "images/sklearn_china.jpg", "images/skimage_rocket.jpg"):
        assert by_file[f]["verdict"] == "clear", by_file[f]
    assert set(rep["per_detector"]) == set(names)
    fp = sum(1 for it in rep["items"] if not it["has_person"] and it["verdict"] == "person")
    assert rep["ensemble"]["fp"] == fp and rep["ensemble"]["frr"] == pytest.approx(fp / 20, abs=1e-4)
    assert rep["images_per_second"] > 0
    assert {r["detector"] for r in rep["sweep"]} == {*names, "ensemble"}


def test_eval_without_weights_uses_the_stand_ins(person_dev_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PASSKIT_MODELS", str(tmp_path / "empty"))
    rep = _eval(person_dev_dir, tmp_path, capsys)
    assert [d["name"] for d in rep["detectors"]] == ["mtcnn", "hog"]
    assert {s["name"] for s in rep["skipped"]} == {"yolox_nano", "yolo_fastest_body", "yunet"}
    assert rep["ensemble"]["recall"] == 1.0 and rep["ensemble"]["frr"] <= 0.05


@pytest.mark.slow  # ~30 s on 2 idle cores: 297 photos through the three detectors
def test_eval_on_person_dev_coco_matches_the_documented_numbers(models_dir, coco_dev_dir, tmp_path, capsys):
    """The default ensemble on 297 real COCO photos (numbers documented in passkit/filters/people/__init__.py)."""
    rep = _eval(coco_dev_dir, tmp_path, capsys)
    assert (rep["positives"], rep["negatives"]) == (162, 135)
    e = rep["ensemble"]
    assert e["recall"] == pytest.approx(0.883, abs=0.01), e
    assert e["recall_with_review"] == pytest.approx(0.920, abs=0.01), e
    assert e["frr"] == pytest.approx(0.074, abs=0.01), e
    assert e["review_rate"] == pytest.approx(0.094, abs=0.015), e


@pytest.mark.slow  # ~60 s on 2 idle cores: yolox_nano runs on 5 crops per photo
def test_high_recall_spec_on_person_dev_coco(models_dir, coco_dev_dir, tmp_path, capsys):
    """pipelines/people-high-recall.yaml: tiles scored apart (yolox_nano@tiles), more recall inside the FRR budget."""
    spec = ROOT / "pipelines" / "people-high-recall.yaml"
    rep = _eval(coco_dev_dir, tmp_path, capsys, "--spec", str(spec))
    e = rep["ensemble"]
    assert "yolox_nano@tiles" in rep["per_detector"]
    assert e["recall"] == pytest.approx(0.907, abs=0.01), e
    assert e["recall_with_review"] == pytest.approx(0.938, abs=0.01), e
    assert e["frr"] == pytest.approx(0.089, abs=0.01), e
    assert e["frr"] <= 0.10

"""`passkit filter eval`: metrics, sweep, curve, on hand-made items, person_dev and person_dev_coco."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

from passkit.cli import main
from passkit.filters.eval import (
    NO_BOX,
    EvalError,
    Item,
    by_size,
    choose_threshold,
    cross_validate,
    folds_of,
    grid_candidates,
    label_path,
    metrics,
    parse_yolo,
    read_boxes,
    read_labels,
    size_bucket,
    sweep,
    threshold_choice,
)
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


# ----------------------------------------------------------------------------- person size from YOLO boxes


def test_yolo_labels_are_parsed_and_malformed_lines_named(tmp_path):
    good = tmp_path / "good.txt"
    good.write_text("0 0.5 0.5 0.2 0.4\n\n2 0.1 0.1 0.05 0.9\n")
    assert parse_yolo(good) == [(0, 0.5, 0.5, 0.2, 0.4), (2, 0.1, 0.1, 0.05, 0.9)]
    bad = tmp_path / "bad.txt"
    for text, match in [
        ("0 0.5 0.5 0.2 0.4\n0 0.5 0.5 0.2\n", r"line 2: .*5 fields"),
        ("person 0.5 0.5 0.2 0.4\n", r"line 1: class must be an integer"),
        ("0 0.5 0.5 0.2 high\n", r"line 1: class must be an integer and cx cy w h numbers"),
        ("0 320 240 64 128\n", r"line 1: coordinates must be normalised"),
        ("0 0.5 0.5 0 0.4\n", r"line 1: coordinates must be normalised"),
        ("-1 0.5 0.5 0.2 0.4\n", r"line 1: class must be >= 0"),
        ("0 0.5 0.5 0.2 nan\n", r"line 1: .*finite"),
    ]:
        bad.write_text(text)
        with pytest.raises(EvalError, match=match):
            parse_yolo(bad)


def test_boxes_give_the_tallest_person_per_image(tmp_path):
    boxes = tmp_path / "labels"
    (boxes / "sub").mkdir(parents=True)
    assert label_path(boxes, "images/sub/a.jpg") == boxes / "sub" / "a.txt"
    assert label_path(boxes, "b.png") == boxes / "b.txt"
    (boxes / "sub" / "a.txt").write_text("0 0.5 0.5 0.1 0.08\n0 0.5 0.5 0.1 0.3\n5 0.5 0.5 0.9 0.95\n")
    (boxes / "b.txt").write_text("3 0.5 0.5 0.2 0.2\n")  # a car only: no person box
    got = read_boxes(boxes, ["images/sub/a.jpg", "b.png", "images/c.jpg"])
    assert got == {"images/sub/a.jpg": 0.3, "b.png": None, "images/c.jpg": None}  # class 5 is no person
    with pytest.raises(EvalError, match="no label file for any image"):
        read_boxes(boxes, ["images/x.jpg"])
    with pytest.raises(EvalError, match="not found"):
        read_boxes(tmp_path / "nope", ["a.jpg"])


def test_size_buckets_and_recall_by_size():
    assert [size_bucket(h) for h in (0.0, 0.0999, 0.10, 0.2499, 0.25, 1.0, None)] == [
        "<10%", "<10%", "10-25%", "10-25%", ">=25%", ">=25%", NO_BOX]
    items = [
        Item("a", True, tallest=0.05), Item("b", True, tallest=0.08), Item("c", True, tallest=0.2),
        Item("d", True, tallest=0.9), Item("e", True), Item("f", False),
        Item("g", True, {}, "error", "decode_error: bad", tallest=0.05),
    ]  # fmt: skip
    rows = by_size(items, {"ensemble": ["person", "review", "clear", "person", "clear", "person", "error"],
                           "x": ["clear", "person", "person", "person", "person", "clear", "error"]})
    got = {r["bucket"]: r for r in rows}
    assert [r["bucket"] for r in rows] == ["<10%", "10-25%", ">=25%", NO_BOX]
    assert got["<10%"] == {"bucket": "<10%", "images": 2, "ensemble": 0.5, "ensemble_with_review": 1.0, "x": 0.5}
    assert got["10-25%"]["ensemble"] == 0.0 and got["10-25%"]["x"] == 1.0
    assert got[">=25%"]["images"] == 1 and got[NO_BOX]["images"] == 1  # negatives have no size
    assert [r["bucket"] for r in by_size(items[:4], {"x": ["clear"] * 4})] == ["<10%", "10-25%", ">=25%"]


def test_coco_boxes_convert_to_yolo(tmp_path):
    spec = importlib.util.spec_from_file_location("coco_person_boxes", ROOT / "scripts" / "coco_person_boxes.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    coco = {
        "images": [{"id": 1, "file_name": "000000000001.jpg", "width": 200, "height": 100},
                   {"id": 2, "file_name": "000000000002.jpg", "width": 50, "height": 50}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "bbox": [20, 10, 40, 50], "iscrowd": 0},
            {"id": 11, "image_id": 1, "category_id": 1, "bbox": [180, 0, 40, 100], "iscrowd": 1},  # clipped
            {"id": 12, "image_id": 1, "category_id": 3, "bbox": [0, 0, 10, 10], "iscrowd": 0},
            {"id": 13, "image_id": 2, "category_id": 18, "bbox": [0, 0, 10, 10], "iscrowd": 0},
        ],
    }  # fmt: skip
    ann = tmp_path / "instances.json"
    ann.write_text(json.dumps(coco))
    assert mod.convert(ann, tmp_path / "boxes") == {"images": 2, "with_person": 1, "boxes": 2}
    assert parse_yolo(tmp_path / "boxes" / "000000000001.txt") == [(0, 0.2, 0.35, 0.2, 0.5), (0, 0.95, 0.5, 0.1, 1.0)]
    assert (tmp_path / "boxes" / "000000000002.txt").read_text() == ""
    assert mod.convert(ann, tmp_path / "nocrowd", crowd=False)["boxes"] == 1
    assert read_boxes(tmp_path / "boxes", ["images/000000000001.jpg", "images/000000000002.jpg"]) == {
        "images/000000000001.jpg": 1.0, "images/000000000002.jpg": None}


# ----------------------------------------------------------------------------- threshold at an FRR budget


def test_choose_threshold_keeps_the_budget():
    # 4 negatives, budget 0.5: two may be rejected, so t must sit above the third highest (0.2)
    assert choose_threshold([0.9, 0.3, 0.8], [0.6, 0.4, 0.2, 0.1], 0.5) == pytest.approx(0.25)
    assert choose_threshold([0.9], [0.6, 0.4, 0.2, 0.1], 0.0) == pytest.approx(0.75)  # above every negative
    assert choose_threshold([0.5], [0.6], 0.0) == math.inf  # no score above the negative: reject nothing
    assert choose_threshold([0.5], [0.6], 1.0) == 0.5  # everything may go


def test_cross_validated_recall_matches_a_hand_computed_example():
    # fold 0: persons 0.9, 0.3; no-person 0.2, 0.6 | fold 1: persons 0.8, 0.2; no-person 0.4, 0.1
    s = [0.9, 0.3, 0.2, 0.6, 0.8, 0.2, 0.4, 0.1]
    y = [True, True, False, False, True, True, False, False]
    fold = [0, 0, 0, 0, 1, 1, 1, 1]
    cv, held = cross_validate(s, [0.0] * 8, y, 0.5, fold)
    # fold 0 held out: trained on fold 1's negatives (0.4, 0.1), one may go: t = (0.1 + 0.2) / 2 = 0.15
    #   -> persons 0.9, 0.3 caught; no-person 0.2, 0.6 rejected
    # fold 1 held out: trained on fold 0's negatives (0.6, 0.2): t = (0.2 + 0.3) / 2 = 0.25
    #   -> person 0.8 caught, 0.2 missed; no-person 0.4 rejected
    assert cv["thresholds"] == [0.15, 0.25]
    assert (cv["tp"], cv["fn"], cv["fp"], cv["tn"]) == (3, 1, 3, 1)
    assert cv["recall"] == 0.75 and cv["frr"] == 0.75  # in-sample the same rule keeps FRR at 0.5
    assert cv["fold_recall"] == [1.0, 0.5] and cv["fold_frr"] == [1.0, 0.5]
    assert held == ["person", "person", "person", "person", "person", "clear", "person", "clear"]


def test_folds_are_stratified_and_seeded():
    y = [True] * 10 + [False] * 15
    f = folds_of(y, 5, seed=3)
    assert f == folds_of(y, 5, seed=3) and f != folds_of(y, 5, seed=4)
    for k in range(5):
        assert sum(1 for a, b in zip(y, f, strict=True) if a and b == k) == 2
        assert sum(1 for a, b in zip(y, f, strict=True) if not a and b == k) == 3


def test_threshold_choice_scales_the_ensemble_and_cross_validates():
    items = [Item(str(i), i % 2 == 0, {"a": (i * 37 % 100) / 100, "b": (i * 53 % 100) / 200}) for i in range(40)]
    items.append(Item("bad", True, {}, "error", "decode_error: x"))
    th, rv = {"a": 0.5, "b": 0.25}, {"a": 0.25}
    rep, verdicts = threshold_choice(items, th, rv, budget=0.1, k=4, seed=0)
    assert rep["folds"] == 4 and [r["detector"] for r in rep["rows"]] == ["ensemble", "ensemble grid", "a", "b"]
    ens = rep["rows"][0]
    f = ens["fitted"]["factor"]
    m = metrics(items, {k: v * f for k, v in th.items()}, {k: v * f for k, v in rv.items()})
    assert (m.tp, m.fp, m.recall, m.recall_with_review) == (
        ens["fitted"]["tp"], ens["fitted"]["fp"], ens["fitted"]["recall"], ens["fitted"]["recall_with_review"])
    assert ens["fitted"]["frr"] <= 0.1
    assert len(ens["cv"]["thresholds"]) == 4 and ens["cv"]["tp"] + ens["cv"]["fn"] == 20
    assert verdicts["ensemble_cv"][-1] == "error" and set(verdicts) == {"ensemble_fitted", "ensemble_cv", "a", "b"}
    grid = rep["rows"][1]
    g = {k: math.inf if v is None else v for k, v in grid["fitted"]["grid"].items()}
    m = metrics(items, g, {"a": g["a"] * 0.5})  # the review floor keeps the spec's ratio 0.25 / 0.5
    assert (m.tp, m.fp, m.recall_with_review) == (grid["fitted"]["tp"], grid["fitted"]["fp"],
                                                  grid["fitted"]["recall_with_review"])
    assert grid["fitted"]["frr"] <= 0.1 and grid["fitted"]["recall"] >= ens["fitted"]["recall"]  # a wider search
    assert len(grid["cv"]["thresholds"]) == 4 and set(grid["cv"]["thresholds"][0]) == {"a", "b"}
    few, _ = threshold_choice(items[:6], th, rv, k=5)
    assert few["folds"] == 3 and "3 images" in few["note"]
    with pytest.raises(EvalError, match="folds"):
        threshold_choice(items, th, rv, k=1)


def _eval(folder: Path, tmp_path: Path, capsys, *extra: str) -> dict:
    png = tmp_path / "curve.png"
    assert main(["filter", "eval", str(folder), "--json", "--items", "--png", str(png), *extra]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and rep["png"] == str(png)
    return rep


# rough tallest-person heights read off the person_dev photos by eye (they are not measured boxes; the
# test checks the plumbing from label files to the report), and a person box on a no-person photo
PERSON_DEV_BOXES = {
    "skimage_astronaut": "0 0.45 0.55 0.8 0.9", "skimage_camera": "0 0.5 0.5 0.5 0.85",
    "matplotlib_grace_hopper": "0 0.5 0.5 0.8 0.95", "pywt_ascent": "0 0.3 0.3 0.03 0.08\n0 0.6 0.4 0.02 0.05",
    "skimage_horse": "0 0.5 0.5 0.5 0.5",
}


def test_eval_on_person_dev(person_dev_dir, tmp_path, capsys):
    boxes = tmp_path / "boxes"
    boxes.mkdir()
    for stem, text in PERSON_DEV_BOXES.items():
        (boxes / f"{stem}.txt").write_text(text + "\n")
    rep = _eval(person_dev_dir, tmp_path, capsys, "--boxes", str(boxes))
    assert (rep["images"], rep["positives"], rep["negatives"], rep["errors"]) == (24, 4, 20, 0)
    assert rep["ensemble"]["recall"] == 1.0  # every person photo rejected outright
    names = [d["name"] for d in rep["detectors"]]
    by_file = {it["file"]: it for it in rep["items"]}
    for f in ("images/skimage_astronaut.png", "images/pywt_ascent.png"):
        assert by_file[f]["verdict"] == "person", by_file[f]
    for f in ("images/skimage_chelsea.png", "images/sklearn_china.jpg", "images/skimage_hubble_deep_field.jpg"):
        assert by_file[f]["verdict"] == "clear", by_file[f]
    assert set(rep["per_detector"]) == set(names)
    fp = sum(1 for it in rep["items"] if not it["has_person"] and it["verdict"] == "person")
    assert rep["ensemble"]["fp"] == fp and rep["ensemble"]["frr"] == pytest.approx(fp / 20, abs=1e-4)
    assert rep["images_per_second"] > 0
    assert {r["detector"] for r in rep["sweep"]} == {*names, "ensemble"}
    sizes = {r["bucket"]: r for r in rep["by_size"]["buckets"]}
    assert {k: r["images"] for k, r in sizes.items()} == {"<10%": 1, "10-25%": 0, ">=25%": 3}
    assert sizes["<10%"]["ensemble"] == sizes[">=25%"]["ensemble"] == 1.0 and sizes["10-25%"]["ensemble"] is None
    assert rep["by_size"]["conflicts"] == ["images/skimage_horse.png"]
    ch = rep["threshold_choice"]
    assert ch["folds"] == 4 and "4 images" in ch["note"]  # 4 person photos: at most 4 folds
    assert [r["detector"] for r in ch["rows"]] == ["ensemble", "ensemble grid", *names]
    assert all(r["fitted"]["frr"] <= 0.10 for r in ch["rows"])
    assert main(["filter", "eval", str(person_dev_dir), "--boxes", str(boxes), "--png", str(tmp_path / "c.png"),
                 "--folds", "2", "--frr-budget", "0.05"]) == 0
    text = capsys.readouterr().out
    assert "threshold at FRR <= 0.05: fitted on all images vs 2-fold CV" in text
    assert "recall by tallest person" in text and "1 no-person image(s) have person boxes" in text


def test_eval_without_weights_uses_the_stand_ins(person_dev_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PASSKIT_MODELS", str(tmp_path / "empty"))
    rep = _eval(person_dev_dir, tmp_path, capsys)
    assert [d["name"] for d in rep["detectors"]] == ["mtcnn", "hog"]
    assert {s["name"] for s in rep["skipped"]} == {"yolox_nano", "picodet_s_416", "yunet"}
    assert rep["ensemble"]["recall"] == 1.0 and rep["ensemble"]["frr"] <= 0.05


@pytest.mark.slow  # ~30 s on 2 idle cores: 297 photos through the three detectors
def test_eval_on_person_dev_coco_matches_the_documented_numbers(models_dir, coco_dev_dir, tmp_path, capsys):
    """The default ensemble on 297 real COCO photos (numbers documented in passkit/filters/people/__init__.py),
    with COCO's person boxes converted by scripts/coco_person_boxes.py for recall by person size."""
    spec = importlib.util.spec_from_file_location("coco_person_boxes", ROOT / "scripts" / "coco_person_boxes.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    boxes = tmp_path / "boxes"
    assert mod.convert(coco_dev_dir / "annotations" / "instances_merged.json", boxes)["with_person"] == 162
    rep = _eval(coco_dev_dir, tmp_path, capsys, "--boxes", str(boxes))
    assert (rep["positives"], rep["negatives"]) == (162, 135)
    e = rep["ensemble"]
    assert e["recall"] == pytest.approx(0.926, abs=0.01), e
    assert e["recall_with_review"] == pytest.approx(0.963, abs=0.01), e
    assert e["frr"] == pytest.approx(0.089, abs=0.01), e
    assert e["review_rate"] == pytest.approx(0.067, abs=0.015), e
    assert rep["by_size"]["conflicts"] == []
    sizes = {r["bucket"]: r for r in rep["by_size"]["buckets"]}
    assert {k: r["images"] for k, r in sizes.items()} == {"<10%": 39, "10-25%": 27, ">=25%": 96}
    assert sizes["<10%"]["ensemble"] == pytest.approx(0.718, abs=0.03), sizes  # small people are the misses
    assert sizes["10-25%"]["ensemble"] >= 0.96 and sizes[">=25%"]["ensemble"] >= 0.97, sizes
    ens = rep["threshold_choice"]["rows"][0]
    assert ens["fitted"]["recall"] == pytest.approx(0.926, abs=0.01) and ens["fitted"]["frr"] <= 0.10, ens
    assert ens["cv"]["recall"] == pytest.approx(0.926, abs=0.015), ens  # 5 folds, seed 0
    assert ens["cv"]["frr"] <= 0.10 and ens["cv"]["recall_with_review"] >= 0.95, ens
    grid = rep["threshold_choice"]["rows"][1]  # re-choosing all three thresholds inside each fold
    assert grid["fitted"]["recall"] == pytest.approx(0.926, abs=0.01) and grid["fitted"]["frr"] <= 0.10, grid
    assert grid["cv"]["recall"] == pytest.approx(0.926, abs=0.015), grid
    assert grid["cv"]["recall_with_review"] == pytest.approx(0.963, abs=0.015), grid
    # what the manifest of a release filtered by this ensemble records (passkit.filters.people.measured)
    from passkit.filters.people import measured

    rec = measured.lookup(rep["detectors"])
    assert rec["status"] == "measured" and rec["label"].startswith("default"), rec
    assert rec["fitted"]["recall"] == pytest.approx(e["recall"], abs=1e-4), (rec, e)
    assert rec["fitted"]["frr"] == pytest.approx(e["frr"], abs=1e-4)
    assert rec["cv"]["recall"] == pytest.approx(ens["cv"]["recall"], abs=1e-4)
    assert rec["cv"]["frr"] == pytest.approx(ens["cv"]["frr"], abs=1e-4)


@pytest.mark.slow  # ~30 s on 2 idle cores
def test_high_recall_spec_on_person_dev_coco(models_dir, coco_dev_dir, tmp_path, capsys):
    """pipelines/people-high-recall.yaml: the default detectors tuned for a 20 % false-rejection budget
    reject more people outright, and its measurement is the one the manifest records."""
    from passkit.filters.people import measured

    spec = ROOT / "pipelines" / "people-high-recall.yaml"
    rep = _eval(coco_dev_dir, tmp_path, capsys, "--spec", str(spec), "--frr-budget", "0.2")
    e = rep["ensemble"]
    assert e["recall"] == pytest.approx(0.957, abs=0.01), e
    assert e["recall_with_review"] == pytest.approx(0.994, abs=0.01), e
    assert e["frr"] == pytest.approx(0.193, abs=0.01), e
    ens = rep["threshold_choice"]["rows"][0]
    assert ens["cv"]["recall"] == pytest.approx(0.963, abs=0.015), ens
    rec = measured.lookup(rep["detectors"])
    assert rec["status"] == "measured" and "high recall" in rec["label"], rec
    assert rec["fitted"]["recall"] == pytest.approx(e["recall"], abs=1e-4)
    assert rec["cv"]["recall"] == pytest.approx(ens["cv"]["recall"], abs=1e-4)


def test_grid_candidates_reach_the_best_or_rule_and_come_from_the_training_photos():
    """The grid's thresholds sit between scores (midpoints above the negatives a detector may let
    through), so it finds the exact best OR of two detectors; inside cross-validation each fold's grid
    is drawn from its training photos only."""
    # a: finds persons 0-5, b: finds persons 6-9; each has one strong negative (0.9), the budget allows one
    items = [Item(f"p{i}", True, {"a": 0.8 if i < 6 else 0.1, "b": 0.7 if i >= 6 else 0.05}) for i in range(10)]
    items += [Item(f"n{i}", False, {"a": 0.9 if i == 0 else 0.02 * i, "b": 0.9 if i == 1 else 0.01 * i})
              for i in range(10)]
    # one negative may pass: keep 0.9 out (nothing is higher: off), or let it through and keep 0.2 out
    assert grid_candidates([0.8, 0.1], [0.9, 0.2, 0.04], budget=0.34) == [0.5, math.inf]
    assert grid_candidates([0.8], [0.3], budget=1.0) == [0.3, 0.55]  # may reject every negative: its lowest too
    rep, _ = threshold_choice(items, {"a": 0.95, "b": 0.95}, {}, budget=0.1, k=2, seed=0)
    grid = rep["rows"][1]
    assert grid["detector"] == "ensemble grid"
    # one negative may pass (floor(0.1 * 10)): a and b together take every person but both strong
    # negatives; a alone takes persons 0-5 and n0, b alone persons 6-9 and n1: the best is a alone
    assert grid["fitted"]["recall"] == 0.6 and grid["fitted"]["fp"] == 1, grid
    assert grid["cv"]["tp"] + grid["cv"]["fn"] == 10 and len(grid["cv"]["thresholds"]) == 2


def test_chosen_thresholds_round_up():
    from passkit.filters.eval import _num_up

    assert _num_up(0.61131) == 0.6114 and _num_up(0.5) == 0.5 and _num_up(math.inf) is None

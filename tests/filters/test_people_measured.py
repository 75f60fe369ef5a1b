"""The manifest's record of how well the people ensemble that ran was measured."""

from __future__ import annotations

import copy

from passkit.filters.people import measured


def _described(m: measured.Measurement) -> list[dict]:
    """What PeopleFilter.describe() gives for the measured ensemble (plus keys that do not matter)."""
    out = []
    for d in copy.deepcopy(list(m.detectors)):
        d = {k: v for k, v in d.items() if v is not None and not (k == "image_score" and v == "top")}
        out.append({**d, "sha256": d["weights"], "license": "x", "source": "y", "task": "person", "version": None})
    return out


def test_the_ensemble_that_ran_finds_its_measurement():
    default = measured.KNOWN[0]
    rec = measured.lookup(_described(default))
    assert rec["status"] == "measured" and rec["label"] == default.label
    assert rec["cv"]["recall"] == default.cv["recall"] and rec["frr_budget"] == 0.10
    assert "detectors" not in rec and rec["command"].startswith("passkit filter eval")
    assert {m.label for m in measured.KNOWN} == {
        measured.lookup(_described(m))["label"] for m in measured.KNOWN}  # each finds its own


def test_any_change_that_moves_verdicts_makes_it_unmeasured():
    base = _described(measured.KNOWN[0])
    changes = [
        lambda d: d[0].update(threshold=0.45),
        lambda d: d[1].update(review=0.5),
        lambda d: d[0].pop("image_score"),
        lambda d: d[2].update(weights="0" * 64),
        lambda d: d[0].update(tiles=2),
        lambda d: d.pop(2),
        lambda d: d.reverse(),
    ]
    for change in changes:
        d = copy.deepcopy(base)
        change(d)
        rec = measured.lookup(d)
        assert rec["status"] == "unmeasured" and "passkit filter eval" in rec["how"], d
    assert measured.lookup([])["status"] == "off"
    licence_changed = copy.deepcopy(base)
    licence_changed[0]["license"] = "another text"  # does not change a verdict
    assert measured.lookup(licence_changed)["status"] == "measured"

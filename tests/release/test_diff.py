"""passkit diff: added, removed and changed samples between two releases."""

from __future__ import annotations

from pathlib import Path

from passkit.records import Candidate
from passkit.release.diff import diff
from tests.helpers.staging import Item, basic_items, staged_release, texture


def key(source_id: str) -> str:
    return Candidate("test", source_id, "").key


def test_added_removed_changed(tmp_path: Path) -> None:
    items = basic_items(6)
    a = staged_release(tmp_path, items, name="a")
    newer = [it for it in items if it.source_id != "s02"]  # s02 gone
    newer[0] = Item("s00", items[0].image, items[0].creator, items[0].license, title="A better title")
    newer[1] = Item("s01", texture(999), items[1].creator, items[1].license)  # new bytes
    newer.append(Item("s99", texture(77)))
    b = staged_release(tmp_path, newer, name="b")

    d = diff(a, b)
    assert d.added == [key("s99")]
    assert [r["key"] for r in d.removed] == [key("s02")]
    assert "no reason recorded" in d.removed[0]["reason"]
    changed = {c["key"]: c["fields"] for c in d.changed}
    assert set(changed) == {key("s00"), key("s01")}
    assert set(changed[key("s00")]) == {"title", "attribution"}
    assert changed[key("s00")]["title"] == ["Picture s00", "A better title"]
    assert set(changed[key("s01")]) == {"sha256"}
    assert d.unchanged == 3 and not d.identical


def test_identical_and_reason_from_rejections(tmp_path: Path) -> None:
    items = basic_items(5)
    a = staged_release(tmp_path, items, name="a")
    assert diff(a, a).identical and diff(a, a).unchanged == 5
    b = staged_release(tmp_path, items, name="b", max_per_creator=1)
    d = diff(a, b)
    assert d.removed and all(r["reason"].startswith("creator_cap: creator_cap") for r in d.removed)

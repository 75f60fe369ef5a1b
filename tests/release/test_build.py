"""Release-time curation (near-duplicates, blank images, decontamination, creator cap, spec takedowns)
and the release documents, on small releases built by the real builder from synthetic staging units.

The releases come from `tests.helpers.staging.staged_release` (shared with the takedown, diff, report
and query tests): synthetic work units through the real builder, no network, no detectors.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from passkit import images
from passkit.audit import audit
from passkit.records import Candidate
from passkit.release.curate import STAGE_ORDER, takedown_matches
from passkit.shards import iter_samples
from tests.helpers.staging import (
    Item,
    basic_items,
    flat,
    make_spec,
    near_copy,
    outcomes,
    png_bytes,
    staged_release,
    texture,
)

# ----------------------------------------------------------------------------- curation


def test_near_duplicate_goes_and_names_the_keeper(tmp_path: Path) -> None:
    items = basic_items(6)
    items.insert(3, Item("s00-reupload", near_copy(items[0].image), "Someone Else"))
    rel = staged_release(tmp_path, items)
    got = outcomes(rel)
    stage, reason, detail = got["s00-reupload"]
    assert (stage, reason) == ("dedup", "near_duplicate")
    kept_key = Candidate("test", "s00", "").key
    assert kept_key in detail and "Hamming distance" in detail
    assert all(v[0] == "kept" for k, v in got.items() if k != "s00-reupload")
    m = json.loads((rel / "manifest.json").read_text())
    assert m["counts"]["by_reason"] == {"near_duplicate": 1}
    assert m["curation"]["near_dup_hamming"] == 8
    assert audit(rel).ok


def test_a_release_with_nothing_staged_is_empty_not_an_error(tmp_path: Path) -> None:
    items = [Item(f"nc{i}", texture(i), license="cc-by-nc-2.0") for i in range(3)]
    rel = staged_release(tmp_path, items, max_per_creator=1, takedowns=[{"creator": "x", "reason": "asked"}])
    m = json.loads((rel / "manifest.json").read_text())
    assert m["counts"]["kept"] == 0 and m["counts"]["rejected"] == 3
    assert pq.read_table(rel / "index.parquet").num_rows == 0


def test_near_dup_can_be_switched_off(tmp_path: Path) -> None:
    items = basic_items(4) + [Item("copy", near_copy(texture(0)))]
    rel = staged_release(tmp_path, items, near_dup_hamming=None)
    assert outcomes(rel)["copy"][0] == "kept"


@pytest.mark.parametrize("old_ledger", [False, True], ids=["measured-at-check", "older-ledger-decoded"])
def test_blank_and_single_colour_images_are_removed(tmp_path: Path, old_ledger: bool,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from passkit.filters import quality

    decoded = []
    real = quality.check_bytes
    monkeypatch.setattr(quality, "check_bytes", lambda *a, **k: decoded.append(1) or real(*a, **k))
    items = basic_items(4) + [
        Item("white", flat((255, 255, 255))), Item("black", flat((3, 3, 3))),
        Item("teal", flat((20, 140, 150), noise=4)),
        # mostly sky with a thin horizon: 90 % flat, a real photo-like frame, kept
        Item("sky", Image.fromarray(np.concatenate([np.asarray(flat((120, 170, 230)))[:108],
                                                    np.asarray(texture(9))[:12]]), "RGB")),
    ]
    rel = staged_release(tmp_path, items, old_ledger=old_ledger)
    assert len(decoded) == (len(items) if old_ledger else 0)  # the release decodes only old ledgers
    got = outcomes(rel)
    assert got["white"][:2] == ("quality", "blank")
    assert got["black"][:2] == ("quality", "blank")
    assert got["teal"][:2] == ("quality", "single_colour") and "%" in got["teal"][2]
    assert got["sky"][0] == "kept"
    rel2 = staged_release(tmp_path, items, name="nob", old_ledger=old_ledger, drop_blank=False)
    assert outcomes(rel2)["teal"][0] == "kept"


def test_decontamination_against_a_folder_and_a_hash_list(tmp_path: Path) -> None:
    items = basic_items(6)
    evalset = tmp_path / "eval"
    (evalset / "val").mkdir(parents=True)
    near_copy(items[1].image).save(evalset / "val" / "ILSVRC_val_0001.png")
    texture(1234).save(evalset / "val" / "other.jpg")
    (evalset / "val" / "broken.jpg").write_bytes(b"not an image")
    ph = images.check(png_bytes(items[4].image), make_spec().image).info.phash
    (tmp_path / "hashes.txt").write_text(f"# eval hashes\n{ph}  some-eval-image\n")
    rel = staged_release(tmp_path, items, exclude_near=["eval", "hashes.txt"])
    got = outcomes(rel)
    assert got["s01"][:2] == ("decontamination", "near_eval_set") and "ILSVRC_val_0001" in got["s01"][2]
    assert got["s04"][:2] == ("decontamination", "near_eval_set") and "hashes.txt:2" in got["s04"][2]
    assert sum(v[0] == "kept" for v in got.values()) == 4
    m = json.loads((rel / "manifest.json").read_text())
    assert m["curation"]["exclude_near"]["hashes"] == 3 and m["curation"]["exclude_near"]["unreadable"] == 1


def test_bad_hash_list_is_a_clear_error(tmp_path: Path) -> None:
    from passkit.filters.dedup import HashListError

    (tmp_path / "bad.txt").write_text("zzzz\n")
    with pytest.raises(HashListError, match=r"bad.txt:1: 'zzzz' is not a hex pHash"):
        staged_release(tmp_path, basic_items(2), exclude_near=["bad.txt"])


def test_per_creator_cap_keeps_the_first_in_source_order(tmp_path: Path) -> None:
    items = [Item(f"a{i}", texture(100 + i), "Prolific Person") for i in range(5)] + basic_items(3)
    rel = staged_release(tmp_path, items, max_per_creator=2)
    got = outcomes(rel)
    assert [got[f"a{i}"][0] for i in range(5)] == ["kept", "kept", "creator_cap", "creator_cap", "creator_cap"]
    assert "Prolific Person" in got["a2"][2]


def test_spec_takedowns_are_applied_and_recorded(tmp_path: Path) -> None:
    items = basic_items(6)
    rel = staged_release(tmp_path, items, takedowns=[{"creator": "bo sample", "reason": "creator asked"},
                                                     {"key": Candidate("test", "s00", "").key, "reason": "dmca"}])
    got = outcomes(rel)
    gone = {k for k, v in got.items() if v[0] == "takedown"}
    assert gone == {"s00", "s01", "s04"}
    m = json.loads((rel / "manifest.json").read_text())
    assert {r["reason"] for r in m["removals"]} == {"creator asked", "dmca"}
    assert all(len(r["sha256"]) == 64 for r in m["removals"])
    assert audit(rel).ok


def test_every_candidate_ends_once_and_the_funnel_adds_up(tmp_path: Path) -> None:
    items = basic_items(6) + [Item("nc", texture(50), license="cc-by-nc-2.0"), Item("face", texture(51), people=0.99),
                              Item("dup", near_copy(texture(2))), Item("blank", flat((250, 250, 250)))]
    rel = staged_release(tmp_path, items)
    m = json.loads((rel / "manifest.json").read_text())
    c = m["counts"]
    assert c["candidates"] == len(items) == c["kept"] + c["rejected"]
    assert set(c["by_stage"]) <= set(STAGE_ORDER)
    assert c["by_stage"] == {"dedup": 1, "license": 1, "people": 1, "quality": 1}


def test_rebuild_is_byte_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")
    items = basic_items(7) + [Item("copy", near_copy(texture(3)))]
    a = staged_release(tmp_path / "a", items)
    b = staged_release(tmp_path / "b", items)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f


def test_takedown_matcher() -> None:
    from passkit.config import TakedownSpec

    row = {"key": "k1", "creator": "Ann Example", "creator_url": "https://x/ann", "source_url": "https://i/1.jpg",
           "landing_url": "https://p/1"}
    assert takedown_matches(row, TakedownSpec(creator=" ann example ", reason="r"))
    assert takedown_matches(row, TakedownSpec(creator="HTTPS://X/ANN", reason="r"))
    assert takedown_matches(row, TakedownSpec(source_url="https://p/1", reason="r"))
    assert not takedown_matches(row, TakedownSpec(key="k2", reason="r"))
    with pytest.raises(ValueError, match="names a key, a creator or a source_url"):
        TakedownSpec(reason="r")


# ----------------------------------------------------------------------------- documents


def test_documents_are_written_listed_and_agree(tmp_path: Path) -> None:
    import yaml

    rel = staged_release(tmp_path, basic_items(7) + [Item("face", texture(60), people=0.97)])
    m = json.loads((rel / "manifest.json").read_text())
    for name in ("README.md", "LICENSES.md", "ATTRIBUTION.md", "attribution.csv", "attribution.html", "report.html",
                 "index.parquet", "rejected.parquet"):
        assert name in m["files"], name
    card = (rel / "README.md").read_text()
    assert card.startswith("---\n")
    header = yaml.safe_load(card.split("---\n")[1])
    assert sorted(header["license"]) == ["cc-by-2.0", "cc-by-4.0", "cc0-1.0"]
    assert header["size_categories"] == ["n<1K"] and "image-feature-extraction" in header["task_categories"]
    for section in ("## Motivation", "## Composition", "## Collection process", "## Filtering", "## Attribution",
                    "## Removal requests"):
        assert section in card
    assert "Of 8 candidates, 7 were kept" in card and "| people | people | 1 |" in card
    lic = (rel / "LICENSES.md").read_text()
    assert "CC BY 2.0" in lic and "name the title" in lic and "legal code" in lic
    page = (rel / "attribution.html").read_text()
    index = pq.read_table(rel / "index.parquet").to_pylist()
    from markupsafe import escape

    for r in index:
        assert f'id="{r["key"]}"' in page and str(escape(r["attribution"])) in page
    assert audit(rel).ok


def test_attribution_html_escapes_hostile_metadata(tmp_path: Path) -> None:
    # The licence gate strips tags from titles and creators; the pages escape whatever gets through
    # anyway (older releases, other builders) and never turn a non-http URL into a link.
    from passkit.release.attribution import write_html

    row = {"key": "k1", "title": '"><img src=x onerror=alert(1)>', "creator": "<script>alert(1)</script>",
           "creator_url": "javascript:alert(1)", "landing_url": "https://example.org/1", "license": "cc-by-4.0",
           "license_name": "CC BY 4.0", "license_url": "https://creativecommons.org/licenses/by/4.0/",
           "attribution": "<b>x</b> & y", "modification": "resized"}
    write_html(tmp_path / "a.html", "r-1.0.0", [row])
    text = (tmp_path / "a.html").read_text()
    assert "<script>alert" not in text and "<img src=x" not in text and "javascript:" not in text
    assert "&lt;script&gt;" in text and "&lt;b&gt;x&lt;/b&gt; &amp; y" in text


def test_release_shards_hold_only_kept_samples(tmp_path: Path) -> None:
    rel = staged_release(tmp_path, basic_items(5) + [Item("face", texture(61), people=0.95)])
    keys = [k for s in sorted((rel / "shards").glob("*.tar")) for k, _ in iter_samples(s)]
    assert keys == sorted(keys) and len(keys) == 5
    assert Candidate("test", "face", "").key not in keys

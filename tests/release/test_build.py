"""Release-time curation (near-duplicates, blank images, decontamination, creator cap, spec takedowns)
and the release documents, on small releases built by the real builder from synthetic staging units.

`staged_release` (also used by test_takedown, test_diff, test_report, test_query) writes work units
exactly as passkit.pipeline does (staging tar + Parquet ledger) from images made here, then runs
passkit.release.build.build_release: no network, no detectors, a second or two.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageFilter

from passkit import images, licenses
from passkit.audit import audit
from passkit.config import PipelineSpec, parse_spec
from passkit.ledger import DETECTORS_META, LEDGER_SCHEMA, unit_paths
from passkit.records import Candidate, Sample
from passkit.release.build import build_release
from passkit.release.curate import STAGE_ORDER, takedown_matches
from passkit.shards import iter_samples, write_tar

DETECTORS = [{"name": "mtcnn", "threshold": 0.9, "weights": "facenet-pytorch==2.6.0", "sha256": None}]
LICENSE_URLS = {
    "cc-by-2.0": "https://creativecommons.org/licenses/by/2.0/",
    "cc-by-4.0": "https://creativecommons.org/licenses/by/4.0/",
    "cc0-1.0": "https://creativecommons.org/publicdomain/zero/1.0/",
}


def texture(seed: int, size: tuple[int, int] = (160, 120)) -> Image.Image:
    """A photo-like image whose pHash is far from every other seed's (smoothed noise + gradient)."""
    rng = np.random.default_rng(seed)
    w, h = size
    small = rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
    im = Image.fromarray(small, "RGB").resize((w, h), Image.Resampling.BICUBIC)
    noise = rng.integers(-20, 20, size=(h, w, 3))
    return Image.fromarray((np.asarray(im, dtype=np.int16) + noise).clip(0, 255).astype(np.uint8), "RGB")


def near_copy(img: Image.Image) -> Image.Image:
    """The same picture, slightly blurred, brightened and resized: a re-upload."""
    out = img.filter(ImageFilter.GaussianBlur(0.8)).resize((img.width - 8, img.height - 6))
    arr = np.asarray(out, dtype=np.int16) + 6
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8), "RGB")


def flat(colour: tuple[int, int, int], noise: int = 2, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = np.full((120, 160, 3), colour, dtype=np.int16) + rng.integers(-noise, noise + 1, size=(120, 160, 3))
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8), "RGB")


def png_bytes(img: Image.Image) -> bytes:
    import io

    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@dataclass
class Item:
    source_id: str
    image: Image.Image | None  # None: rejected before fetching (licence)
    creator: str = "Ann Example"
    license: str = "cc-by-4.0"
    title: str | None = None
    people: float | None = None  # a score >= 0.9 makes the unit reject it as "people"
    extra: dict[str, Any] = field(default_factory=dict)


def _candidate(it: Item, url_base: str = "https://example.org") -> Candidate:
    return Candidate(
        source="test", source_id=it.source_id, url=f"{url_base}/img/{it.source_id}.png",
        license_url=LICENSE_URLS.get(it.license, "https://creativecommons.org/licenses/by-nc/2.0/"),
        title=it.title or f"Picture {it.source_id}", creator=it.creator,
        creator_url=f"https://example.org/people/{it.creator.replace(' ', '_')}",
        landing_url=f"{url_base}/photos/{it.source_id}", provider="example", query="test",
    )


def write_units(units_dir: Path, items: list[Item], spec: PipelineSpec, unit_size: int = 4,
                url_base: str = "https://example.org", old_ledger: bool = False) -> list[int]:
    """Staging units as passkit.pipeline.UnitRunner writes them (tar of kept samples + ledger of all);
    `old_ledger`: as a passkit before the flat_fraction column wrote them."""
    units_dir.mkdir(parents=True, exist_ok=True)
    pol = spec.license.build()
    mod = images.modification_note(spec.image)
    indices = []
    for u, lo in enumerate(range(0, len(items), unit_size)):
        rows, samples = [], []
        for seq, it in enumerate(items[lo : lo + unit_size]):
            c = _candidate(it, url_base)
            g = licenses.gate(c, pol)
            row: dict[str, Any] = {f.name: None for f in LEDGER_SCHEMA}
            row.update(unit=u, seq=seq, key=c.key, source=c.source, source_id=c.source_id, query=c.query, url=c.url,
                       title=c.title, creator=c.creator, creator_url=c.creator_url, landing_url=c.landing_url,
                       provider=c.provider, license_url=c.license_url, transient=False, scores=[])
            if isinstance(g, tuple):
                row.update(status="rejected", stage="license", reason=g[0], detail=g[1])
                rows.append(row)
                continue
            ci = images.check(png_bytes(it.image), spec.image)
            scores = {"mtcnn": it.people or 0.0}
            row.update(license=g.license, license_name=g.license_name, attribution=g.sentence,
                       sha256=ci.info.sha256, source_sha256=ci.info.source_sha256, phash=ci.info.phash,
                       width=ci.info.width, height=ci.info.height, orig_width=ci.info.orig_width,
                       orig_height=ci.info.orig_height, bytes=len(ci.info.jpeg), scores=sorted(scores.items()),
                       flat_fraction=ci.info.flat_fraction, flat_colour=list(ci.info.flat_colour or ()))
            if (it.people or 0) >= 0.9:
                row.update(status="rejected", stage="people", reason="people", detail="fired: mtcnn")
            else:
                row.update(status="kept")
                samples.append(Sample(c.key, c, g, ci.info, mod, scores))
            rows.append(row)
        samples.sort(key=lambda s: s.key)
        tar, ledger = unit_paths(units_dir, u)
        members = []
        for s in samples:
            members += [(f"{s.key}.jpg", s.image.jpeg),
                        (f"{s.key}.json", json.dumps(s.meta(), sort_keys=True, ensure_ascii=False).encode())]
        write_tar(tar, members)
        table = pa.Table.from_pylist(rows, schema=LEDGER_SCHEMA)
        if old_ledger:
            table = table.drop_columns(["flat_fraction", "flat_colour"])
        table = table.replace_schema_metadata(
            {DETECTORS_META: json.dumps({"detectors": DETECTORS, "skipped": []}).encode()})
        pq.write_table(table, ledger)
        indices.append(u)
    return indices


def make_spec(**release: Any) -> PipelineSpec:
    return parse_spec({
        "name": "syn", "version": "1.0.0", "description": "synthetic release for tests",
        "source": {"kind": "demo"}, "license": {"policy": "by-or-public-domain"},
        "image": {"max_side": 128, "min_side": 16}, "release": {"shard_max_samples": 3, **release},
    })


def staged_release(tmp: Path, items: list[Item], name: str = "r", url_base: str = "https://example.org",
                   old_ledger: bool = False, **release: Any) -> Path:
    spec = make_spec(**release)
    units = tmp / f"units-{name}"
    idx = write_units(units, items, spec, url_base=url_base, old_ledger=old_ledger)
    out = tmp / "releases" / name / spec.release_name
    build_release(spec, units, idx, out, {"kind": "test"}, base=tmp)
    return out


def basic_items(n: int = 8) -> list[Item]:
    creators = ["Ann Example", "Bo Sample", "Cy Tester"]
    lic = ["cc-by-4.0", "cc-by-2.0", "cc0-1.0"]
    return [Item(f"s{i:02d}", texture(i), creators[i % 3], lic[i % 3]) for i in range(n)]


def outcomes(release: Path) -> dict[str, tuple[str, str | None, str | None]]:
    out = {r["source_id"]: ("kept", None, None) for r in pq.read_table(release / "index.parquet").to_pylist()}
    for r in pq.read_table(release / "rejected.parquet").to_pylist():
        out[r["source_id"]] = (r["stage"], r["reason"], r["detail"])
    return out


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

"""`passkit views generate` end to end on CPU: a tiny random-weight unCLIP pipeline (tests/helpers/unclip.py),
a small release made by the real builder, the derived release audited like any other."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from passkit.audit import audit  # noqa: E402
from passkit.filters.people.ensemble import PeopleResult  # noqa: E402
from passkit.shards import iter_samples  # noqa: E402
from passkit.shards.wdsindex import index_path as shard_index  # noqa: E402
from passkit.views.derive import KEY_SUFFIX, GenViewError, generate_views  # noqa: E402
from passkit.views.foreground import NOISE_LEVELS  # noqa: E402
from tests.helpers.staging import basic_items, staged_release  # noqa: E402
from tests.helpers.unclip import build_tiny_unclip  # noqa: E402

STEPS = 2  # the tiny model's output is noise whatever the steps; two exercise the scheduler loop


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_unclip(tmp_path_factory.mktemp("unclip") / "tiny-unclip")


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return staged_release(tmp_path, basic_items(6))  # 6 samples, shards of 4 and 2 (see make_spec)


class FlagOne:
    """A people filter that sees a person in the variation of one source key, and none elsewhere."""

    def __init__(self, key: str | None = None) -> None:
        self.key = key
        self.order: list[str] = []  # filled by the test from the source's key order
        self.seen = 0

    def describe(self) -> list[dict[str, Any]]:
        return [{"name": "fake", "threshold": 0.5, "weights": "none", "sha256": None}]

    def score(self, images: list[Any]) -> list[PeopleResult]:
        out = []
        for _ in images:
            hit = self.key is not None and self.order[self.seen] == self.key
            self.seen += 1
            out.append(PeopleResult({"fake": 0.9 if hit else 0.1}, fired=["fake"] if hit else []))
        return out


def _samples(release: Path) -> list[tuple[str, dict[str, bytes]]]:
    m = json.loads((release / "manifest.json").read_text())
    return [s for e in m["shards"] for s in iter_samples(release / e["path"])]


def test_derived_release_audits_clean_and_credits_the_original(source: Path, model: Path) -> None:
    src_samples = _samples(source)
    flag = FlagOne(src_samples[2][0])
    flag.order = [k for k, _ in src_samples]
    res = generate_views(source, model, steps=STEPS, batch_size=3, fit_images=4, people=flag,
                         created="2024-01-01T00:00:00Z")
    m = json.loads((res.path / "manifest.json").read_text())
    assert res.path.name == f"{m['name']}-{m['version']}" == source.name.replace("-", "-genview-", 1)
    assert (res.generated, res.rejected) == (5, 1)
    report = audit(res.path)
    assert report.ok, report.findings
    assert not report.findings, report.findings  # not even shard_index_absent: DALI can read it
    assert all(shard_index(e["path"]) in m["files"] for e in m["shards"])

    derived = dict(_samples(res.path))
    src = {k: json.loads(g["json"]) for k, g in src_samples}
    assert sorted(derived) == [k + KEY_SUFFIX for k in sorted(src) if k != flag.key]
    for k, g in derived.items():
        meta = json.loads(g["json"])
        orig = src[meta["genview"]["source_key"]]
        assert k == meta["genview"]["source_key"] + KEY_SUFFIX
        for f in ("title", "creator", "creator_url", "landing_url", "license", "license_url", "attribution"):
            assert meta[f] == orig[f]  # the original work's full credit
        assert meta["modification"].startswith("AI-generated variation of the original work")
        assert orig["modification"] in meta["modification"]
        assert meta["genview"]["noise_level"] in NOISE_LEVELS and meta["genview"]["model"] == "tiny-unclip"
        assert meta["genview"]["source_sha256"] == orig["sha256"] != meta["sha256"]
        assert isinstance(meta["genview"]["seed"], int) and meta["scores"] == {"fake": 0.1}

    rows = list(csv.DictReader((res.path / "attribution.csv").open(encoding="utf-8")))
    assert {r["attribution"] for r in rows} == {src[k[: -len(KEY_SUFFIX)]]["attribution"] for k in derived}
    assert all(r["modification"].startswith("AI-generated variation") for r in rows)
    md = (res.path / "ATTRIBUTION.md").read_text(encoding="utf-8")
    assert "AI-generated variation of the original work" in md
    assert all(src[k[: -len(KEY_SUFFIX)]]["attribution"] in md for k in derived)

    rejected = pq.read_table(res.path / "rejected.parquet").to_pylist()
    assert [(r["key"], r["stage"], r["reason"]) for r in rejected] == [(flag.key + KEY_SUFFIX, "people", "people")]
    assert m["source"]["kind"] == "genview" and m["source"]["release"] == source.name
    assert m["counts"]["kept"] == 5 and m["counts"]["by_reason"] == {"people": 1}
    assert "genview.json" in m["files"] and (res.path / "croissant.json").is_file()

    again = generate_views(source, model, steps=STEPS, batch_size=2, fit_images=4, people=FlagOne(),
                           out_dir=res.path.with_name("again"), created="2024-01-01T00:00:00Z")
    first = {k: g["jpg"] for k, g in derived.items()}
    # the same seed gives the same variation whatever the batch it was generated in
    assert {k: g["jpg"] for k, g in _samples(again.path) if k in first} == first
    with pytest.raises(GenViewError, match="already exists"):
        generate_views(source, model, steps=STEPS, people=FlagOne())


def test_a_failed_run_resumes_from_its_finished_shards(source: Path, model: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from passkit.views import derive

    real = derive._shard
    calls: list[str] = []

    def second_fails(*args: Any, **kw: Any) -> Any:
        calls.append(args[3])
        if len(calls) == 2:
            raise RuntimeError("killed")
        return real(*args, **kw)

    monkeypatch.setattr(derive, "_shard", second_fails)
    with pytest.raises(RuntimeError, match="killed"):
        generate_views(source, model, steps=STEPS, people=FlagOne(), fit_images=4)
    monkeypatch.setattr(derive, "_shard", real)
    res = generate_views(source, model, steps=STEPS, people=FlagOne(), fit_images=4)
    assert res.resumed_shards == 1 and res.generated == 6 and audit(res.path).ok
    assert not any(p.name.endswith(".work") for p in res.path.parent.iterdir())
    with pytest.raises(GenViewError, match="other settings"):
        bad = res.path.with_name("other")
        monkeypatch.setattr(derive, "_shard", second_fails)  # third call: fails again, leaving the work folder
        calls.clear()
        calls.append("x")
        with pytest.raises(RuntimeError):
            generate_views(source, model, steps=STEPS, people=FlagOne(), fit_images=4, out_dir=bad)
        monkeypatch.setattr(derive, "_shard", real)
        generate_views(source, model, steps=STEPS, seed=1, people=FlagOne(), fit_images=4, out_dir=bad)


def test_cli_generates_with_the_source_people_filter_then_audits(source: Path, model: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """The command as a user runs it: the people filter is the source manifest's own (MTCNN here)."""
    pytest.importorskip("facenet_pytorch")
    from passkit.cli import main

    assert main(["views", "generate", str(source), "--model", str(model), "--steps", "2", "--fit-images", "4"]) == 0
    derived = source.with_name(source.name.replace("-", "-genview-", 1))
    assert "6 variation(s) released" in capsys.readouterr().out
    m = json.loads((derived / "manifest.json").read_text())
    assert [d["name"] for d in m["detectors"]] == ["mtcnn"]
    assert all(set(json.loads(g["json"])["scores"]) == {"mtcnn"} for _, g in _samples(derived))
    assert main(["audit", str(derived)]) == 0
    elsewhere = str(source.with_name("elsewhere"))
    assert main(["views", "generate", str(source), "--model", str(source), "--out", elsewhere]) == 2  # no model
    assert "no model_index.json" in capsys.readouterr().err

"""One bad candidate never ends its unit.

An exception raised while handling one candidate, in any of the unit's steps, ends that candidate
as `internal_error` (transient, so --retry-failed redoes it) and every other candidate exactly as a
run without the fault would; a rerun with the fault still there finishes too, and a --retry-failed
rerun without it gives the clean run's rows and staging files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from passkit import ledger, pipeline
from passkit.config import PipelineSpec
from passkit.pipeline import Unit, UnitRunner
from passkit.shards import iter_members
from tests.helpers.crawl import candidate, jpeg, spec

STEPS = ["gate", "reuse", "dedup", "fetch", "image", "people", "stage", "rows"]
N = 6
BAD = 2  # the candidate the fault hits


@dataclass
class _Result:
    """What PeopleFilter.score returns per image, for a filter that never finds anyone."""

    scores: dict[str, float] = field(default_factory=lambda: {"fake": 0.125})
    boxes: dict[str, list[list[float]]] = field(default_factory=lambda: {"fake": []})
    fired: list[str] = field(default_factory=list)
    review: list[str] = field(default_factory=list)

    @property
    def has_person(self) -> bool:
        return False

    @property
    def needs_review(self) -> bool:
        return False


class FakePeople:
    """A people filter without models: scores every image 0.125 and records the batch sizes."""

    skipped: list[tuple[str, str]] = []

    def __init__(self) -> None:
        self.batches: list[int] = []

    def describe(self) -> list[dict[str, object]]:
        return [{"name": "fake"}]

    def score(self, images: list) -> list[_Result]:
        self.batches.append(len(images))
        return [_Result() for _ in images]


def _runner() -> UnitRunner:
    """A runner with the people stage on (a fake filter), so every step has candidates to handle."""
    data = spec().canonical()
    data["people"] = {"enabled": True}
    runner = UnitRunner(PipelineSpec.model_validate(data))
    runner._people = FakePeople()
    return runner


def _candidates(server) -> list:
    for i in range(N):
        server.serve_bytes(f"/img/{i}.jpg", jpeg(500 + i, (120 + 8 * i, 90)))
    return [candidate(f"c{i}", server.url(f"/img/{i}.jpg")) for i in range(N)]


def _run(cands: list, units: Path, retry: bool = False) -> tuple[list[dict], dict[str, bytes]]:
    units.mkdir(parents=True, exist_ok=True)
    _runner().run(Unit(0, cands, retry=retry), units)
    tar, led = ledger.unit_paths(units, 0)
    return ledger.read_ledger(led).to_pylist(), {m.name: m.data for m in iter_members(tar)}


@pytest.fixture
def clean(http_server, tmp_path):
    cands = _candidates(http_server)
    rows, members = _run(cands, tmp_path / "clean")
    assert [r["status"] for r in rows] == ["kept"] * N
    return cands, rows, members


@pytest.mark.parametrize("step", STEPS)
def test_a_fault_in_one_candidate_ends_only_that_candidate(step, clean, tmp_path, monkeypatch):
    cands, clean_rows, clean_members = clean
    bad_key = cands[BAD].key
    monkeypatch.setattr(pipeline, "FAULTS", [(step, bad_key)])
    units = tmp_path / "faulty"
    for _ in range(2):  # the first run, then a plain rerun with the fault still there: neither crashes
        rows, members = _run(cands, units)
        bad = rows[BAD]
        assert (bad["status"], bad["reason"], bad["transient"]) == ("rejected", "internal_error", True)
        assert "InjectedFault" in bad["detail"] and bad_key in bad["detail"]
        assert bad["sha256"] is None
        for i, r in enumerate(rows):
            if i != BAD:
                assert r == clean_rows[i], f"row {i} changed by a fault in another candidate"
        others = {k: v for k, v in members.items() if not k.startswith(bad_key)}
        assert others == {k: v for k, v in clean_members.items() if not k.startswith(bad_key)}

    # Fixed (an upgrade): --retry-failed redoes the internal error and ends as the clean run did.
    monkeypatch.setattr(pipeline, "FAULTS", [])
    rows, members = _run(cands, units, retry=True)
    assert rows == clean_rows and members == clean_members


def test_a_people_batch_that_fails_is_scored_one_by_one(clean, tmp_path, monkeypatch):
    cands, clean_rows, _ = clean
    monkeypatch.setattr(pipeline, "FAULTS", [("people", cands[BAD].key)])
    runner = _runner()
    (tmp_path / "u").mkdir()
    runner.run(Unit(0, cands), tmp_path / "u")
    assert runner._people.batches == [1] * (N - 1)  # the batch failed (at BAD): the others one by one
    rows = ledger.read_ledger(ledger.unit_paths(tmp_path / "u", 0)[1]).to_pylist()
    assert [r["reason"] for r in rows] == [None] * BAD + ["internal_error"] + [None] * (N - BAD - 1)
    assert [r["scores"] for r in rows if r["status"] == "kept"] == [[("fake", 0.125)]] * (N - 1)


def test_text_parquet_cannot_store_ends_its_row_not_the_unit(http_server, tmp_path):
    """A lone surrogate (a JSON escape such as \\ud800 in a source's text) cannot be written as
    UTF-8: the staging JSON and the ledger row of that candidate fail, the unit's other rows are
    written."""
    cands = _candidates(http_server)
    cands[BAD].query = "broken \ud800 query"
    rows, members = _run(cands, tmp_path / "u")
    assert [r["status"] for r in rows].count("kept") == N - 1
    assert (rows[BAD]["reason"], rows[BAD]["transient"]) == ("internal_error", True)
    assert "UnicodeEncodeError" in rows[BAD]["detail"]
    assert not any(k.startswith(cands[BAD].key) for k in members)


def test_faults_parse_from_the_environment_form():
    assert pipeline._parse_faults("fetch:abc, people:k_1,,junk") == [("fetch", "abc"), ("people", "k_1")]
    assert pipeline._parse_faults("") == []


def test_text_that_is_not_unicode_is_rejected_where_candidates_enter_a_build(http_server, tmp_path, monkeypatch):
    """A lone surrogate in a source id or URL breaks the key, the unit's fingerprint and its ledger,
    which no per-row guard inside the unit can save: the build scrubs it on the way in, rejects that
    candidate as bad_encoding, and the rest of the unit is released."""
    import pyarrow.parquet as pq

    import passkit.sources as sources
    from passkit.build import build
    from tests.helpers.crawl import list_opener

    cands = _candidates(http_server)
    cands[BAD].source_id = "broken-\udc80-id"
    cands[BAD].url += "?\ud800"
    monkeypatch.setitem(sources._OPENERS, "demo", list_opener(cands))
    result = build(spec(unit_size=N), base=tmp_path)
    rows = pq.read_table(result.release.path / "rejected.parquet").to_pylist()
    assert [(r["stage"], r["reason"]) for r in rows] == [("source", "bad_encoding")]
    assert "source_id, url" in rows[0]["detail"] and rows[0]["source_id"] == "broken-?-id"
    assert result.release.kept == N - 1

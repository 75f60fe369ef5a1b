"""The release step's memory must not grow with the number of candidates.

A build of tens of millions of candidates ends in the release step, which must fit a worker-sized
machine whatever the candidate count. The work folders here come from the scale benchmark's
synthesiser (benchmarks/release_scale.py), which writes them through the pipeline's own functions;
the first tests prove that a build takes them as its own finished units, row for row.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from passkit import ledger, licenses
from passkit.config import load_spec
from passkit.pipeline import Unit, stage_settings
from passkit.records import Decision, Stage, Status
from passkit.shards import iter_members
from passkit.sources import open_source
from tests.helpers import ROOT


def _load_scale():
    """benchmarks/ is not a package: the synthesiser is loaded from its file."""
    path = ROOT / "benchmarks" / "release_scale.py"
    spec = importlib.util.spec_from_file_location("release_scale", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


scale = _load_scale()


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("scale") / "small"
    scale.synthesise(root, scale.Plan(candidates=2_500, kept=250, unit_size=512, workers=1), processes=2)
    return root


def test_synthesised_units_are_what_the_pipeline_would_write(small: Path) -> None:
    """Every unit's fingerprint is the one the build computes from the real url-list source, and
    every ledger row is the one ledger_row makes from the source's candidate (licence-refused rows
    are built by column in the synthesiser, so this is their proof); staged bytes match their rows."""
    spec = load_spec(small / scale.SPEC_NAME)
    settings = stage_settings(spec)
    policy = spec.license.build()
    units_dir = spec.work_dir() / "units"
    with open_source(spec.source) as src:
        cands = list(src.candidates())
    n_units = 0
    for u, lo in enumerate(range(0, len(cands), spec.work.unit_size)):
        n_units += 1
        unit = Unit(u, cands[lo : lo + spec.work.unit_size])
        assert ledger.unit_done(units_dir, unit, settings), f"unit {u} would be crawled again"
        tar_path, ledger_path = ledger.unit_paths(units_dir, u)
        rows = ledger.read_ledger(ledger_path).to_pylist()
        members = {m.name: m.data for m in iter_members(tar_path)}
        for i, (c, row) in enumerate(zip(unit.candidates, rows, strict=True)):
            g = licenses.gate(c, policy)
            if isinstance(g, tuple):
                want = ledger.ledger_row(u, i, c, Decision.reject(Stage.LICENSE, *g), None, None, False, {})
                assert row == want
                continue
            jpg, meta = members.pop(f"{c.key}.jpg"), json.loads(members.pop(f"{c.key}.json"))
            assert row["status"] == Status.KEPT and row["attribution"] == g.sentence
            assert row["sha256"] == meta["sha256"] == hashlib.sha256(jpg).hexdigest()
            assert row["phash"] == meta["phash"] and row["bytes"] == len(jpg)
            assert Image.open(io.BytesIO(jpg)).size == (row["width"], row["height"])
            image_fields = {"sha256", "source_sha256", "phash", "width", "height", "orig_width", "orig_height",
                            "bytes", "flat_fraction", "flat_colour"}
            want = ledger.ledger_row(u, i, c, Decision(Status.KEPT), g, None, False, {})
            assert {k: v for k, v in row.items() if k not in image_fields} == \
                   {k: v for k, v in want.items() if k not in image_fields}
        assert not members, f"unit {u} stages samples its ledger does not keep: {sorted(members)[:3]}"
    assert n_units == scale.Plan(2_500, 250, 512).units
    meta = pq.read_schema(ledger.unit_paths(units_dir, 0)[1]).metadata
    assert json.loads(meta[ledger.DETECTORS_META]) == {"detectors": [], "skipped": []}


def test_synthesised_release_has_the_planned_duplicates(small: Path) -> None:
    """A build resumes every unit (build_once raises otherwise); one kept sample in ten is a near
    copy that dedup removes, and no two samples share their bytes."""
    scale.build_once(small, small / "build.log")
    man = json.loads((scale.release_dir(small) / "manifest.json").read_text())
    reasons = man["counts"]["by_reason"]
    assert man["counts"]["candidates"] == 2_500
    assert "duplicate" not in reasons
    assert reasons["near_duplicate"] == 25
    assert man["counts"]["kept"] == 225


# Candidates and kept samples of the memory test, and the bound on the release step's peak RSS.
MEMORY_CANDIDATES, MEMORY_KEPT = 300_000, 1_000
PEAK_BOUND_MIB = 768


@pytest.mark.slow
def test_release_step_memory_is_flat(tmp_path: Path) -> None:
    """`passkit build` over finished units (the release step alone) stays under PEAK_BOUND_MIB at
    300,000 candidates: a guard against the release step holding rows again.

    Why this size: a step that holds ledger rows grows with candidates, kept or not (as Python
    dicts, about 3 KiB each: 1.3 GiB here, some 60 GiB at 20M candidates), while kept samples cost
    time (images to copy) but, streamed, no memory. So many candidates and few kept ones make any
    growth show at its cheapest: synthesis and build take about 30 s on 2 cores. Why this bound: the
    streaming step peaks near 250-290 MiB here as at 200,000 candidates (interpreter, pyarrow,
    DuckDB, one Parquet row group, the document templates); a row-holding step exceeds 768 MiB by
    far. Growth with the kept samples is guarded by tests/release/test_curate_scale.py."""
    root = tmp_path / "mem"
    scale.synthesise(root, scale.Plan(MEMORY_CANDIDATES, MEMORY_KEPT, unit_size=1024, workers=1), processes=2)
    m = scale.build_once(root, tmp_path / "build.log")
    print(f"release step at {MEMORY_CANDIDATES:,} candidates: peak RSS {m.peak_single_mib:.0f} MiB, "
          f"{m.wall:.1f} s")
    assert m.peak_single_mib < PEAK_BOUND_MIB, (
        f"the release step peaked at {m.peak_single_mib:.0f} MiB for {MEMORY_CANDIDATES:,} candidates "
        f"(bound {PEAK_BOUND_MIB} MiB): its memory grows with the candidate count")


@pytest.mark.slow
def test_killed_release_restarts_cleanly(small: Path, tmp_path: Path) -> None:
    """A release step killed while writing shards leaves nothing under the release's name, and the
    rerun writes the same bytes as an uninterrupted build."""
    env = {**scale.passkit_env(), "SOURCE_DATE_EPOCH": "1767225600"}
    release = scale.release_dir(small)
    shutil.rmtree(release, ignore_errors=True)
    assert subprocess.run(scale.passkit_cmd("build", str(small / scale.SPEC_NAME)), env=env,
                          capture_output=True).returncode == 0
    want = _digests(release)
    shutil.rmtree(release)

    proc = subprocess.Popen(scale.passkit_cmd("build", str(small / scale.SPEC_NAME)), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if any(p.name.endswith(".tar") for p in release.parent.glob(f".{release.name}.partial-*/shards/*")):
                break
            time.sleep(0.002)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    assert proc.returncode != 0, "the build finished before it could be killed"
    assert not release.exists(), "a killed release step left files under the release's name"
    assert list(release.parent.glob(f".{release.name}.partial-*")), "the kill came before the release step"

    assert subprocess.run(scale.passkit_cmd("build", str(small / scale.SPEC_NAME)), env=env,
                          capture_output=True).returncode == 0
    assert _digests(release) == want
    assert not list(release.parent.glob(f".{release.name}.*")), "the rerun left the killed step's files"


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}

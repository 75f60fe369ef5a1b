"""The demo end to end, through the real command: build, outcomes, audit, tampering, readers, kill."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from passkit.demo.catalog import expected
from passkit.shards import write_tar
from tests.helpers import ROOT

PASSKIT = [sys.executable, "-m", "passkit.cli"]
EPOCH = "1767225600"  # pins manifest.created so whole releases compare byte for byte

pytestmark = pytest.mark.slow


def _demo_detectors() -> list[str]:
    """The detectors the default people ensemble runs here (see passkit.config.PeopleSpec)."""
    from passkit.config import PeopleSpec
    from passkit.filters.people import PeopleFilter

    return PeopleFilter(PeopleSpec(), threads=1).names


DEMO_DETECTORS = _demo_detectors()


def run(args: list[str], cwd: Path, check: bool = True, **kw) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SOURCE_DATE_EPOCH": EPOCH, "COLUMNS": "120"}
    p = subprocess.run([*PASSKIT, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"passkit {' '.join(args)} exited {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def write_spec(dirpath: Path, **overrides) -> Path:
    spec = yaml.safe_load((ROOT / "pipelines" / "demo.yaml").read_text())
    for section, values in overrides.items():
        spec[section] = {**spec.get(section, {}), **values}
    dirpath.mkdir(parents=True, exist_ok=True)
    p = dirpath / "demo.yaml"
    p.write_text(yaml.safe_dump(spec))
    return p


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """The demo release, built once by `passkit build` exactly as `make demo` does."""
    d = tmp_path_factory.mktemp("demo")
    shutil.copytree(ROOT / "pipelines", d / "pipelines")
    p = run(["build", "pipelines/demo.yaml"], cwd=d)
    # the default ensemble is yolox_nano + picodet_s_416 + yunet when the weights
    # are installed (PASSKIT_MODELS, as `make test` sets), and MTCNN + HOG stand in when they are not
    assert f"people detectors that ran: {DEMO_DETECTORS[0]}" in p.stdout
    return d / "releases" / "demo-1.0.0"


def copy_release(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def outcomes(release: Path) -> dict[str, str]:
    out = {r["source_id"]: "kept" for r in pq.read_table(release / "index.parquet").to_pylist()}
    stage_to_expect = {"people": "people", "dedup": "duplicate"}
    reason_to_expect = {
        "license_not_allowed": "license", "license_unknown": "license", "attribution_incomplete": "attribution",
        "decode_error": "decode", "not_image": "not_image", "http_404": "http_404", "optout": "optout",
    }
    for r in pq.read_table(release / "rejected.parquet").to_pylist():
        out[r["source_id"]] = stage_to_expect.get(r["stage"]) or reason_to_expect.get(r["reason"], r["reason"])
    return out


def test_every_catalog_entry_ends_as_promised(demo: Path):
    assert outcomes(demo) == expected("by-or-public-domain")
    m = json.loads((demo / "manifest.json").read_text())
    assert m["counts"]["candidates"] == len(expected())
    assert m["counts"]["kept"] == sum(1 for v in expected().values() if v == "kept")
    assert {d["name"] for d in m["detectors"]} == set(DEMO_DETECTORS)
    # the default ensemble (or its stand-ins without weights) is a measured one: the manifest says how well
    pm = m["people_measurement"]
    assert pm["status"] == "measured" and pm["cv"]["recall"] > 0.4 and "person_dev_coco" in pm["dataset"], pm
    # and the documents a reader sees say it: the dataset card and croissant.json's RAI analysis
    said = f"{pm['cv']['recall']:.1%} of photos with a person rejected outright"
    assert said in (demo / "README.md").read_text()
    assert said in json.loads((demo / "croissant.json").read_text())["rai:dataAnnotationAnalysis"]


def test_people_rejections_keep_scores_and_duplicate_appears_once(demo: Path):
    rej = {r["source_id"]: r for r in pq.read_table(demo / "rejected.parquet").to_pylist()}
    for sid, exp in expected().items():
        if exp == "people":
            scores = dict(rej[sid]["scores"])
            assert set(DEMO_DETECTORS) <= set(scores) and max(scores.values()) > 0.5, (sid, scores)
    index = pq.read_table(demo / "index.parquet").to_pylist()
    assert len({r["sha256"] for r in index}) == len(index)
    dup = next(r for r in rej.values() if r["reason"] == "duplicate")
    assert dup["sha256"] in {r["sha256"] for r in index}


def test_samples_carry_attribution_and_no_metadata(demo: Path):
    from io import BytesIO

    from PIL import Image

    with tarfile.open(next((demo / "shards").glob("*.tar"))) as tar:
        names = tar.getnames()
        assert all(n.count(".") == 1 for n in names)
        jpg = tar.extractfile(names[0]).read()
        meta = json.loads(tar.extractfile(names[1]).read())
    assert names[0].endswith(".jpg") and names[1] == names[0].replace(".jpg", ".json")
    for field in ("title", "creator", "landing_url", "license", "license_url", "attribution", "modification",
                  "sha256", "phash", "scores", "source_url"):
        assert meta[field], field
    im = Image.open(BytesIO(jpg))
    assert max(im.size) <= 512 and not im.getexif()


def test_clean_release_audits_ok_and_info(demo: Path):
    p = run(["audit", str(demo), "--json"], cwd=demo.parent)
    report = json.loads(p.stdout)
    assert report["ok"] is True and report["findings"] == []
    info = json.loads(run(["info", str(demo), "--json"], cwd=demo.parent).stdout)
    assert info["counts"]["kept"] == info["samples"] > 0


def test_audit_names_the_sample_after_a_byte_flip(demo: Path, tmp_path: Path):
    rel = copy_release(demo, tmp_path / "r")
    shard = sorted((rel / "shards").glob("*.tar"))[0]
    with tarfile.open(shard) as tar:
        victim = next(m for m in tar.getmembers() if m.name.endswith(".jpg"))
    data = bytearray(shard.read_bytes())
    data[victim.offset_data + victim.size // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    p = run(["audit", str(rel)], cwd=tmp_path, check=False)
    assert p.returncode == 1
    assert victim.name.split(".")[0] in p.stdout, p.stdout


def test_audit_names_the_sample_after_a_license_edit(demo: Path, tmp_path: Path):
    rel = copy_release(demo, tmp_path / "r")
    shard = sorted((rel / "shards").glob("*.tar"))[-1]
    members = []
    victim = None
    with tarfile.open(shard) as tar:
        for m in tar.getmembers():
            data = tar.extractfile(m).read()
            if victim is None and m.name.endswith(".json"):
                meta = json.loads(data)
                meta["license"] = "cc-by-nc-2.0"
                data = json.dumps(meta, sort_keys=True).encode()
                victim = meta["key"]
            members.append((m.name, data))
    write_tar(shard, members)
    p = run(["audit", str(rel), "--json"], cwd=tmp_path, check=False)
    assert p.returncode == 1
    findings = json.loads(p.stdout)["findings"]
    assert any(f.get("key") == victim for f in findings), findings


def test_demo_release_has_a_valid_croissant_description(demo: Path):
    pytest.importorskip("mlcroissant", reason="pip install -e '.[dev]' installs mlcroissant")
    from tests.release.test_croissant import validate

    m = json.loads((demo / "manifest.json").read_text())
    assert "croissant.json" in m["files"]
    p = validate(demo / "croissant.json")
    assert p.returncode == 0, p.stderr
    doc = json.loads((demo / "croissant.json").read_text())
    assert doc["version"] == "1.0.0" and doc["rai:dataCollectionType"] == ["Web API"]
    assert {d["contentUrl"] for d in doc["distribution"] if d["@type"] == "cr:FileObject"} >= {
        s["path"] for s in m["shards"]}


def test_demo_release_published_to_s3_audits_and_streams(demo: Path, tmp_path: Path):
    # `make demo`'s release, published to a moto S3 server on 127.0.0.1, audited and streamed there
    from passkit.stream import loader
    from tests.helpers.s3 import moto_s3

    with moto_s3(tmp_path):
        url = "s3://releases/demo-1.0.0"
        run(["publish", str(demo), url], cwd=tmp_path)
        report = json.loads(run(["audit", url, "--json"], cwd=tmp_path).stdout)
        assert report["ok"] is True and report["release"] == url
        m = json.loads((demo / "manifest.json").read_text())
        seen = sum(len(metas) for _, metas in loader(url, batch_size=4, cache_dir=tmp_path / "cache"))
        assert seen == m["counts"]["kept"]
        again = run(["publish", str(demo), url, "--json"], cwd=tmp_path)
        assert json.loads(again.stdout)["uploaded"] == []


def test_plain_webdataset_reads_the_release(demo: Path):
    import webdataset as wds

    m = json.loads((demo / "manifest.json").read_text())
    urls = [str(demo / s["path"]) for s in m["shards"]]
    n = 0
    for sample in wds.WebDataset(urls, shardshuffle=False).decode("pil"):
        assert sample["jpg"].mode == "RGB" and sample["json"]["license"]
        n += 1
    assert n == m["counts"]["kept"]


def test_hugging_face_datasets_reads_the_release(demo: Path):
    import datasets

    m = json.loads((demo / "manifest.json").read_text())
    ds = datasets.load_dataset(
        "webdataset", data_files={"train": [str(demo / s["path"]) for s in m["shards"]]}, split="train"
    )
    assert len(ds) == m["counts"]["kept"]
    row = ds[0]
    assert row["jpg"].size[0] > 0 and row["json"]["attribution"]


def test_passkit_stream_loader_yields_the_release(demo: Path):
    from passkit.stream import loader

    m = json.loads((demo / "manifest.json").read_text())
    seen = 0
    for images, metas in loader(demo, batch_size=4):
        assert images.dtype.is_floating_point is False and images.shape[0] == len(metas)
        seen += len(metas)
    assert seen == m["counts"]["kept"]


def test_genview_on_the_demo_release_generates_audits_credits_and_trains(demo: Path, tmp_path: Path):
    """GenView end to end through the commands, on a copy of the demo release: `views generate` with a tiny
    random-weight unCLIP pipeline (tests/helpers/unclip.py: the mechanics, not the images' quality), the
    derived release audited clean and crediting both the work and the modification, then `validate
    --genview --quality-loss` on the smoke preset, recorded in the validation entry."""
    pytest.importorskip("diffusers")
    pytest.importorskip("transformers")
    import csv

    from passkit.shards import iter_samples
    from tests.helpers.unclip import build_tiny_unclip

    src = copy_release(demo, tmp_path / "releases" / demo.name)  # validate writes into the release it trains on
    model = build_tiny_unclip(tmp_path / "tiny-unclip")
    p = run(["views", "generate", str(src), "--model", str(model), "--steps", "2", "--fit-images", "8"], cwd=tmp_path)
    derived = src.with_name("demo-genview-1.0.0")
    assert f"{derived}:" in p.stdout, p.stdout
    report = json.loads(run(["audit", str(derived), "--json"], cwd=tmp_path).stdout)
    assert report["ok"] is True and report["findings"] == [], report["findings"]

    m = json.loads((derived / "manifest.json").read_text())
    kept = json.loads((src / "manifest.json").read_text())["counts"]["kept"]
    # the people filter ran again on every variation, with the source's detectors
    assert m["counts"]["candidates"] == kept and m["counts"]["kept"] + m["counts"]["rejected"] == kept
    assert [d["name"] for d in m["detectors"]] == DEMO_DETECTORS
    assert m["source"]["kind"] == "genview" and m["source"]["release"] == "demo-1.0.0"
    src_meta = {k: json.loads(g["json"]) for e in json.loads((src / "manifest.json").read_text())["shards"]
                for k, g in iter_samples(src / e["path"])}
    samples = {k: json.loads(g["json"]) for e in m["shards"] for k, g in iter_samples(derived / e["path"])}
    assert len(samples) == m["counts"]["kept"] > 0
    for key, meta in samples.items():
        gv = meta["genview"]
        orig = src_meta[gv["source_key"]]
        assert key == gv["source_key"] + "-gv" and gv["source_sha256"] == orig["sha256"]
        assert set(meta["scores"]) == set(DEMO_DETECTORS)  # scored on the generated image itself
        for f in ("title", "creator", "source_url", "landing_url", "license", "license_url", "attribution"):
            assert meta[f] == orig[f] and meta[f], f  # the original work, credited in full
        assert meta["modification"].startswith("AI-generated variation of the original work")
        assert gv["model"] == "tiny-unclip" and gv["noise_level"] in (0, 100, 200, 300, 400)
        assert isinstance(gv["seed"], int)
    index = {r["key"]: r for r in pq.read_table(derived / "index.parquet").to_pylist()}
    rows = {r["key"]: r for r in csv.DictReader((derived / "attribution.csv").open(encoding="utf-8"))}
    assert set(index) == set(rows) == set(samples)
    for key, meta in samples.items():
        for table in (index[key], rows[key]):
            assert all(table[f] == meta[f] for f in ("title", "creator", "source_url", "license_url", "attribution"))
            assert table["modification"] == meta["modification"] and "tiny-unclip" in table["modification"]

    # 6 of the smoke preset's 20 steps keep the test short; its momentum scorer refits every 32 images (4 steps)
    run(["validate", str(src), "--recipe", "moco_v2", "--preset", "smoke", "--genview", str(derived),
         "--quality-loss", "--steps", "6", "--device", "cpu", "--work", str(tmp_path / "work")], cwd=tmp_path)
    entry = json.loads((src / "manifest.json").read_text())["validation"][-1]
    assert entry["verdict"] == "pass" and entry["preset"] == "smoke"
    gv, ql = entry["settings"]["genview"], entry["settings"]["quality_loss"]
    assert gv["derived_release"] == "demo-genview-1.0.0" and gv["prob"] == 1.0
    assert ql["scorer"] == "momentum" and ql["pca"]["fit"] == "training batches" and ql["pca"]["fits"] >= 1
    assert (src / ql["pca"]["file"]).is_file()


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_sigkill_mid_build_then_rerun_is_byte_identical(tmp_path: Path):
    # Small units and one worker so that the kill lands with some units done and some not.
    spec_args = {"work": {"unit_size": 3, "workers": 1}}
    clean_dir, killed_dir = tmp_path / "clean", tmp_path / "killed"
    run(["build", str(write_spec(clean_dir, **spec_args))], cwd=clean_dir)

    spec = write_spec(killed_dir, **spec_args)
    env = {**os.environ, "SOURCE_DATE_EPOCH": EPOCH}
    proc = subprocess.Popen([*PASSKIT, "build", str(spec)], cwd=killed_dir, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    units = killed_dir / "work" / "demo" / "units"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list(units.glob("unit-*.parquet"))) < 2:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(list(units.glob("unit-*.parquet")))
    assert 2 <= done_before < 8, "the kill should land part way through the 8 units"
    assert not (killed_dir / "releases" / "demo-1.0.0").exists()

    p = run(["build", str(spec)], cwd=killed_dir)
    assert f"({done_before})" in p.stdout or f"({done_before + 1})" in p.stdout  # finished units were skipped
    assert _tree(killed_dir / "releases" / "demo-1.0.0") == _tree(clean_dir / "releases" / "demo-1.0.0")

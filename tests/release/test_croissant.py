"""croissant.json: valid Croissant 1.1 for mlcroissant, records that load with the right licence and
creator, the release's files with their checksums, deterministic bytes, and an audit that notices
when it is tampered with. Licence ids in the card's header and LICENSES.md."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml

from passkit.audit import audit
from passkit.release import card
from passkit.release.croissant import CONTEXT, croissant, rai
from passkit.release.documents import IndexSummary
from passkit.shards import sha256_file
from tests.helpers.releases import load_manifest, save_manifest
from tests.helpers.staging import Item, basic_items, staged_release, texture

EPOCH = "1767225600"
mlc = pytest.importorskip("mlcroissant", reason="pip install -e '.[dev]' installs mlcroissant")


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOURCE_DATE_EPOCH", EPOCH)
        return staged_release(tmp_path_factory.mktemp("croissant"), basic_items(7) + [Item("face", texture(60), people=0.97)])


def _doc(release: Path) -> dict[str, Any]:
    return json.loads((release / "croissant.json").read_text(encoding="utf-8"))


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    """`mlcroissant validate --jsonld PATH`, the command mlcroissant installs (its module where the script is not
    on this interpreter's bin folder)."""
    cli = Path(sys.executable).with_name("mlcroissant")
    cmd = [str(cli), "validate"] if cli.exists() else [sys.executable, "-m", "mlcroissant.scripts.validate"]
    return subprocess.run([*cmd, "--jsonld", str(path)], capture_output=True, text=True, timeout=120)


def test_mlcroissant_validate_passes_and_fails_on_a_broken_description(release: Path, tmp_path: Path) -> None:
    ok = validate(release / "croissant.json")
    assert ok.returncode == 0, ok.stderr
    assert "error" not in ok.stderr.lower().replace("0 error", "")
    doc = _doc(release)
    samples = next(r for r in doc["recordSet"] if r["@id"] == "samples")
    samples["field"][0]["source"] = {"fileObject": {"@id": "no-such-file.parquet"}, "extract": {"column": "key"}}
    (tmp_path / "croissant.json").write_text(json.dumps(doc), encoding="utf-8")
    bad = validate(tmp_path / "croissant.json")
    assert bad.returncode != 0 and "no-such-file.parquet" in bad.stderr


def test_records_load_through_mlcroissant_with_the_index_licence_and_creator(
        release: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from etils import epath
    from mlcroissant._src.operation_graph.operations import extract

    # mlcroissant unpacks the tars into its cache (~/.cache/croissant), keyed by contentUrl: a folder per test
    monkeypatch.setattr(extract, "EXTRACT_PATH", epath.Path(tmp_path / "extract"))
    ds = mlc.Dataset(jsonld=str(release / "croissant.json"))

    def text(v: Any) -> Any:
        return v.decode() if isinstance(v, bytes) else v

    got = {text(r["samples/key"]): {c: text(r[f"samples/{c}"]) for c in
                                    ("license_url", "license_spdx", "license_id", "creator", "attribution", "source_url")}
           for r in ds.records("samples")}
    index = pq.read_table(release / "index.parquet").to_pylist()
    want = {r["key"]: {"license_url": r["license_url"], "license_spdx": r["license_spdx"], "license_id": r["license"],
                       "creator": r["creator"], "attribution": r["attribution"], "source_url": r["source_url"]}
            for r in index}
    assert got == want and len(got) == 7
    assert {r["license_spdx"] for r in index} == {"CC-BY-2.0", "CC-BY-4.0", "CC0-1.0"}
    images = {text(r["image_files/key"]): r["image_files/image"].size for r in ds.records("image_files")}
    assert images == {r["key"]: (r["width"], r["height"]) for r in index}
    lic = {r["licenses/spdx"]: r["licenses/images"] for r in ds.records("licenses")}
    assert lic == {"CC-BY-2.0": 2, "CC-BY-4.0": 3, "CC0-1.0": 2}


def test_croissant_names_every_shard_and_table_with_its_checksum(release: Path) -> None:
    from mlcroissant._src.core.context import Context, CroissantVersion
    from mlcroissant._src.core.rdf import make_context

    doc, m = _doc(release), load_manifest(release)
    ctx = Context()
    ctx.conforms_to = CroissantVersion.V_1_1
    assert {**make_context(ctx), "prov": "http://www.w3.org/ns/prov#"} == CONTEXT  # mlcroissant's own, no warning
    assert doc["conformsTo"][0] == "http://mlcommons.org/croissant/1.1"
    assert (doc["name"], doc["version"]) == (m["name"], m["version"])
    assert doc["datePublished"] == doc["dateCreated"] == m["created"] == "2026-01-01T00:00:00Z"
    assert doc["license"] == ["https://creativecommons.org/licenses/by/2.0/", "https://creativecommons.org/licenses/by/4.0/",
                              "https://creativecommons.org/publicdomain/zero/1.0/"]
    files = {d["contentUrl"]: d for d in doc["distribution"] if d["@type"] == "cr:FileObject"}
    want = {s["path"]: (s["sha256"], s["bytes"]) for s in m["shards"]}
    for name in ("index.parquet", "rejected.parquet", "attribution.csv"):
        want[name] = (m["files"][name]["sha256"], m["files"][name]["bytes"])
    assert {k: (v["sha256"], int(v["contentSize"].split()[0])) for k, v in files.items()} == want
    assert "croissant.json" in m["files"]
    images = next(d for d in doc["distribution"] if d["@type"] == "cr:FileSet")
    assert images["containedIn"] == [{"@id": s["path"]} for s in m["shards"]]
    fields = {f["@id"]: f for r in doc["recordSet"] for f in r["field"]}
    assert fields["samples/license_url"]["equivalentProperty"] == "sc:license"
    assert fields["samples/creator"]["equivalentProperty"] == "sc:creator"
    assert fields["samples/attribution"]["equivalentProperty"] == "sc:creditText"
    assert fields["samples/source_url"]["equivalentProperty"] == "prov:wasDerivedFrom"
    assert "1 of 8 candidates" in doc["rai:dataCollectionMissingData"]
    assert "mtcnn (threshold 0.9" in " ".join(doc["rai:dataPreprocessingProtocol"])


def test_croissant_bytes_are_reproducible(release: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    again = staged_release(tmp_path, basic_items(7) + [Item("face", texture(60), people=0.97)])
    assert (again / "croissant.json").read_bytes() == (release / "croissant.json").read_bytes()


def test_audit_catches_a_tampered_croissant(release: Path, tmp_path: Path) -> None:
    rel = Path(shutil.copytree(release, tmp_path / "r"))
    assert audit(rel).ok
    doc = _doc(rel)
    shard = next(d for d in doc["distribution"] if d["@type"] == "cr:FileObject")
    shard["sha256"] = "0" * 64
    (rel / "croissant.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    assert audit(rel).counts() == {"croissant_mismatch": 1, "file_sha256": 1}
    # who also re-hashes croissant.json in the manifest is still caught: it names another shard's sha256
    m = load_manifest(rel)
    m["files"]["croissant.json"] = {"sha256": sha256_file(rel / "croissant.json"),
                                    "bytes": (rel / "croissant.json").stat().st_size}
    save_manifest(rel, m)
    report = audit(rel)
    assert report.counts() == {"croissant_mismatch": 1}
    assert shard["contentUrl"] in report.findings[0].message


def test_audit_catches_a_wrong_spdx_id_in_the_index(release: Path, tmp_path: Path) -> None:
    import pyarrow as pa

    rel = Path(shutil.copytree(release, tmp_path / "r"))
    t = pq.read_table(rel / "index.parquet")
    spdx = t.column("license_spdx").to_pylist()
    spdx[2] = "CC-BY-NC-4.0"
    t = t.set_column(t.schema.get_field_index("license_spdx"), "license_spdx", pa.array(spdx, pa.string()))
    pq.write_table(t, rel / "index.parquet")
    m = load_manifest(rel)
    m["files"]["index.parquet"] = {"sha256": sha256_file(rel / "index.parquet"), "bytes": (rel / "index.parquet").stat().st_size}
    save_manifest(rel, m)
    report = audit(rel)
    assert report.counts().get("index_license_spdx") == 1
    assert report.by_code("index_license_spdx")[0].key == t.column("key")[2].as_py()


# ----------------------------------------------------------------------------- the card's licence header


@pytest.mark.parametrize(("ids", "want"), [
    (["cc-by-2.0"], {"license": "cc-by-2.0"}),
    (["cc-by-2.0", "cc0-1.0"], {"license": ["cc-by-2.0", "cc0-1.0"]}),
    (["pdm-1.0"], {"license": "other", "license_name": "cc-pdm-1.0",
                   "license_link": "https://creativecommons.org/publicdomain/mark/1.0/"}),
    (["cc-by-4.0", "cc-by-2.0-jp"], {"license": ["cc-by-4.0", "other"], "license_name": "licenseref-cc-by-2.0-jp",
                                     "license_link": "https://creativecommons.org/licenses/by/2.0/jp/"}),
    (["pdm-1.0", "cc-by-3.0-de"], {"license": "other", "license_name": "mixed-cc", "license_link": "LICENSES.md"}),
    ([], {"license": "other", "license_name": "mixed-cc", "license_link": "LICENSES.md"}),
])
def test_card_header_uses_hub_ids_and_names_the_others(ids: list[str], want: dict[str, Any]) -> None:
    assert card._license_header(ids) == want


def test_card_and_licenses_md_of_a_release(release: Path) -> None:
    header = yaml.safe_load((release / "README.md").read_text(encoding="utf-8").split("---\n")[1])
    assert header["license"] == ["cc-by-2.0", "cc-by-4.0", "cc0-1.0"] and "license_name" not in header
    lic = (release / "LICENSES.md").read_text(encoding="utf-8")
    assert "| CC BY 2.0 | `cc-by-2.0` | `CC-BY-2.0` | 2 |" in lic


def test_rai_reports_the_review_and_spot_checks() -> None:
    m = {"counts": {"candidates": 10, "kept": 6, "by_stage": {"people": 3}, "by_reason": {"people": 3, "http_404": 1}},
         "source": {"kind": "openverse"}, "policy": {"name": "cc-by", "families": ["by"]},
         "detectors": [{"name": "yolox_nano", "threshold": 0.15, "weights": "yolox_nano.onnx", "sha256": "ab" * 32}],
         "review": {"queued": 2, "verified_no_person": 1, "confirmed_person": 1, "spot_checked": 4, "spot_found_person": 1},
         "spec": {"fetch": {"contact": "mailto:data@example.org"}}, "removals": [{"key": "k", "reason": "asked"}]}
    r = rai(m)
    assert "Humans spot-checked 4 kept image(s) and found a person in 1 (25.0%)" in r["rai:dataLimitations"]
    assert "confirmed_person 1" in r["rai:dataAnnotationAnalysis"] and "queued 2" in r["rai:dataAnnotationAnalysis"]
    assert r["rai:dataCollectionType"] == ["Web API"]
    assert "1 sample(s) removed so far" in r["rai:dataReleaseMaintenancePlan"]
    assert "mailto:data@example.org" in r["rai:dataReleaseMaintenancePlan"]
    assert "http_404 1" in r["rai:dataCollectionMissingData"] and "4 of 10" in r["rai:dataCollectionMissingData"]
    doc = croissant({"name": "x", "version": "1.0.0", "release": "x-1.0.0", "created": "2026-01-01T00:00:00Z", **m},
                    IndexSummary(), {})
    assert doc["license"] == [] and doc["rai:machineAnnotationTools"] == [f"yolox_nano (weights yolox_nano.onnx, sha256 {'ab' * 32})"]


def test_a_release_from_before_license_spdx_gets_documents_that_still_load(release: Path, tmp_path: Path) -> None:
    # A takedown of an older release regenerates its documents from an index without license_spdx:
    # croissant.json describes only the columns there, attribution.csv derives the SPDX id from `license`.
    import csv

    from passkit.release.attribution import write_csv
    from passkit.release.croissant import write_croissant
    from passkit.release.documents import iter_rows, summarize_index

    rel = Path(shutil.copytree(release, tmp_path / "r"))
    pq.write_table(pq.read_table(rel / "index.parquet").drop_columns(["license_spdx"]), rel / "index.parquet")
    write_croissant(rel, load_manifest(rel), summarize_index(rel / "index.parquet", []))
    records = list(mlc.Dataset(jsonld=str(rel / "croissant.json")).records("samples"))
    assert len(records) == 7 and "samples/license_spdx" not in records[0] and records[0]["samples/license_url"]
    write_csv(rel / "attribution.csv", iter_rows(rel / "index.parquet", ["key", "license"]))
    with open(rel / "attribution.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert {r["license_spdx"] for r in rows} == {"CC-BY-2.0", "CC-BY-4.0", "CC0-1.0"}

"""Folder reader: images with sidecar JSON, served on 127.0.0.1 for the fetch stage; a small build."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow.parquet as pq
import requests
from PIL import Image

from passkit.config import parse_spec
from passkit.sources import open_source
from passkit.sources.folder_spec import FolderSourceSpec


def _png(seed: int) -> bytes:
    y, x = np.mgrid[0:120, 0:150]
    img = np.stack([(x * 2 + seed * 50) % 255, (y * 2) % 255, (x + y) % 255], -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    return buf.getvalue()


def _tree(root):
    (root / "sub").mkdir(parents=True)
    (root / "a.png").write_bytes(_png(1))
    (root / "a.png.json").write_text(json.dumps({"title": "Pattern A", "creator": "<b>Ann</b>",
                                                  "landing_url": "https://ex.org/a", "license": "CC BY 4.0"}))
    (root / "sub" / "b.png").write_bytes(_png(2))
    (root / "sub" / "b.json").write_text(json.dumps({"id": "bee", "title": "Pattern B", "creator": "Bo",
                                                      "landing_url": "https://ex.org/b",
                                                      "license_url": "https://creativecommons.org/licenses/by-nc/4.0/"}))
    (root / "sub" / "c.png").write_bytes(_png(3))  # no sidecar
    (root / "sub" / "d.png").write_bytes(_png(4))
    (root / "sub" / "d.json").write_text("{broken")
    (root / "notes.txt").write_text("not an image")


def test_candidates_and_file_server(tmp_path):
    _tree(tmp_path / "imgs")
    with open_source(FolderSourceSpec(path=str(tmp_path / "imgs"), port=0)) as src:
        cands = list(src.candidates())
        got = [(c.source_id, c.error[0] if c.error else None) for c in cands]
        assert got == [("a.png", None), ("bee", None), ("sub/c.png", "missing_sidecar"), ("sub/d.png", "bad_sidecar")]
        a = cands[0]
        assert a.license == "CC BY 4.0" and a.creator == "<b>Ann</b>" and a.url.startswith("http://127.0.0.1:")
        assert requests.get(a.url, timeout=5).content == (tmp_path / "imgs" / "a.png").read_bytes()
        assert requests.get(a.url.rsplit("/", 1)[0] + "/notes.txt", timeout=5).status_code == 404
        assert requests.get(a.url.rsplit("/", 1)[0] + "/../a.png.json", timeout=5).status_code == 404
        assert src.describe()["stats"] == {"images": 4, "malformed": 2}
    with open_source(FolderSourceSpec(path=str(tmp_path / "imgs"), port=0, defaults={"provider": "me"})) as src:
        c = {x.source_id: x for x in src.candidates()}["sub/c.png"]
        assert c.error is None and c.provider == "me"  # defaults stand in for a missing sidecar


def test_folder_build(tmp_path):
    from passkit.build import build

    _tree(tmp_path / "imgs")
    spec = parse_spec({
        "name": "fo", "version": "1",
        "source": {"kind": "folder", "path": str(tmp_path / "imgs"), "port": 0},
        "fetch": {"robots": False, "allow_private": ["127.0.0.1"], "retries": 0},
        "people": {"enabled": False},
        "work": {"unit_size": 2, "workers": 1},
    })
    build(spec, base=tmp_path)
    rel = spec.release_dir(tmp_path)
    kept = pq.read_table(rel / "index.parquet").to_pylist()
    rej = {r["source_id"]: r["reason"] for r in pq.read_table(rel / "rejected.parquet").to_pylist()}
    assert [(r["source_id"], r["creator"], r["license"]) for r in kept] == [("a.png", "Ann", "cc-by-4.0")]
    assert rej == {"bee": "license_not_allowed", "sub/c.png": "missing_sidecar", "sub/d.png": "bad_sidecar"}

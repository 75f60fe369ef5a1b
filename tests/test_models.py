"""`passkit models list | verify | fetch`: pinned weights fetched from a mirror, checked, never half-written."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from passkit import models
from passkit.cli import main


@pytest.fixture
def mirror(http_server, models_dir: Path):
    """A local mirror of the YuNet and Yolo-Fastest files, laid out like the models folder."""
    for name in ("yunet", "yolo_fastest_body"):
        for f in models.get(name).files:
            http_server.serve_bytes(f"/m/{f.path}", (models_dir / f.path).read_bytes(), "application/octet-stream")
    return http_server


def test_fetch_from_a_mirror_verifies_and_is_idempotent(mirror, tmp_path):
    res = models.fetch("yunet", tmp_path, mirror=mirror.url("/m"))
    assert res == {f.path: "fetched" for f in models.get("yunet").files}
    assert models.find("yunet", tmp_path) == tmp_path / "yunet" / "yunet_n_640_640.onnx"
    assert set(models.verify("yunet", tmp_path).values()) == {"ok"}
    hits = dict(mirror.hits)
    again = models.fetch("yunet", tmp_path, mirror=mirror.url("/m"))
    assert set(again.values()) == {"present"} and mirror.hits == hits  # nothing downloaded twice
    assert not list(tmp_path.rglob(".*part*"))


def test_fetch_refuses_wrong_bytes_and_leaves_no_file(http_server, tmp_path):
    f = models.get("yunet").main
    http_server.serve_bytes(f"/m/{f.path}", b"not the model", "application/octet-stream")
    with pytest.raises(models.FetchError, match="is not the pinned"):
        models.fetch("yunet", tmp_path, mirror=http_server.url("/m"))
    assert not (tmp_path / f.path).exists() and not list(tmp_path.rglob("*.part*"))


def test_fetch_replaces_a_corrupt_file(mirror, tmp_path):
    p = tmp_path / models.get("yunet").main.path
    p.parent.mkdir(parents=True)
    p.write_bytes(b"truncated")
    models.fetch("yunet", tmp_path, mirror=mirror.url("/m"))
    assert models.find("yunet", tmp_path) == p


def test_fetch_without_network_says_so(tmp_path):
    with socket.socket() as s:  # a port nobody listens on: the connection is refused like on an offline box
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(models.FetchError) as ei:
        models.fetch("yolox_nano", tmp_path, mirror=f"http://127.0.0.1:{port}", timeout=2)
    msg = str(ei.value)
    assert "no internet" in msg and models.ENV_VAR in msg and "--mirror" in msg
    assert models.fetch("mtcnn", tmp_path) == {"(package)": "ships inside facenet-pytorch; nothing to fetch"}


def test_cli_list_verify_fetch(mirror, models_dir, tmp_path, capsys):
    assert main(["models", "verify", "--dir", str(tmp_path)]) == 0  # nothing there yet: reported, not failed
    assert main(["models", "verify", "yunet", "--dir", str(tmp_path)]) == 1  # asked for and missing
    capsys.readouterr()
    assert main(["models", "fetch", "yunet", "yolo_fastest_body", "--dir", str(tmp_path),
                 "--mirror", mirror.url("/m")]) == 0
    out = capsys.readouterr().out
    assert "fetched: yunet yunet/yunet_n_640_640.onnx" in out
    assert main(["models", "verify", "yunet", "yolo_fastest_body", "--dir", str(tmp_path)]) == 0
    bad = tmp_path / models.get("yunet").main.path
    bad.write_bytes(b"x")
    assert main(["models", "verify", "--dir", str(tmp_path)]) == 1
    assert "sha256 mismatch" in capsys.readouterr().out
    assert main(["models", "list", "--dir", str(models_dir)]) == 0
    assert "detector models" in capsys.readouterr().out
    assert main(["models", "list", "--json", "--dir", str(models_dir)]) == 0
    listing = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    assert set(listing) == {"yolox_nano", "yunet", "yolo_fastest_body", "mtcnn", "hog", "torchvision",
                            "picodet_s_416", "retinaface_mnet025", *models.SETS["strong"]}
    assert {f["status"] for f in listing["yolox_nano"]["files"]} == {"ok"}
    assert listing["yolox_nano"]["files"][0]["url"].startswith("https://raw.githubusercontent.com/")
    assert main(["models", "verify", "nope"]) == 2


def test_every_pinned_file_matches_the_shared_copy(models_dir):
    """The registry's pins are the bytes in the models folder, shared/models (copied from the source URLs)."""
    for name, m in models.REGISTRY.items():
        for f in m.files:
            p = models_dir / f.path
            if p.exists():
                assert models.sha256_file(p) == f.sha256 and p.stat().st_size == f.size, (name, f.path)
    assert json.dumps([f.url for m in models.REGISTRY.values() for f in m.files])  # all serialisable

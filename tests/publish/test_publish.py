"""`passkit publish` against a real S3 protocol server (moto_server on 127.0.0.1), then `passkit audit URL`
and `passkit.stream.loader(URL)` on the published copy; a publish killed halfway resumes; wrong buckets,
missing credentials and local files that differ from their manifest give clear errors.

Credentials are fake and set in the environment, AWS's config files point at nothing, and the instance
metadata lookup is off: nothing here reaches beyond loopback.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from passkit.audit import audit
from passkit.publish import PublishError, publish
from passkit.publish.targets import FsspecTarget
from tests.helpers import ROOT
from tests.helpers.s3 import moto_s3
from tests.helpers.staging import Item, basic_items, staged_release, texture

s3fs = pytest.importorskip("s3fs", reason="pip install -e '.[dev]' installs s3fs")


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 for the module (bucket `releases`), fake credentials in the environment."""
    with moto_s3(tmp_path_factory.mktemp("aws")) as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A release from the real builder (shards of 3, every document, croissant.json), built in about a second."""
    return staged_release(tmp_path_factory.mktemp("pub"), basic_items(8) + [Item("face", texture(60), people=0.97)])


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "passkit.cli", *args], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def _keys(release: Path) -> list[str]:
    return pq.read_table(release / "index.parquet", columns=["key"]).column("key").to_pylist()


def test_publish_round_trip_audit_and_stream(s3: str, release: Path, tmp_path: Path) -> None:
    from passkit.stream import loader

    url = "s3://releases/round-trip/syn-1.0.0"
    events: list[tuple[str, object]] = []
    rep = publish(release, url, workers=4, on_progress=lambda e, v: events.append((e, v)))
    files = sorted(p.relative_to(release).as_posix() for p in release.rglob("*") if p.is_file())
    assert sorted(rep.uploaded) == files and rep.skipped == [] and rep.uploaded[-1] == "manifest.json"
    assert rep.uploaded[:3] == [f"shards/syn-{i:06d}.tar" for i in range(3)]  # shards first
    assert rep.bytes_uploaded == sum((release / f).stat().st_size for f in files)
    assert ("plan", rep.bytes_uploaded) in events and sum(v for e, v in events if e == "bytes") == rep.bytes_uploaded
    report = audit(url, workers=2)
    assert report.ok, [str(f) for f in report.findings]
    assert report.stats.samples == 8 and str(report.release_dir) == url
    seen = [m["key"] for _, metas in loader(url, batch_size=3, cache_dir=tmp_path / "cache") for m in metas]
    assert sorted(seen) == sorted(_keys(release))
    again = publish(release, url)
    assert again.uploaded == [] and sorted(again.skipped) == files and again.bytes_uploaded == 0


def test_cli_publish_and_audit_a_url(s3: str, release: Path) -> None:
    url = "s3://releases/cli/syn-1.0.0"
    p = _cli("publish", str(release), url, "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["uploaded"][-1] == "manifest.json"
    a = _cli("audit", url, "--json")
    assert a.returncode == 0, a.stdout + a.stderr
    assert json.loads(a.stdout)["ok"] is True
    # tampered in the bucket: the audit of the URL names the file
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.pipe(f"{url.removeprefix('s3://')}/croissant.json", b"{}")
    bad = _cli("audit", url, "--json")
    assert bad.returncode == 1 and {"file_sha256", "file_size"} <= set(json.loads(bad.stdout)["counts"])


KILL_AFTER = textwrap.dedent("""
    import os, signal, sys
    from passkit.publish import targets
    real, done = targets.FsspecTarget.upload, []

    def upload(self, obj, src, on_bytes):
        if len(done) == int(sys.argv[1]):
            os.kill(os.getpid(), signal.SIGKILL)  # killed as a machine going down would kill it
        real(self, obj, src, on_bytes)
        done.append(obj.rel)

    targets.FsspecTarget.upload = upload
    from passkit.cli import main
    main(["publish", sys.argv[2], sys.argv[3], "--workers", "1"])
""")


def test_a_publish_killed_halfway_resumes(s3: str, release: Path) -> None:
    url = "s3://releases/killed/syn-1.0.0"
    p = subprocess.run([sys.executable, "-c", KILL_AFTER, "2", str(release), url], capture_output=True, text=True,
                       timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == -9, p.stderr
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    there = sorted(fs.find("releases/killed/syn-1.0.0"))
    assert [t.rsplit("/", 1)[-1] for t in there] == ["syn-000000.tar", "syn-000001.tar"]  # no manifest yet
    rep = publish(release, url, workers=2)
    assert rep.skipped == ["shards/syn-000000.tar", "shards/syn-000001.tar"]
    assert "shards/syn-000001.tar" not in rep.uploaded and rep.uploaded[-1] == "manifest.json"
    assert audit(url).ok


def test_a_stale_manifest_goes_first_and_extra_objects_are_reported(s3: str, release: Path) -> None:
    url = "s3://releases/stale/syn-1.0.0"
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.pipe("releases/stale/syn-1.0.0/manifest.json", b'{"name": "an older release"}')
    fs.pipe("releases/stale/syn-1.0.0/shards/old-000009.tar", b"old")
    removed = []
    target = FsspecTarget(url)
    real_remove = target.remove
    target.remove = lambda rel: (removed.append(rel), real_remove(rel))[1]  # type: ignore[method-assign]
    rep = publish(release, url, target=target)
    assert rep.replaced_manifest and removed == ["manifest.json"]
    assert rep.extra == ["shards/old-000009.tar"]
    report = audit(url)
    assert report.counts() == {"shard_unlisted": 1}  # the leftover is there, and the audit says so


def test_a_local_file_that_differs_from_its_manifest_is_not_published(s3: str, release: Path, tmp_path: Path) -> None:
    rel = Path(shutil.copytree(release, tmp_path / "r"))
    shard = rel / "shards" / "syn-000001.tar"
    data = bytearray(shard.read_bytes())
    data[700] ^= 0xFF  # same size, other bytes
    shard.write_bytes(bytes(data))
    url = "s3://releases/differs/syn-1.0.0"
    with pytest.raises(PublishError, match=r"did not verify.*syn-000001\.tar.*passkit audit"):
        publish(rel, url)
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    assert not fs.exists("releases/differs/syn-1.0.0/manifest.json")


def test_wrong_bucket_and_missing_credentials_are_clear_errors(s3: str, release: Path) -> None:
    p = _cli("publish", str(release), "s3://no-such-bucket/x")
    assert p.returncode == 2 and "s3://no-such-bucket does not exist" in p.stderr and "create it first" in p.stderr
    assert "testing" not in p.stderr  # the secret in the environment is never printed
    a = _cli("audit", "s3://no-such-bucket/x")
    assert a.returncode == 2 and "nothing is stored at s3://no-such-bucket/x" in a.stderr
    bare = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}
    env = {k: v for k, v in os.environ.items() if k not in bare}
    no_creds = subprocess.run([sys.executable, "-m", "passkit.cli", "publish", str(release), "s3://releases/nocreds"],
                              capture_output=True, text=True, timeout=120, cwd=ROOT,
                              env={**env, "PYTHONPATH": str(ROOT)})
    assert no_creds.returncode == 2 and "Unable to locate credentials" in no_creds.stderr
    assert "AWS_ACCESS_KEY_ID" in no_creds.stderr


def test_publish_to_a_local_folder(release: Path, tmp_path: Path) -> None:
    dest = tmp_path / "mirror" / "syn-1.0.0"
    rep = publish(release, str(dest))
    assert rep.uploaded[-1] == "manifest.json" and audit(dest).ok
    assert not [p for p in dest.rglob(".*")]  # no temporary file left under a real name or beside one
    (dest / "manifest.json").unlink()
    again = publish(release, str(dest))
    assert again.uploaded == ["manifest.json"]

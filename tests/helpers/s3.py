"""A real S3 protocol server for tests: moto's standalone server on 127.0.0.1, a free port, fake
credentials in the environment, AWS's config files pointing at nothing and the instance-metadata
lookup off, so nothing reaches beyond loopback. Creates the bucket `releases`."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

MOTO = shutil.which("moto_server") or str(Path(sys.executable).with_name("moto_server"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def moto_s3(scratch: Path) -> Iterator[str]:
    """The server's endpoint while the block runs; stopped (by its pid) at the end. Skips without moto."""
    s3fs = pytest.importorskip("s3fs", reason="pip install -e '.[dev]' installs s3fs")
    if not Path(MOTO).exists():
        pytest.skip("moto_server not installed: pip install -e '.[dev]' installs moto[server]")
    # An audit's fork server may start before the credentials are set, as in a long-lived process (and in
    # a run of the whole suite): its workers must still read the bucket with this process's settings.
    from multiprocessing import forkserver, get_all_start_methods

    if "forkserver" in get_all_start_methods():
        forkserver.ensure_running()
    port = _free_port()
    proc = subprocess.Popen([MOTO, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as c:
                if c.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"moto_server did not start on {endpoint}")
            time.sleep(0.05)
        nothing = scratch / "no-aws-config"
        env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_ENDPOINT_URL": endpoint, "AWS_EC2_METADATA_DISABLED": "true",
               "AWS_CONFIG_FILE": str(nothing), "AWS_SHARED_CREDENTIALS_FILE": str(nothing)}
        with pytest.MonkeyPatch.context() as mp:
            for k, v in env.items():
                mp.setenv(k, v)
            mp.delenv("AWS_PROFILE", raising=False)
            s3fs.S3FileSystem.clear_instance_cache()
            try:
                s3fs.S3FileSystem().mkdir("releases")
                yield endpoint
            finally:
                s3fs.S3FileSystem.clear_instance_cache()
    finally:
        proc.terminate()
        proc.wait(timeout=10)

"""The command's own plumbing: the early worker pool and the console script's exit."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from passkit import cli
from passkit.config import WorkSpec


def test_early_pool_default_is_the_specs_default():
    assert WorkSpec().workers == cli.DEFAULT_WORKERS


def _args(spec: Path, workers: int | None = None, executor: str | None = None) -> argparse.Namespace:
    return argparse.Namespace(spec=str(spec), workers=workers, executor=executor)


@pytest.mark.parametrize(
    ("work", "workers", "executor", "started"),
    [
        ({}, None, None, cli.DEFAULT_WORKERS),
        ({"workers": 3}, None, None, 3),
        ({"workers": 3}, 2, None, 2),
        ({"workers": 1}, None, None, None),
        ({"executor": "ray"}, None, None, None),
        ({}, None, "ray", None),
        ({"workers": "many"}, None, None, None),
    ],
)
def test_early_pool_follows_the_spec_and_the_flags(tmp_path, work, workers, executor, started):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"name": "x", "work": work}))
    pool = cli._early_pool(_args(spec, workers, executor))
    try:
        assert (pool.workers if pool is not None else None) == started
    finally:
        if pool is not None:
            pool.shutdown()


def test_early_pool_leaves_a_broken_spec_to_load_spec(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: [unclosed")
    assert cli._early_pool(_args(spec)) is None
    assert cli._early_pool(_args(tmp_path / "missing.yaml")) is None


def test_console_script_exits_with_the_commands_code_and_flushed_output(tmp_path):
    """run() skips the interpreter's teardown: the exit code and every printed line must survive."""
    env = {**os.environ, "COLUMNS": "300"}  # rich wraps at the terminal's width
    p = subprocess.run([sys.executable, "-m", "passkit.cli", "build", str(tmp_path / "missing.yaml")],
                       capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 2
    assert "no such spec file" in p.stderr
    p = subprocess.run([sys.executable, "-m", "passkit.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "build" in p.stdout

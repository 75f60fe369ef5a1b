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


# ----------------------------------------------------------------------------- flags and inputs: one-line errors


def test_early_pool_bound_is_the_specs_bound():
    from passkit.config import field_bounds

    assert field_bounds(WorkSpec, "workers") == (1, cli.MAX_WORKERS)


def _spec(tmp_path: Path, **over: object) -> Path:
    """A urllist spec in tmp_path whose rows all fail the licence gate: a build that downloads nothing."""
    lst = tmp_path / "list.csv"
    if not lst.exists():
        lst.write_text("id,url,license\n" + "".join(f"r{i},http://h.invalid/{i}.jpg,WTFPL\n" for i in range(5)))
    data: dict[str, object] = {
        "name": "t", "version": "1", "source": {"kind": "urllist", "paths": [str(lst)]},
        "people": {"enabled": False}, "work": {"unit_size": 2, "workers": 1}, **over,
    }
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def _one_error_line(err: str) -> str:
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("workers", [0, -3, 257, 300, 100_000])
def test_workers_out_of_the_specs_range_is_refused(tmp_path, monkeypatch, capsys, workers):
    import passkit.executors.local as local

    def no_pool(*a: object, **k: object) -> None:
        raise AssertionError("a worker pool was started")

    monkeypatch.setattr(local, "WorkerPool", no_pool)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["build", str(_spec(tmp_path)), "--workers", str(workers)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: --workers {workers}: Input should be") and "use 1 to 256" in line
    assert not (tmp_path / "work").exists()  # refused before anything ran


def test_build_input_problems_are_one_line_errors_before_the_crawl(tmp_path, monkeypatch, capsys):
    from rich.console import Console

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "console", Console(stderr=True, width=1000))  # no wrapping of long lines

    def fails(spec: Path, *expected: str) -> None:
        assert cli.main(["build", str(spec)]) == 2
        line = _one_error_line(capsys.readouterr().err)
        assert all(text in line for text in expected), line
        assert not list(tmp_path.glob("work/t/units/*.parquet"))  # nothing was crawled

    (tmp_path / "bad.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    fails(tmp_path / "bad.yaml", "not UTF-8 text (byte 0xe9", "save the spec as UTF-8")
    fails(_spec(tmp_path, source={"kind": "urllist", "paths": ["missing.csv"]}), "missing.csv: no such file")
    (tmp_path / "wide.csv").write_bytes("id,url\nx,http://h/x.jpg\n".encode("utf-16"))
    fails(_spec(tmp_path, source={"kind": "urllist", "paths": ["wide.csv"]}), "looks like UTF-16", "iconv")
    (tmp_path / "afile").write_text("")
    fails(_spec(tmp_path, work={"dir": "afile/work", "workers": 1}),
          "afile/work/units cannot be used: ", "afile is a file, not a folder; set work.dir")
    fails(_spec(tmp_path, release={"dir": "afile/releases"}),
          "afile/releases cannot be used: ", "afile is a file, not a folder; set release.dir")
    # an unknown list format is refused with the spec (whose errors list each field on its own line)
    assert cli.main(["build", str(_spec(tmp_path, source={"kind": "urllist", "paths": ["list.txt"]}))]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "list.txt: cannot tell the format from the name; set format:" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into any folder")
def test_unwritable_release_folder_is_found_before_the_crawl(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "releases").mkdir(mode=0o500)
    try:
        assert cli.main(["build", str(_spec(tmp_path))]) == 2
    finally:
        (tmp_path / "releases").chmod(0o700)
    assert "Permission denied; set release.dir" in _one_error_line(capsys.readouterr().err)
    assert not list(tmp_path.glob("work/t/units/*.parquet"))


def test_full_disk_is_a_one_line_error_and_finished_units_stay(tmp_path, monkeypatch, capsys):
    import errno

    from passkit.release.tables import RowGroupWriter

    monkeypatch.chdir(tmp_path)
    spec = _spec(tmp_path)

    def disk_full(path: Path, *a: object, **k: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    with monkeypatch.context() as m:
        m.setattr(RowGroupWriter, "close", lambda self: disk_full(self.path))
        assert cli.main(["build", str(spec)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("error: the disk is full (No space left on device writing ")
    assert "finished work units are kept" in line
    ledgers = sorted(p.name for p in tmp_path.glob("work/t/units/*.parquet"))
    assert len(ledgers) == 3  # five rows in units of two
    assert cli.main(["build", str(spec)]) == 0  # the rerun resumes them and writes the release
    assert sorted(p.name for p in tmp_path.glob("work/t/units/*.parquet")) == ledgers
    assert (tmp_path / "releases" / "t-1" / "manifest.json").is_file()

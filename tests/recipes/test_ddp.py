"""DDP: two gloo ranks on CPU, started by torchrun, read a release with uneven shards.

Checks the promises of passkit.stream.loader under torch.distributed: every rank gets the same
number of batches (each batch is followed by an all_reduce, so a mismatch would hang: the
subprocess timeout turns that into a failure), the ranks' samples are disjoint and cover the epoch
(balance="pad" repeats just enough samples, "drop" leaves just the tail out), and a run resumed
from state_dict() yields exactly the batches the interrupted run had not yet yielded.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from collections import Counter

import pytest

from tests.helpers import ROOT
from tests.helpers.releases import make_release, sample_key

HERE = ROOT / "tests" / "recipes"
N, SHARD_MAX, BATCH, STOP = 13, 5, 3, 1  # shards of 5, 5, 3 samples; 13 does not split in two


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    base = tmp_path_factory.mktemp("ddp")
    release = make_release(base, n=N, shard_max=SHARD_MAX)
    out = base / "out"
    out.mkdir()
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--nnodes", "1",
        "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
        str(HERE / "ddp_worker.py"), str(release), str(out), str(STOP),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


def flat(batches: list[list[str]]) -> list[str]:
    return [k for b in batches for k in b]


def test_ranks_get_equal_batch_counts(ddp_run: list[dict]) -> None:
    per_rank = math.ceil(N / 2)
    for balance, samples in (("pad", per_rank), ("drop", N // 2)):
        counts = [len(r[balance]) for r in ddp_run]
        assert counts[0] == counts[1] == math.ceil(samples / BATCH) == ddp_run[0][f"{balance}_len"]
        assert [len(flat(r[balance])) for r in ddp_run] == [samples, samples]


def test_ranks_cover_the_epoch_disjointly(ddp_run: list[dict]) -> None:
    everything = {sample_key(i) for i in range(N)}
    a, b = (flat(r["pad"]) for r in ddp_run)
    assert set(a) | set(b) == everything
    seen = Counter(a + b)
    assert sum(seen.values()) == 2 * math.ceil(N / 2)  # one repeated sample pads 13 to 14
    assert sum(c - 1 for c in seen.values()) == 2 * math.ceil(N / 2) - N
    assert len(set(a)) == len(a) and len(set(b)) == len(b)  # no repeats within a rank
    a, b = (flat(r["drop"]) for r in ddp_run)
    assert not set(a) & set(b) and len(set(a) | set(b)) == 2 * (N // 2)  # one sample left out


def test_resume_yields_exactly_the_remaining_batches(ddp_run: list[dict]) -> None:
    for r in ddp_run:
        full = r["pad"]  # same arguments and epoch as the resume experiment
        assert r["resume_first"] == full[:STOP]
        assert r["resume_state"]["position"] == STOP and r["resume_state"]["epoch"] == 2
        assert r["resume_rest"] == full[STOP:]

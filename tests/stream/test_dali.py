"""The NVIDIA DALI input pipeline (passkit.stream.dali), run as a CPU-only DALI pipeline.

Skipped where DALI is not installed (`pip install 'passkit[dali]'`); the message without it is
tested in tests/recipes/test_inputs.py. On a GPU, scripts/gpu_check.sh runs it with mixed decode.
"""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed (pip install 'passkit[dali]'): "
                    "the DALI pipeline's tests are skipped")

from passkit.recipes import presets  # noqa: E402
from passkit.recipes.augspec import view_specs  # noqa: E402
from passkit.stream import open_release  # noqa: E402
from passkit.stream.dali import DaliViews  # noqa: E402
from tests.helpers.releases import make_release, sample_key  # noqa: E402


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_release(tmp_path_factory.mktemp("dali"), n=10, shard_max=4, wds_index=True)


@pytest.fixture(scope="module")
def specs() -> tuple:
    return view_specs(presets.get("smoke", "moco_v2").build_recipe().transform())


def _all_keys(release: Path) -> list[str]:
    return sorted(pq.read_table(release / "index.parquet", columns=["key"]).column("key").to_pylist())


def test_batches_have_the_device_pipelines_shapes(release: Path, specs: tuple) -> None:
    dl = DaliViews(release, specs, 4, seed=0, rank=0, world=1, threads=1)
    assert dl.index_paths == [str(open_release(release).root / p.replace(".tar", ".idx"))
                              for p in (r.rel for r in open_release(release).refs)]  # the release's own
    batches = list(dl.epoch(0))
    assert len(batches) == dl.batches(0) == 2  # 10 samples, full batches of 4
    keys = set(_all_keys(release))
    for views, batch_keys in batches:
        assert len(views) == len(specs) == 2 and len(batch_keys) == 4 and set(batch_keys) <= keys
        for v in views:
            assert v.shape == (4, 3, 32, 32) and v.dtype == torch.float32
            assert v.is_contiguous(memory_format=torch.channels_last) and torch.isfinite(v).all()
            assert abs(float(v.mean())) < 1.5 and 0.1 < float(v.std()) < 3  # normalised once


def test_every_key_once_per_pass_across_ranks_and_seeded(release: Path, specs: tuple) -> None:
    keys = _all_keys(release)
    for epoch in (0, 1):
        seen: list[str] = []
        for rank in (0, 1):
            dl = DaliViews(release, specs, 3, seed=5, rank=rank, world=2, drop_last=False, threads=1)
            seen += [k for _, ks in dl.epoch(epoch) for k in ks]
        assert sorted(seen) == keys, epoch
    a = DaliViews(release, specs, 4, seed=1, rank=0, world=1, threads=1)
    b = DaliViews(open_release(release), specs, 4, seed=1, rank=0, world=1, threads=2)
    c = DaliViews(release, specs, 4, seed=2, rank=0, world=1, threads=1)
    first, again, other = list(a.epoch(3)), list(b.epoch(3)), list(c.epoch(3))
    for (va, ka), (vb, kb) in zip(first, again, strict=True):
        assert ka == kb and all(torch.equal(x, y) for x, y in zip(va, vb, strict=True))
    assert [k for _, k in first] != [k for _, k in other] or not torch.equal(first[0][0][0], other[0][0][0])


def test_a_release_without_index_files_gets_them_derived(tmp_path: Path, specs: tuple) -> None:
    old = make_release(tmp_path, n=5, shard_max=3, removals=[(sample_key(2), "creator request")])
    dl = DaliViews(old, specs, 5, seed=0, rank=0, world=1, threads=1)
    assert all(not p.startswith(str(old)) for p in dl.index_paths)
    ((views, keys),) = list(dl.epoch(0))
    # a removed sample still in its shard is left out of the batch, as the passkit loader does
    assert sorted(keys) == sorted(set(_all_keys(old)) - {sample_key(2)}) and views[0].shape[0] == 4
    dl.close()


def test_moco_trains_through_dali(release: Path) -> None:
    from passkit.recipes.engine import ReleaseData, TrainConfig, Trainer

    p = presets.get("smoke", "moco_v2")
    rec = p.build_recipe()
    data = ReleaseData(release, rec.transform(), 4, seed=0, loader_mode="dali")
    res = Trainer(rec, data, TrainConfig(steps=2, optim=p.optim, progress=False, log_every=1)).fit()
    assert math.isfinite(res.final("loss")) and data.num_samples == 10


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: DALI's mixed (nvJPEG) decode needs one")
def test_mixed_decode_on_the_gpu_gives_bf16_views(release: Path, specs: tuple) -> None:
    dl = DaliViews(release, specs, 4, seed=0, rank=0, world=1, device="cuda")
    views, keys = next(iter(dl.epoch(0)))
    assert len(keys) == 4
    for v in views:
        assert v.device.type == "cuda" and v.dtype == torch.bfloat16 and v.shape == (4, 3, 32, 32)
        assert v.is_contiguous(memory_format=torch.channels_last) and torch.isfinite(v.float()).all()

"""Choosing the input pipeline (`--loader`), and training through the device pipeline on CPU."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from passkit.recipes.inputs import LoaderUnavailable, resolve_loader
from tests.helpers.releases import make_release


def test_auto_picks_the_device_pipeline_on_cuda_only() -> None:
    assert resolve_loader("auto", torch.device("cpu")) == "cpu"
    assert resolve_loader("auto", torch.device("cuda", 0)) == "device"
    assert resolve_loader("device", torch.device("cpu")) == "device"
    assert resolve_loader("cpu", torch.device("cuda")) == "cpu"
    with pytest.raises(LoaderUnavailable, match="unknown loader"):
        resolve_loader("gpu", torch.device("cpu"))


def test_dali_without_dali_is_a_clear_error_not_a_crash(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    # DALI may be installed here: the check must see it absent, every other package as it is
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.split(".")[0] == "nvidia" else real(name, *a))
    from passkit.cli import main

    release = make_release(tmp_path, n=4, shard_max=4)
    rc = main(["validate", str(release), "--recipe", "moco_v2", "--preset", "smoke", "--loader", "dali"])
    assert rc == 2
    err = capsys.readouterr()
    assert "needs NVIDIA DALI" in err.out + err.err and not (release / "validation").exists()


def test_split_batchnorm_takes_channels_last_batches() -> None:
    from passkit.recipes.backbones import SplitBatchNorm

    x = torch.randn(8, 4, 5, 5)
    a, b = SplitBatchNorm(4, 2), SplitBatchNorm(4, 2)
    assert torch.allclose(a(x), b(x.contiguous(memory_format=torch.channels_last)), atol=1e-6)
    assert torch.allclose(a.running_mean, b.running_mean)


def test_moco_trains_through_the_device_pipeline(tmp_path: Path) -> None:
    from passkit.recipes import presets
    from passkit.recipes.engine import ReleaseData, TrainConfig, Trainer

    release = make_release(tmp_path, n=12, shard_max=5)
    p = presets.get("smoke", "moco_v2")
    rec = p.build_recipe()
    data = ReleaseData(release, rec.transform(), 4, seed=0, loader_mode="device")
    seen: list[torch.Tensor] = []
    step = rec.training_step

    def spy(model: torch.nn.Module, views: list[torch.Tensor], i: int) -> object:
        seen.append(views[0])
        return step(model, views, i)

    rec.training_step = spy  # type: ignore[method-assign]
    res = Trainer(rec, data, TrainConfig(steps=4, optim=p.optim, progress=False, log_every=1)).fit()
    assert math.isfinite(res.final("loss"))
    assert len(seen) == 4 and all(v.dtype == torch.float32 and v.shape == (4, 3, 32, 32) for v in seen)
    assert all(v.is_contiguous(memory_format=torch.channels_last) for v in seen)
    assert abs(float(torch.cat(seen).mean())) < 1.5  # normalised once, not twice


def test_dali_is_picked_when_installed_even_without_a_gpu() -> None:
    pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed: nothing to pick")
    assert resolve_loader("dali", torch.device("cpu")) == "dali"  # a CPU-only DALI pipeline
    assert resolve_loader("dali", torch.device("cuda", 0)) == "dali"

"""Every validation preset builds: the recipe, its model and its augmentation agree (sizes, views), and
the small presets train two steps on CPU with their 8-bit optimizer. The full presets are GPU-sized:
only built here, model included (scripts/gpu_check.sh times them on a GPU)."""

from __future__ import annotations

import pytest
import torch

from passkit.recipes import presets
from passkit.recipes.engine import TensorData, TrainConfig, Trainer
from passkit.recipes.synthetic import generate


@pytest.mark.parametrize("recipe", presets.RECIPES)
@pytest.mark.parametrize("name", presets.PRESETS)
def test_preset_builds_and_its_views_fit_the_model(recipe: str, name: str) -> None:
    p = presets.get(name, recipe)
    assert p.recipe == recipe and p.optim.bits == 8
    rec = p.build_recipe()
    assert rec.name == recipe and rec.cfg is p.config
    x, _ = generate(1, p.image_size, seed=0)
    views = rec.transform()(x[0])
    assert all(v.dtype == torch.uint8 and v.shape[0] == 3 for v in views)
    assert max(v.shape[-1] for v in views) == p.image_size
    torch.manual_seed(0)
    model = rec.build_model()
    assert sum(q.numel() for q in model.parameters()) > 0
    if name == "small":
        data, _ = generate(16, p.image_size, seed=1)
        res = Trainer(rec, TensorData(data, rec.transform(), 8), TrainConfig(
            steps=2, optim=p.optim, warmup_steps=0, log_every=1, progress=False)).fit()
        assert all(torch.isfinite(torch.tensor(h["loss"])) for h in res.history)
        assert res.optimizer_state["bytes_per_param"] < 4.5  # 8-bit state (small 1-D tensors stay 32-bit)

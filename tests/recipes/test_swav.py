"""SwAV: Sinkhorn-Knopp codes, the late queue, frozen prototypes, multi-crop, the collapse alarm,
and (slow) that a short CPU run with an 8-bit AdamW learns on the synthetic labelled set."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from passkit.recipes.collapse import CollapseWarning
from passkit.recipes.losses import sinkhorn
from passkit.recipes.multicrop import MultiCropConfig, multi_crop
from passkit.recipes.recipe import Recipe
from passkit.recipes.swav import SwAV, SwAVConfig, SwAVRecipe
from passkit.recipes.synthetic import generate
from tests.helpers.recipes import features_vs_random_init, train_small

CROPS = MultiCropConfig(32, 16, 2, 2, (0.3, 1.0), (0.1, 0.3), blur=False)
TINY = dict(arch="vit_nano", patch_size=4, hidden_dim=128, dim=32, prototypes=30, queue=128, crops=CROPS)


def test_sinkhorn_gives_equipartitioned_codes() -> None:
    torch.manual_seed(0)
    scores = torch.randn(64, 30).clamp(-1, 1) * 0.5 + torch.randn(1, 30)  # some prototypes favoured by all
    q = sinkhorn(scores, eps=0.05, iters=3)
    assert torch.allclose(q.sum(1), torch.ones(64), atol=1e-5)  # each sample: a distribution
    col = q.sum(0) / 64
    assert float(col.max() / col.min()) < 1.5  # prototypes used (nearly) equally despite the bias
    raw = torch.softmax(scores / 0.05, dim=1).sum(0) / 64
    assert float(raw.max() / raw.clamp_min(1e-9).min()) > 10


def test_multicrop_shapes() -> None:
    x = generate(1, 32)[0][0]
    views = multi_crop(MultiCropConfig(32, 16, 2, 3, blur=True))(x)
    assert [tuple(v.shape) for v in views] == [(3, 32, 32)] * 2 + [(3, 16, 16)] * 3
    assert all(v.dtype == torch.uint8 for v in views)
    with pytest.raises(ValueError, match="2 large"):
        multi_crop(MultiCropConfig(n_large=3))


@pytest.mark.parametrize("arch", ["vit_nano", "resnet18"])
def test_frozen_prototypes_late_queue_and_normalisation(arch: str) -> None:
    torch.manual_seed(0)
    rec = SwAVRecipe(SwAVConfig(**{**TINY, "arch": arch, "width": 8, "small_stem": True},
                                queue_start_step=2, freeze_prototypes_steps=1))
    assert isinstance(rec, Recipe) and rec.cfg.chance_loss == pytest.approx(math.log(30))
    m: SwAV = rec.build_model()
    views = [torch.randn(8, 3, 32, 32), torch.randn(8, 3, 32, 32), torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)]
    out = rec.training_step(m, views, 0)
    out.loss.backward()
    assert m.prototypes.weight.grad is None  # frozen at first
    assert int(m.queue_fill) == 0  # the queue starts late
    m.zero_grad()
    rec.training_step(m, views, 1).loss.backward()
    assert m.prototypes.weight.grad is not None
    with torch.no_grad():
        m.prototypes.weight.mul_(3)
    rec.after_step(m, 1, 10)
    assert torch.allclose(m.prototypes.weight.norm(dim=1), torch.ones(30), atol=1e-5)
    rec.training_step(m, views, 2)
    rec.training_step(m, views, 3)
    assert int(m.queue_fill) == 16 and torch.allclose(m.queue[:, :16].norm(dim=2), torch.ones(2, 16), atol=1e-5)
    assert rec.features(m, torch.randn(2, 3, 32, 32)).shape == (2, m.feature_dim)


def test_collapsed_network_cannot_beat_ln_k_and_raises_the_alarm() -> None:
    rec = SwAVRecipe(SwAVConfig(**TINY, freeze_prototypes_steps=0, queue_start_step=10**9, alarm_every=1))
    rec.alarm.patience = 2
    m: SwAV = rec.build_model()
    # a collapsed backbone: every image gives the same features
    m.backbone = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, m.feature_dim))
    with torch.no_grad():
        m.backbone[1].weight.zero_()
    m.backbone = _SizeFree(m.backbone)
    views = [torch.randn(8, 3, 32, 32)] * 2 + [torch.randn(8, 3, 16, 16)] * 2
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        losses = [float(rec.training_step(m, views, s).loss) for s in range(3)]
    # one output for every image: the codes stay equipartitioned, so the swapped prediction can do no
    # better than uniform (ln K), and the embeddings have rank 1
    assert min(losses) >= math.log(30) - 1e-4
    assert any(issubclass(x.category, CollapseWarning) and "RankMe" in str(x.message) for x in w)


class _SizeFree(torch.nn.Module):
    """Constant features whatever the crop size (a collapsed backbone)."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(torch.nn.functional.interpolate(x, size=32))


@pytest.mark.slow
def test_swav_learns_on_cpu() -> None:
    torch.manual_seed(0)
    rec = SwAVRecipe(SwAVConfig(**TINY, queue_start_step=50, freeze_prototypes_steps=5))
    res = train_small(rec, 100, 2e-3)
    assert res.optimizer_state["bytes_per_param"] < 2.5  # 8-bit state
    ev, ev0 = features_vs_random_init(rec, res.model)
    first = sum(h["loss"] for h in res.history[:2]) / 2
    last = res.final("loss", 0.2)
    print(f"SwAV loss {first:.3f} -> {last:.3f} (ln K {rec.cfg.chance_loss:.3f}); RankMe {ev['rankme']:.1f}; "
          f"kNN {ev['knn_k20_t0.07']:.3f} vs random init {ev0['knn_k20_t0.07']:.3f}")
    assert last < first and last < 0.9 * rec.cfg.chance_loss
    assert ev["rankme"] > 4
    assert ev["knn_k20_t0.07"] > ev0["knn_k20_t0.07"]

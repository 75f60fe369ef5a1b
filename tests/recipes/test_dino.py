"""DINO: teacher/student wiring, schedules, centring, the frozen last layer, ResNet and ViT
backbones, the collapse alarm, and (slow) a short CPU run with an 8-bit AdamW."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from passkit.recipes.collapse import CollapseAlarm, CollapseWarning
from passkit.recipes.dino import DINO, DINOConfig, DINORecipe
from passkit.recipes.multicrop import MultiCropConfig
from passkit.recipes.recipe import Recipe
from tests.helpers.recipes import features_vs_random_init, train_small

CROPS = MultiCropConfig(32, 16, 2, 2, (0.3, 1.0), (0.1, 0.3), blur=False)
TINY = dict(arch="vit_nano", patch_size=4, drop_path=0.0, out_dim=64, hidden_dim=128, bottleneck_dim=32, crops=CROPS)


def test_schedules_match_the_paper() -> None:
    c = DINOConfig(teacher_temp_warmup_steps=100)
    assert c.teacher_temp_at(0) == pytest.approx(0.04) and c.teacher_temp_at(50) == pytest.approx(0.055)
    assert c.teacher_temp_at(100) == pytest.approx(0.07) and c.teacher_temp_at(10**6) == pytest.approx(0.07)
    assert c.momentum_at(0, 100) == pytest.approx(0.996) and c.momentum_at(100, 100) == pytest.approx(1.0)
    assert c.center_momentum == 0.9 and c.chance_loss == pytest.approx(math.log(65536))


@pytest.mark.parametrize("arch", ["vit_nano", "resnet18"])
def test_step_teacher_copy_frozen_last_layer_and_centre(arch: str) -> None:
    torch.manual_seed(0)
    kw = {**TINY, "arch": arch, "width": 8, "small_stem": True, "freeze_last_layer_steps": 1}
    rec = DINORecipe(DINOConfig(**kw))
    assert isinstance(rec, Recipe)
    m: DINO = rec.build_model()
    for ps, pt in zip(m.student.parameters(), m.teacher.parameters(), strict=True):
        assert torch.equal(ps, pt) and ps is not pt and not pt.requires_grad
    views = [torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32), torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)]
    out = rec.training_step(m, views, step=0)
    out.loss.backward()
    assert m.student["head"].last_layer.grad is None  # frozen in the first steps
    assert m.student["head"].mlp[0].weight.grad is not None
    assert m.center.abs().sum() > 0  # the centre moved towards the teacher's mean output
    m.zero_grad()
    rec.training_step(m, views, step=1).loss.backward()
    assert m.student["head"].last_layer.grad is not None
    with torch.no_grad():
        for p in m.student.parameters():
            p.add_(1.0)
    t0 = [p.clone() for p in m.teacher.parameters()]
    rec.after_step(m, 0, 10)
    for p0, ps, pt in zip(t0, m.student.parameters(), m.teacher.parameters(), strict=True):
        assert torch.allclose(pt, 0.996 * p0 + 0.004 * ps, atol=1e-6)
    assert rec.features(m, torch.randn(2, 3, 32, 32)).shape == (2, m.feature_dim)
    with pytest.raises(ValueError, match="4 views"):
        rec.training_step(m, views[:2], 0)


def test_collapse_alarm_warns_at_ln_k_and_at_rank_one() -> None:
    a = CollapseAlarm("dino", math.log(64), patience=2)
    z = torch.randn(32, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not a.check(0, 2.0, z)  # healthy
    with pytest.warns(CollapseWarning, match="ln K"):
        a.check(10, math.log(64), z)
        assert a.check(20, math.log(64) * 1.001, z)
    b = CollapseAlarm("dino", math.log(64), patience=1)
    with pytest.warns(CollapseWarning, match="RankMe"):
        assert b.check(0, 1.0, torch.ones(32, 1) @ torch.randn(1, 16))  # every embedding on one line


@pytest.mark.slow
def test_dino_learns_on_cpu() -> None:
    torch.manual_seed(0)
    rec = DINORecipe(DINOConfig(**{**TINY, "out_dim": 256}, teacher_temp=0.04, teacher_temp_final=0.04, momentum=0.95,
                                freeze_last_layer_steps=5))
    res = train_small(rec, STEPS, LR)
    assert res.optimizer_state["bytes_per_param"] < 2.5
    ev, ev0 = features_vs_random_init(rec, res.model)
    first, last = res.history[0]["loss"], res.final("loss", 0.2)
    kl0, kl1 = res.history[0]["kl"], res.final("kl", 0.2)
    h0, h1 = res.history[0]["teacher_entropy"], res.final("teacher_entropy", 0.2)
    print(f"DINO loss {first:.3f} -> {last:.3f} (ln K {rec.cfg.chance_loss:.3f}) = teacher entropy {h0:.3f} -> {h1:.3f}"
          f" + KL {kl0:.3f} -> {kl1:.3f}; RankMe {ev['rankme']:.1f}; "
          f"kNN {ev['knn_k20_t0.07']:.3f} vs random init {ev0['knn_k20_t0.07']:.3f}")
    # DINO's loss is H(teacher) + KL(teacher || student). Centring flattens the random teacher, so H (and with
    # it the loss) rises early in training whatever the student does; the KL term is what the student
    # reduces, and it must fall. Learning also shows as a loss well below ln K and kNN above random init.
    assert kl1 < 0.7 * kl0
    assert all(abs(h["loss"] - h["teacher_entropy"] - h["kl"]) < 0.02 * h["loss"] for h in res.history)
    assert last < 0.9 * rec.cfg.chance_loss
    assert ev["rankme"] > 4
    assert ev["knn_k20_t0.07"] > ev0["knn_k20_t0.07"]


STEPS, LR = 80, 1e-3

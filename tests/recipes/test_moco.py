"""MoCo v2 and the engine: queue, momentum encoder, Feature Transformation, schedule,
checkpoint/resume, and (slow) that a few CPU minutes of MoCo beat a random network's kNN."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from passkit.recipes.engine import EngineError, TensorData, TrainConfig, Trainer, lr_factor
from passkit.recipes.evaluate import evaluate_features, knn_accuracy, rankme
from passkit.recipes.moco import MoCo, MoCoConfig, MoCoV2
from passkit.recipes.optim import OptimConfig
from passkit.recipes.recipe import Recipe
from passkit.recipes.synthetic import CLASSES, generate, labelled_set

TINY = dict(arch="resnet18", width=8, small_stem=True, image_size=16, queue=32, bn_splits=2)


def test_moco_is_a_recipe_and_recognises_near_identical_views() -> None:
    torch.manual_seed(0)
    rec = MoCoV2(MoCoConfig(**TINY))
    assert isinstance(rec, Recipe)
    m = rec.build_model()
    x = torch.randn(8, 3, 16, 16)
    out = rec.training_step(m, [x, x + 0.01 * torch.randn_like(x)], 0)
    assert out.loss.ndim == 0 and math.isfinite(float(out.loss.detach()))
    assert out.embeddings is not None and out.embeddings.shape == (8, 128)
    # the queue starts as random unit vectors: a near-copy is far more similar than any of them
    assert float(out.loss.detach()) < m.cfg.chance_loss and float(out.metrics["acc"]) == 1.0
    assert all(not p.requires_grad for p in m.encoder_k.parameters())


def test_queue_wraps_and_momentum_update_moves_keys_towards_queries() -> None:
    m = MoCo(MoCoConfig(**TINY))
    keys = torch.nn.functional.normalize(torch.randn(20, 128), dim=1)
    m.enqueue(keys)
    m.enqueue(keys)  # 40 keys into a queue of 32: wraps around
    assert int(m.queue_ptr) == 8
    assert torch.allclose(m.queue[:, :8].T, keys[12:20]) and torch.allclose(m.queue[:, 20:32].T, keys[:12])
    with torch.no_grad():
        for p in m.encoder_q.parameters():
            p.add_(1.0)
    pk0 = [p.clone() for p in m.encoder_k.parameters()]
    m.momentum_update(0.9)
    for pq, pk, p0 in zip(m.encoder_q.parameters(), m.encoder_k.parameters(), pk0, strict=True):
        assert torch.allclose(pk, 0.9 * p0 + 0.1 * pq)


def test_feature_transformation_changes_the_loss_but_not_the_stored_queue() -> None:
    torch.manual_seed(0)
    x = torch.randn(8, 3, 16, 16)
    losses = {}
    for ft in (False, True):
        torch.manual_seed(1)
        m = MoCo(MoCoConfig(**TINY, ft_positive=ft, ft_negative=ft))
        q0 = m.queue.clone()
        torch.manual_seed(2)
        out = m(x, x.flip(3))
        losses[ft] = float(out.loss)
        stored = m.queue[:, :8].T
        assert torch.allclose(stored.norm(dim=1), torch.ones(8), atol=1e-5)
        assert torch.equal(m.queue[:, 8:], q0[:, 8:])
    # extrapolated positives are harder: positive similarity drops, loss rises
    assert losses[True] > losses[False]


def test_lr_schedule_warms_up_then_follows_a_cosine() -> None:
    assert lr_factor(0, 100, 10) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10) == pytest.approx(0.5)
    assert lr_factor(100, 100, 10, 0.1) == pytest.approx(0.1)


def test_engine_writes_metrics_checkpoints_and_resumes(tmp_path: Path) -> None:
    rec = MoCoV2(MoCoConfig(**TINY))
    x, _ = generate(64, 16, seed=0)
    cfg = TrainConfig(steps=6, optim=OptimConfig(name="sgd", lr=0.01, bits=8, backend="torch"), log_every=2,
                      checkpoint_every=3, out_dir=tmp_path, progress=False, hist_points=2)
    r1 = Trainer(rec, TensorData(x, rec.transform(), 16), cfg).fit()
    assert r1.resumed_from is None and [h["step"] for h in r1.history] == [2, 4, 6]
    assert r1.optimizer_state["quantized_params"] > 0
    rows = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4, 6] and all("loss" in r and "lr" in r for r in rows)
    assert len((tmp_path / "similarity.jsonl").read_text().splitlines()) == 2
    cfg.steps = 10
    r2 = Trainer(rec, TensorData(x, rec.transform(), 16), cfg).fit()
    assert r2.resumed_from == 6
    assert [h["step"] for h in r2.history] == [2, 4, 6, 8, 10]
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert ck["step"] == 10 and ck["optimizer"]["state"]


def test_engine_refuses_data_smaller_than_a_batch() -> None:
    rec = MoCoV2(MoCoConfig(**TINY))
    x, _ = generate(4, 16)
    with pytest.raises(EngineError, match="fewer samples"):
        Trainer(rec, TensorData(x, rec.transform(), 16), TrainConfig(steps=2, progress=False)).fit()


def test_knn_and_rankme_on_known_features() -> None:
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 16, generator=g) * 5
    y = torch.arange(200) % 4
    f = centres[y] + torch.randn(200, 16, generator=g)
    assert knn_accuracy(f[:150], y[:150], f[150:], y[150:], k=20, t=0.07) > 0.95
    assert knn_accuracy(torch.randn(150, 16), y[:150], torch.randn(50, 16), y[150:]) < 0.6
    assert rankme(torch.randn(500, 32)) > 25
    assert rankme(torch.randn(500, 1) @ torch.randn(1, 32)) < 1.5


@pytest.mark.slow
def test_moco_beats_random_init_knn_on_the_synthetic_set() -> None:
    """A few CPU minutes of MoCo v2 (narrow ResNet-18, small stem, 32 px) on unlabelled synthetic
    images; kNN on held-out labelled images must clearly beat the same network at random init."""
    torch.manual_seed(0)
    cfg = MoCoConfig(arch="resnet18", width=16, small_stem=True, image_size=32, queue=256, momentum=0.99,
                     temperature=0.2, bn_splits=4)
    rec = MoCoV2(cfg)
    ls = labelled_set(800, 400, size=32, seed=0)
    random_model = rec.build_model().eval()
    base = evaluate_features(lambda im: rec.features(random_model, im), ls, "cpu", probe=False)
    x, _ = generate(4096, 32, seed=7)
    res = Trainer(rec, TensorData(x, rec.transform(), 64), TrainConfig(
        steps=300, optim=OptimConfig(name="adamw", lr=2e-3, weight_decay=1e-4), warmup_steps=10,
        log_every=25, progress=False)).fit()
    model = res.model.eval()
    got = evaluate_features(lambda im: rec.features(model, im), ls, "cpu", probe=False)
    print(f"kNN k=20: MoCo {got['knn_k20_t0.07']:.3f} vs random {base['knn_k20_t0.07']:.3f}; "
          f"k=200: {got['knn_k200_t0.1']:.3f} vs {base['knn_k200_t0.1']:.3f}; chance {1 / len(CLASSES):.3f}; "
          f"loss {res.final('loss'):.3f} (ln(K+1) {cfg.chance_loss:.3f}); {res.seconds:.0f}s")
    assert res.final("loss") < 0.9 * cfg.chance_loss
    gain = [got[k] - base[k] for k in ("knn_k20_t0.07", "knn_k200_t0.1")]
    assert min(gain) > 0.03 and sum(gain) / 2 > 0.08, gain

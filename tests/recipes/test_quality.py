"""GenView's quality-driven loss in MoCo v2 (passkit.recipes.quality): the weights on hand-made tokens,
the foreground direction (fitted on release images and stored, or refitted in windows for the momentum
encoder, and carried by the checkpoint), a CPU training step with each scorer, and the frozen open_clip
ConvNeXt scorer on a tiny random-weight model saved to a file (tests/helpers/openclip.py)."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch
import torch.nn.functional as F

from passkit.recipes.moco import MoCo, MoCoConfig
from passkit.recipes.quality import (
    MomentumScorer,
    QualityPCA,
    ScorerUnavailable,
    build_scorer,
    fit_release,
    pair_weights,
    read_pca,
    token_weights,
    write_pca,
)
from passkit.views.foreground import Principal, PrincipalFit

TINY = dict(arch="resnet18", width=8, small_stem=True, image_size=16, queue=32, bn_splits=2)


class Fixed:
    """A scorer that returns given tokens, whatever the images."""

    name = "fixed"

    def __init__(self, *tokens: torch.Tensor) -> None:
        self.tokens = list(tokens)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.tokens.pop(0)


def _tokens(fg: torch.Tensor, bg: torch.Tensor) -> torch.Tensor:
    """[B, 16, D]: a 4 x 4 grid, the centre 2 x 2 patches `fg` (strong), the ring `bg` (weak)."""
    b, d = fg.shape
    grid = bg[:, None, None, :].expand(b, 4, 4, d).clone() * 0.2
    grid[:, 1:3, 1:3] = fg[:, None, None, :] * 3.0
    return grid.reshape(b, 16, d)


def test_pairs_whose_foregrounds_agree_weigh_more() -> None:
    torch.manual_seed(0)
    d = 8
    fg, bg = torch.randn(2, d), torch.randn(2, d)
    other_fg, other_bg = torch.randn(2, d), torch.randn(2, d)
    # pair 0: same foreground, different background (a good positive); pair 1: the other way round
    t1 = _tokens(fg, bg)
    t2 = _tokens(torch.stack([fg[0], other_fg[1]]), torch.stack([other_bg[0], bg[1]]))
    w, q = pair_weights(Fixed(t1, t2), torch.zeros(2), torch.zeros(2), gamma=2.0)
    assert float(q[0]) > 0 > float(q[1]) and float(w[0]) > 1 > float(w[1])
    assert float(w.mean()) == pytest.approx(1.0) and not w.requires_grad
    assert torch.allclose(w, 2 * F.softmax(2.0 * q, dim=0))


def test_moco_step_with_the_quality_loss_on_cpu() -> None:
    torch.manual_seed(0)
    x = torch.randn(8, 3, 16, 16)
    y = x.flip(3) + 0.1 * torch.randn_like(x)
    m = MoCo(MoCoConfig(**TINY, quality_loss=True, quality_gamma=4.0))
    assert isinstance(m.scorer, MomentumScorer) and m.scorer.backbone is m.encoder_k[0]
    # the scorer's weights are the key encoder's: only the foreground direction joins the state dict
    assert {k for k in m.state_dict() if not k.startswith("quality_pca.")} == set(MoCo(MoCoConfig(**TINY)).state_dict())

    buffers = [b.clone() for b in m.encoder_k[0].buffers()]
    w, q = pair_weights(m.scorer, x, y, 4.0)
    assert all(torch.equal(a, b) for a, b in zip(buffers, m.encoder_k[0].buffers(), strict=True))
    assert float(w.mean()) == pytest.approx(1.0) and not w.requires_grad and float(w.std()) > 0

    torch.manual_seed(1)
    out = m(x, y)
    loss = out.loss
    assert loss.ndim == 0 and math.isfinite(float(loss.detach()))
    assert float(out.metrics["weight_max"]) > 1 > float(out.metrics["weight_min"])
    loss.backward()
    grads = [p.grad for p in m.encoder_q.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    assert all(p.grad is None for p in m.encoder_k.parameters())

    # gamma 0: every weight is 1, and the loss is plain InfoNCE on the same keys and queue
    plain, weighted = (MoCo(MoCoConfig(**TINY, quality_loss=ql, quality_gamma=0.0)) for ql in (False, True))
    weighted.load_state_dict(plain.state_dict(), strict=False)  # the plain model has no direction
    torch.manual_seed(2)
    a = plain(x, y).loss
    torch.manual_seed(2)
    b = weighted(x, y).loss
    assert float(a.detach()) == pytest.approx(float(b.detach()), rel=1e-5)


def test_a_stored_direction_replaces_the_batchs_own() -> None:
    torch.manual_seed(0)
    t1, t2 = _tokens(torch.randn(4, 8), torch.randn(4, 8)), _tokens(torch.randn(4, 8), torch.randn(4, 8))
    fit = PrincipalFit(8)
    fit.add(torch.cat([t1, t2]))
    # the batch's own direction is what a fit of the same tokens gives
    assert torch.allclose(token_weights(t1, t2, 2.0)[0], token_weights(t1, t2, 2.0, fit.result())[0], atol=1e-5)
    other = Principal(torch.zeros(8), F.normalize(torch.randn(8), dim=0))
    w, q = token_weights(t1, t2, 2.0, other)
    assert not torch.allclose(q, token_weights(t1, t2, 2.0)[1])  # the given direction is used
    assert float(w.mean()) == pytest.approx(1.0) and not w.requires_grad


def test_fit_release_streams_up_to_its_limit_and_round_trips(tmp_path) -> None:
    torch.manual_seed(0)
    batches = [torch.randn(5, 3, 16, 16) for _ in range(4)]
    tokens = {id(b): _tokens(torch.randn(5, 8), torch.randn(5, 8)) for b in batches}

    class ByBatch:
        name, dim, frozen = "by-batch", 8, True
        seen = 0

        def __call__(self, images: torch.Tensor) -> torch.Tensor:
            self.seen += len(images)
            return next(t[: len(images)] for b, t in ((b, tokens[id(b)]) for b in batches)
                        if b.data_ptr() == images.data_ptr())

    scorer = ByBatch()
    principal, n = fit_release(scorer, iter(batches), limit=12)
    assert n == scorer.seen == 12  # two whole batches and two images of the third; the fourth never read
    fit = PrincipalFit(8)
    for t in (tokens[id(batches[0])], tokens[id(batches[1])], tokens[id(batches[2])][:2]):
        fit.add(t)
    assert torch.allclose(principal.direction, fit.result().direction, atol=1e-6)
    write_pca(tmp_path / "pca.json", principal, {"scorer": "by-batch", "images": n})
    back, info = read_pca(tmp_path / "pca.json")
    assert info == {"scorer": "by-batch", "images": 12, "dim": 8}
    assert torch.allclose(back.direction, principal.direction) and torch.allclose(back.mean, principal.mean)


def test_the_momentum_direction_is_refitted_every_window_and_resumes_from_the_state_dict() -> None:
    torch.manual_seed(0)
    batches = [(_tokens(torch.randn(4, 8), torch.randn(4, 8)), _tokens(torch.randn(4, 8), torch.randn(4, 8)))
               for _ in range(6)]
    pca = QualityPCA(8, refit_images=8)  # two batches of 4 images per window
    assert pca.current() is None
    refits = [pca.observe(a, b) for a, b in batches[:3]]
    assert refits == [False, True, False] and int(pca.fits) == 1
    fit = PrincipalFit(8)
    for a, b in batches[:2]:
        fit.add(a)
        fit.add(b)
    assert torch.allclose(pca.current().direction, fit.result().direction, atol=1e-6)  # the first window's

    resumed = QualityPCA(8, refit_images=8)
    resumed.load_state_dict(pca.state_dict())  # what a checkpoint carries: the direction and the half window
    for p in (pca, resumed):
        assert [p.observe(a, b) for a, b in batches[3:]] == [True, False, True] and int(p.fits) == 3
    assert torch.equal(pca.direction, resumed.direction) and float(pca.drift) == float(resumed.drift)
    assert -1.0 <= float(pca.drift) <= 1.0

    frozen = QualityPCA(8)  # a loaded direction is never refitted
    frozen.load(fit.result())
    assert not frozen.observe(*batches[0]) and int(frozen.fits) == 1
    with pytest.raises(ValueError, match="width"):
        QualityPCA(4).load(fit.result())


def test_moco_refits_the_momentum_direction_during_training() -> None:
    torch.manual_seed(0)
    m = MoCo(MoCoConfig(**TINY, quality_loss=True, quality_refit_images=16))
    x = torch.randn(8, 3, 16, 16)
    fits = []
    for _ in range(4):
        out = m(x, x.flip(3))
        fits.append(int(out.metrics["pca_fits"]))
    assert fits == [0, 1, 1, 2]  # each window of 16 images (two steps of 8) gives the next one's direction
    m.eval()
    m(x, x.flip(3))
    assert int(m.quality_pca.fits) == 2  # evaluation does not feed the window


def test_the_frozen_clip_scorer_says_what_it_needs(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    net = torch.nn.Identity()
    with pytest.raises(ScorerUnavailable, match="no such weights file"):
        build_scorer("open_clip:convnext_base_w:/nonexistent/weights.bin", net)
    with pytest.raises(ScorerUnavailable, match="unknown quality scorer"):
        build_scorer("clip", net)
    with pytest.raises(ScorerUnavailable, match="unknown quality scorer"):
        build_scorer("open_clip:convnext_base_w", net)
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"not weights")
    if importlib.util.find_spec("open_clip") is not None:
        from tests.helpers.openclip import register

        with pytest.raises(ScorerUnavailable, match="has no model"):
            build_scorer(f"open_clip:no-such-arch:{weights}", net)
        with pytest.raises(ScorerUnavailable, match="does not load"):
            build_scorer(f"open_clip:{register(tmp_path / 'configs')}:{weights}", net)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "open_clip" else real(name, *a))
    with pytest.raises(ScorerUnavailable, match=r"needs open_clip \(pip install open_clip_torch"):
        build_scorer(f"open_clip:convnext_base_w:{weights}", net)

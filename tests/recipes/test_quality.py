"""GenView's quality-driven loss in MoCo v2 (passkit.recipes.quality): the weights on hand-made tokens,
and a CPU training step with the momentum-encoder scorer."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from passkit.recipes.moco import MoCo, MoCoConfig
from passkit.recipes.quality import MomentumScorer, ScorerUnavailable, build_scorer, pair_weights

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
    assert set(MoCo(MoCoConfig(**TINY)).state_dict()) == set(m.state_dict())  # no extra weights saved

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
    weighted.load_state_dict(plain.state_dict())
    torch.manual_seed(2)
    a = plain(x, y).loss
    torch.manual_seed(2)
    b = weighted(x, y).loss
    assert float(a.detach()) == pytest.approx(float(b.detach()), rel=1e-5)


def test_the_frozen_clip_scorer_says_what_it_needs() -> None:
    net = torch.nn.Identity()
    with pytest.raises(ScorerUnavailable, match="needs open_clip|no such weights file"):
        build_scorer("open_clip:convnext_base:/nonexistent/weights.bin", net)
    with pytest.raises(ScorerUnavailable, match="unknown quality scorer"):
        build_scorer("clip", net)

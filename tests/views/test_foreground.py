"""The foreground map, the principal direction and the ratio -> noise table on hand-made tokens."""

from __future__ import annotations

import pytest
import torch

from passkit.views.foreground import (
    NOISE_LEVELS,
    PrincipalFit,
    batch_principal,
    grid_border,
    noise_level,
    pooled,
    soft_foreground,
)


@pytest.mark.parametrize(("ratio", "level"), [
    (0.0, 0), (0.19, 0), (0.2, 100), (0.39, 100), (0.4, 200), (0.6, 300), (0.79, 300), (0.8, 400), (1.0, 400),
])
def test_noise_level_in_fifths(ratio: float, level: int) -> None:
    assert noise_level(ratio) == level


def test_noise_level_table_and_range() -> None:
    assert NOISE_LEVELS == (0, 100, 200, 300, 400)
    assert [noise_level(i / 10 + 0.05) for i in range(10)] == [0, 0, 100, 100, 200, 200, 300, 300, 400, 400]
    for bad in (-0.01, 1.01, float("nan")):
        with pytest.raises(ValueError):
            noise_level(bad)


def _subject_tokens(b: int, side: int, inner: int, d: int = 6, seed: int = 0) -> torch.Tensor:
    """Tokens on a side x side grid: an `inner` x `inner` block at the centre (the subject) points one
    way, the rest another, plus a little noise."""
    g = torch.Generator().manual_seed(seed)
    fg_vec, bg_vec = torch.zeros(d), torch.zeros(d)
    fg_vec[0], bg_vec[1] = 3.0, 3.0
    mask = torch.zeros(side, side, dtype=torch.bool)
    lo = (side - inner) // 2
    mask[lo:lo + inner, lo:lo + inner] = True
    t = torch.where(mask.reshape(-1, 1), fg_vec, bg_vec).expand(b, -1, -1).clone()
    return t + 0.05 * torch.randn(t.shape, generator=g)


def test_principal_fit_finds_the_subject_and_its_ratio() -> None:
    fit = PrincipalFit(6)
    big, small = _subject_tokens(3, 8, 6, seed=1), _subject_tokens(3, 8, 2, seed=2)
    fit.add(big)
    fit.add(small)
    p = fit.result()
    assert fit.images == 6
    # oriented towards the centre: the subject projects positive whatever sign eigh returned
    assert float(p.project(big)[0].reshape(8, 8)[4, 4]) > 0 > float(p.project(big)[0].reshape(8, 8)[0, 0])
    assert torch.allclose(p.ratio(big), torch.full((3,), 36 / 64))
    assert torch.allclose(p.ratio(small), torch.full((3,), 4 / 64))
    assert noise_level(float(p.ratio(big)[0])) == 200 and noise_level(float(p.ratio(small)[0])) == 0


def test_principal_fit_orients_the_direction_towards_the_centre() -> None:
    t = _subject_tokens(2, 6, 2)
    centre = ~grid_border(6)
    directions = []
    for tokens in (t, -t):  # same covariance, so eigh returns the same vector: only the orientation differs
        fit = PrincipalFit(6)
        fit.add(tokens)
        d = fit.result().direction
        assert float((tokens[:, centre] @ d).mean()) > float((tokens[:, ~centre] @ d).mean())
        assert torch.allclose(batch_principal(tokens), d, atol=1e-4)
        directions.append(d)
    assert torch.allclose(directions[0], -directions[1], atol=1e-5)


def test_soft_map_and_pooling_by_hand() -> None:
    proj = torch.tensor([[0.0, 1.0, 3.0, 4.0]])
    fg = soft_foreground(proj)
    assert torch.allclose(fg, torch.tensor([[0.0, 0.25, 0.75, 1.0]]), atol=1e-6)
    feats = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [4.0, 0.0]]])
    f, b = pooled(feats, fg)
    # weights fg/2 = [0, .125, .375, .5] and (1 - fg)/2 = [.5, .375, .125, 0]
    assert torch.allclose(f, torch.tensor([[0.375 * 2 + 0.5 * 4, 0.125 + 0.375 * 2]]), atol=1e-5)
    assert torch.allclose(b, torch.tensor([[0.5 + 0.125 * 2, 0.375 + 0.125 * 2]]), atol=1e-5)

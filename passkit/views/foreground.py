"""The foreground of an image from a frozen encoder's patch tokens, and the noise level it sets.

GenView (Li et al., ECCV 2024) separates foreground from background by projecting patch tokens on
their first principal component. Generation uses it to pick how much noise the diffusion model adds
to the image embedding: an image mostly foreground keeps its subject under more noise, so it gets a
stronger variation; an image with a small subject gets little noise, so the variation keeps it. The
quality-driven loss uses the soft map to pool foreground and background features of two views.

Pure functions of tensors (torch), so each can be checked on hand-made tokens.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

# Foreground ratio in fifths -> the unCLIP image-embedding noise level, as the reference maps them.
RATIO_EDGES = (0.2, 0.4, 0.6, 0.8)
NOISE_LEVELS = (0, 100, 200, 300, 400)


def noise_level(ratio: float) -> int:
    """The noise level for a foreground ratio in [0, 1]: [0, .2) -> 0, [.2, .4) -> 100, ... [.8, 1] -> 400.

    A ratio of exactly 1 stays in the last fifth (the reference's table has no sixth level to give it)."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"a foreground ratio is in [0, 1], got {ratio}")
    return NOISE_LEVELS[bisect.bisect_right(RATIO_EDGES, ratio)]


def grid_border(side: int) -> torch.Tensor:
    """[side * side] booleans: the patches on the grid's outer ring (where background usually is)."""
    b = torch.zeros(side, side, dtype=torch.bool)
    b[0, :] = b[-1, :] = b[:, 0] = b[:, -1] = True
    return b.reshape(-1)


@dataclass(slots=True)
class Principal:
    """The first principal direction of patch tokens, oriented so foreground projects positive."""

    mean: torch.Tensor  # [D]
    direction: torch.Tensor  # [D], unit length

    def project(self, tokens: torch.Tensor) -> torch.Tensor:
        """[..., N, D] tokens -> [..., N] signed distances from the mean along the direction."""
        return (tokens.float() - self.mean) @ self.direction

    def ratio(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, N, D] -> [B]: the share of each image's patches on the foreground side of the mean."""
        return (self.project(tokens) > 0).float().mean(-1)


@dataclass(slots=True)
class TokenSums:
    """What a principal direction needs of a set of patch tokens, as float64 sums (D + D x D numbers,
    however many tokens went in), so fits stream and partial fits add up (across batches or ranks)."""

    tokens: int
    images: int
    sum: torch.Tensor  # [D]
    outer: torch.Tensor  # [D, D]
    inner_sum: torch.Tensor  # [D]: per image, the mean of the patches off the grid's border, summed
    border_sum: torch.Tensor  # [D]: the same for the border patches

    @staticmethod
    def of(tokens: torch.Tensor) -> TokenSums:
        """[B, N, D] patch tokens on a square grid; the sums are computed where the tokens are (a D x D
        product on the GPU, not a copy of every token to the CPU)."""
        b, n, d = tokens.shape
        side = round(n ** 0.5)
        if side * side != n:
            raise ValueError(f"patch tokens must form a square grid, got {n}")
        border = grid_border(side).to(tokens.device)
        x = tokens.detach().to(torch.float64)
        flat = x.reshape(-1, d)
        # a grid under 3 x 3 has no inner patch: nothing then says which way the foreground lies
        inner = x[:, ~border].mean(1).sum(0) if side > 2 else torch.zeros_like(flat[0])
        return TokenSums(flat.shape[0], b, flat.sum(0), flat.T @ flat, inner, x[:, border].mean(1).sum(0))

    def principal(self) -> Principal:
        """The first principal direction, turned towards the patches away from the grid's border."""
        if self.tokens < 2:
            raise ValueError("a principal direction needs the tokens of at least one image")
        mean = self.sum / self.tokens
        cov = self.outer / self.tokens - torch.outer(mean, mean)
        _, vectors = torch.linalg.eigh(cov)  # ascending eigenvalues: the last vector is the first component
        direction = vectors[:, -1]
        if torch.dot(direction, self.inner_sum - self.border_sum) < 0:
            direction = -direction
        return Principal(mean.float(), direction.float())


class PrincipalFit:
    """Streams patch tokens into the sums a principal direction needs (float64, D x D), so the fit
    covers as many images as asked without holding their tokens.

    A principal direction's sign is arbitrary; the fit turns it towards the patches away from the
    grid's border, averaged over every image seen, because subjects sit nearer the centre than the
    edges far more often than not (the assumption GenView's fixed threshold also encodes)."""

    def __init__(self, dim: int) -> None:
        z = torch.zeros(dim, dtype=torch.float64)
        self.sums = TokenSums(0, 0, z, torch.zeros(dim, dim, dtype=torch.float64), z.clone(), z.clone())

    @property
    def images(self) -> int:
        return self.sums.images

    def add(self, tokens: torch.Tensor) -> None:
        """[B, N, D] patch tokens of B images on a square grid of N patches."""
        t = TokenSums.of(tokens)
        s = self.sums
        self.sums = TokenSums(s.tokens + t.tokens, s.images + t.images, s.sum + t.sum.cpu(), s.outer + t.outer.cpu(),
                              s.inner_sum + t.inner_sum.cpu(), s.border_sum + t.border_sum.cpu())

    def result(self) -> Principal:
        return self.sums.principal()


def fit_tokens(batches: Iterable[Sequence[Any]], tokens: Callable[[Sequence[Any]], torch.Tensor],
               limit: int) -> tuple[Principal, int] | None:
    """(the principal direction of `tokens(batch)` over the first `limit` items of `batches`, the
    images used), streamed through a PrincipalFit; None when `batches` holds nothing. Items past
    `limit` are never passed to `tokens` (the encoder's forward pass is the cost)."""
    fit: PrincipalFit | None = None
    for batch in batches:
        part = batch[: limit - (fit.images if fit else 0)]
        if len(part):
            t = tokens(part)
            fit = fit or PrincipalFit(t.shape[-1])
            fit.add(t)
        if fit is not None and fit.images >= limit:
            break
    return None if fit is None else (fit.result(), fit.images)


def soft_foreground(projection: torch.Tensor) -> torch.Tensor:
    """[B, N] projections -> [B, N] soft foreground map in [0, 1], each image min-max scaled on its own
    (so only the direction matters, not where the release's mean lies)."""
    lo = projection.min(-1, keepdim=True).values
    hi = projection.max(-1, keepdim=True).values
    return (projection - lo) / (hi - lo + 1e-7)


def pooled(features: torch.Tensor, fg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, N, D] features and [B, N] soft map -> foreground and background features [B, D]: the means
    weighted by the map and by one minus it."""
    bg = 1.0 - fg
    wf = fg / (fg.sum(-1, keepdim=True) + 1e-7)
    wb = bg / (bg.sum(-1, keepdim=True) + 1e-7)
    return torch.einsum("bn,bnd->bd", wf, features), torch.einsum("bn,bnd->bd", wb, features)


def batch_principal(features: torch.Tensor) -> torch.Tensor:
    """[B, N, D] -> [D]: the first principal direction of one batch's patch features, oriented towards
    the non-border patches as PrincipalFit orients it; computed on the features' device, for a scoring
    network whose features move during training, where a direction fitted once would go stale."""
    b, n, d = features.shape
    side = round(n ** 0.5)
    if side * side != n:
        raise ValueError(f"patch features must form a square grid, got {n}")
    x = features.detach().float()
    flat = x.reshape(-1, d)
    centred = flat - flat.mean(0)
    _, vectors = torch.linalg.eigh(centred.T @ centred / flat.shape[0])
    direction = vectors[:, -1]
    border = grid_border(side).to(features.device)
    if torch.dot(direction, x[:, ~border].mean((0, 1)) - x[:, border].mean((0, 1))) < 0:
        direction = -direction
    return direction

"""GenView's quality-driven contrastive loss, the part that needs a network: which one scores the pairs.

The reference scores each positive pair with a frozen, pretrained CLIP ConvNeXt: its feature maps
of both views, a PCA-based soft foreground map (passkit.views.foreground), the foreground and
background features pooled with it, quality = cos(fg1, fg2) - cos(bg1, bg2), and per-pair weights
w = B softmax(gamma * quality) (passkit.recipes.losses.quality_weights) on the InfoNCE terms.

The scoring network is pluggable (`Scorer`: images in, [B, N, D] feature tokens on a square grid
out, no gradient):

- `MomentumScorer` (the default, no weights needed): the recipe's own momentum (key) encoder's last
  feature maps. What that changes against the reference: the scorer starts random and learns with
  the run, so early weights say little about objects (they follow low-level structure) and later
  ones judge pairs by what this very network has learned, not by an independent pretrained notion
  of "object"; a direction fitted once would go stale, so the principal direction is refitted on
  every batch (batch_principal) instead of being fitted on the release and stored with the run;
  the maps are coarser (the backbone's last stage, e.g. 4 x 4 at 32 px with the small stem) and cost
  two extra forward passes of the key backbone without gradient per step.
- `OpenClipScorer`: a frozen open_clip ConvNeXt from a local weights file, as the reference uses;
  needs the optional `open_clip_torch` package, and says so when it is missing.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from passkit.recipes.losses import quality_weights
from passkit.views.foreground import batch_principal, pooled, soft_foreground

MOMENTUM = "momentum"


class ScorerUnavailable(ValueError):
    """The scoring network asked for cannot be built here; the message says why and what instead."""


class Scorer(Protocol):
    name: str

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised images [B, 3, H, W] -> feature tokens [B, N, D] (N a square), without gradient."""
        ...


def resnet_tokens(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A torchvision ResNet's last-stage feature maps as tokens [B, h*w, C] (the stem and stages of
    its forward, without the pooling)."""
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))  # type: ignore[operator]
    for stage in (net.layer1, net.layer2, net.layer3, net.layer4):  # type: ignore[attr-defined]
        x = stage(x)
    return x.flatten(2).transpose(1, 2)


class MomentumScorer:
    """The momentum encoder's backbone as the scoring network (see the module docstring).

    It runs in the mode the encoder is in (training: batch statistics, as the key encoder sees its
    batches), and its normalisation layers' running statistics are put back afterwards, so scoring
    leaves the encoder exactly as the recipe's own key pass left it."""

    name = MOMENTUM

    def __init__(self, backbone: nn.Module):
        self.backbone = backbone  # shared with the recipe's model, not a copy: it follows the EMA

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        saved = [b.clone() for b in self.backbone.buffers()]
        try:
            return resnet_tokens(self.backbone, images)
        finally:
            for b, s in zip(self.backbone.buffers(), saved, strict=True):
                b.copy_(s)


class OpenClipScorer:
    """A frozen open_clip ConvNeXt (the reference's scorer) from a local checkpoint file.

    Not exercised here: open_clip is not installed in passkit's test environment, so only the
    message for its absence is tested; the feature-map path follows open_clip's timm ConvNeXt trunk."""

    def __init__(self, arch: str, weights: Path):
        if importlib.util.find_spec("open_clip") is None:
            raise ScorerUnavailable(
                f"the quality scorer {arch} needs open_clip (pip install open_clip_torch), which is not "
                f"installed; use the weights-free scorer 'momentum' (the recipe's momentum encoder) instead")
        if not Path(weights).is_file():
            raise ScorerUnavailable(f"{weights}: no such weights file for the quality scorer {arch}")
        import open_clip

        model = open_clip.create_model(arch, pretrained=str(weights))
        self.trunk: nn.Module = model.visual.trunk.eval().requires_grad_(False)
        self.name = f"open_clip:{arch}"

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.trunk.to(images.device)
        maps = self.trunk.forward_features(images)  # type: ignore[operator]
        return maps.flatten(2).transpose(1, 2)


def build_scorer(spec: str, momentum_backbone: nn.Module) -> Any:
    """`spec`: "momentum", or "open_clip:ARCH:WEIGHTS_FILE" (e.g. open_clip:convnext_base:/models/cb.bin)."""
    if spec == MOMENTUM:
        return MomentumScorer(momentum_backbone)
    parts = spec.split(":", 2)
    if len(parts) == 3 and parts[0] == "open_clip":
        return OpenClipScorer(parts[1], Path(parts[2]))
    raise ScorerUnavailable(f"unknown quality scorer {spec!r}; use 'momentum' or 'open_clip:ARCH:WEIGHTS_FILE'")


def pair_weights(scorer: Scorer, view1: torch.Tensor, view2: torch.Tensor, gamma: float
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights [B], quality [B]) of the positive pairs (view1[i], view2[i]); both detached.

    One principal direction for the batch's tokens of both views, so both views' foregrounds are
    measured along the same axis."""
    t1, t2 = scorer(view1).float(), scorer(view2).float()
    direction = batch_principal(torch.cat([t1, t2]))
    fg_map1, fg_map2 = soft_foreground(t1 @ direction), soft_foreground(t2 @ direction)
    fg1, bg1 = pooled(t1, fg_map1)
    fg2, bg2 = pooled(t2, fg_map2)
    w = quality_weights(fg1, fg2, bg1, bg2, gamma)
    quality = (torch.nn.functional.cosine_similarity(fg1, fg2, dim=-1)
               - torch.nn.functional.cosine_similarity(bg1, bg2, dim=-1))
    return w, quality.detach()

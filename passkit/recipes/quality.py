"""GenView's quality-driven contrastive loss, the part that needs a network: which one scores the pairs,
and the foreground direction its feature maps are projected on.

The reference scores each positive pair with a frozen, pretrained CLIP ConvNeXt: its feature maps
of both views, a soft foreground map from their projection on a principal direction fitted once on
a fixed sample of training images (passkit.views.foreground), the foreground and background
features pooled with it, quality = cos(fg1, fg2) - cos(bg1, bg2), and per-pair weights
w = B softmax(gamma * quality) (passkit.recipes.losses.quality_weights) on the InfoNCE terms.

The scoring network is pluggable (`Scorer`: images in, [B, N, D] feature tokens on a square grid
out, no gradient):

- `OpenClipScorer`: a frozen open_clip ConvNeXt from a local weights file, as the reference uses
  (`open_clip:ARCH:WEIGHTS_FILE`; needs the optional `open_clip_torch` package and says so when it
  is missing). Its features never change, so one direction serves the whole run: `passkit validate`
  fits it before training on up to PCA_IMAGES release images (streamed: only D x D sums are held),
  writes it beside the checkpoint (PCA_FILE) and into the validation folder, and a resumed run reads
  it back instead of fitting again.
- `MomentumScorer` (the default, no weights needed): the recipe's own momentum (key) encoder's last
  feature maps. What that changes against the reference: the scorer starts random and learns with
  the run, so early weights say little about objects (they follow low-level structure) and later
  ones judge pairs by what this very network has learned, not by an independent pretrained notion
  of "object"; the maps are coarser (the backbone's last stage, e.g. 4 x 4 at 32 px with the small
  stem) and cost two extra forward passes of the key backbone without gradient per step. A direction
  fitted once would describe a network that no longer exists, so it is refitted at a fixed interval
  (`QualityPCA`): the key encoder's tokens of the training batches (release images) are summed over
  a window of `refit_images` images (PCA_IMAGES by default, the same count as the frozen fit) and the
  window's direction serves the next window. That costs no extra forward pass or read of the release
  (the tokens are computed for scoring anyway), and the window is short against how slowly an EMA
  encoder moves. Before the first window is full, each batch's own direction is used (nothing of
  this encoder has been fitted yet). The direction in use, the fit count, the last drift (cosine
  between successive fits) and the partial window are model buffers, so the checkpoint holds them and
  a resumed run goes on from them; every refit's vectors are not kept (they would grow with the run,
  and the checkpoint already makes the run reproducible): their count and drift are logged per step.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from passkit.atomic import atomic_path
from passkit.recipes.augment import IMAGENET_MEAN, IMAGENET_STD
from passkit.recipes.losses import quality_weights
from passkit.views.foreground import (
    Principal,
    TokenSums,
    batch_principal,
    fit_tokens,
    pooled,
    soft_foreground,
)

MOMENTUM = "momentum"
PCA_IMAGES = 10_000  # the reference fits on a fixed list of 10 images of each of ImageNet's 1000 classes
PCA_FILE = "quality_pca.json"


class ScorerUnavailable(ValueError):
    """The scoring network asked for cannot be built here; the message says why and what instead."""


class Scorer(Protocol):
    name: str
    dim: int  # the tokens' width
    frozen: bool  # True: the features never change, so one direction fitted on the release serves the run

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
    frozen = False

    def __init__(self, backbone: nn.Module, dim: int):
        self.backbone = backbone  # shared with the recipe's model, not a copy: it follows the EMA
        self.dim = dim

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        saved = [b.clone() for b in self.backbone.buffers()]
        try:
            return resnet_tokens(self.backbone, images)
        finally:
            for b, s in zip(self.backbone.buffers(), saved, strict=True):
                b.copy_(s)


_OPEN_CLIP: dict[tuple[str, str, int, int], nn.Module] = {}  # one model: validate's fit and the run share it


def _open_clip_trunk(arch: str, weights: Path) -> tuple[nn.Module, dict[str, Any]]:
    """(the visual trunk, the preprocessing config) of open_clip model `arch` with `weights` loaded."""
    import open_clip

    st = weights.stat()
    key = (arch, str(weights.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _OPEN_CLIP:
        if arch not in open_clip.list_models():
            raise ScorerUnavailable(f"open_clip has no model {arch!r} (e.g. convnext_base_w, the reference's)")
        try:
            model = open_clip.create_model(arch, pretrained=str(weights), load_weights=True)
        except Exception as e:  # a file of other weights or none: torch, safetensors and pickle each say it their way
            raise ScorerUnavailable(f"{weights} does not load into open_clip's {arch}: {e}") from None
        _OPEN_CLIP.clear()
        _OPEN_CLIP[key] = model.visual
    visual = _OPEN_CLIP[key]
    trunk = getattr(visual, "trunk", None)
    if trunk is None or not hasattr(trunk, "forward_features"):
        raise ScorerUnavailable(f"open_clip's {arch} has no timm trunk (a ConvNeXt has one): its feature maps "
                                f"before pooling cannot be read")
    return trunk, dict(getattr(visual, "preprocess_cfg", {}) or {}, image_size=visual.image_size)


class OpenClipScorer:
    """A frozen open_clip ConvNeXt (the reference's scorer) from a local weights file: the visual
    trunk's feature maps before pooling, as tokens.

    Views arrive normalised with ImageNet's statistics; they are renormalised with the CLIP model's
    own, and a view smaller than the network's input size is upsampled to it first (a ConvNeXt's
    stride is 32, so a 32 px view would give one cell, no foreground to find). The trunk stays in
    eval mode without gradients, on the device of the images it is given, and out of the recipe's
    state dict (it is not a submodule: nothing of it is trained or checkpointed)."""

    frozen = True

    def __init__(self, arch: str, weights: Path):
        if importlib.util.find_spec("open_clip") is None:
            raise ScorerUnavailable(
                f"the quality scorer {arch} needs open_clip (pip install open_clip_torch timm, or "
                f"'passkit[genview]'), which is not installed; use the weights-free scorer 'momentum' "
                f"(the recipe's momentum encoder) instead")
        weights = Path(weights)
        if not weights.is_file():
            raise ScorerUnavailable(f"{weights}: no such weights file for the quality scorer {arch}")
        trunk, cfg = _open_clip_trunk(arch, weights)
        self.trunk = trunk.eval().requires_grad_(False)
        self.name = f"open_clip:{arch}"
        self.weights = weights
        self.dim = int(trunk.num_features)
        size = cfg["image_size"]
        self.size = int(size[0] if isinstance(size, (tuple, list)) else size)
        mean, std = cfg.get("mean") or (0.48145466, 0.4578275, 0.40821073), cfg.get("std") or (0.26862954, 0.26130258, 0.27577711)
        self._in = (torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self._clip = (torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1))

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        p = next(self.trunk.parameters())
        if p.device != images.device:
            self.trunk.to(images.device)
        dev = images.device
        x = images.float() * self._in[1].to(dev) + self._in[0].to(dev)
        x = (x - self._clip[0].to(dev)) / self._clip[1].to(dev)
        if min(x.shape[-2:]) < self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        maps = self.trunk.forward_features(x)  # type: ignore[operator]
        return maps.flatten(2).transpose(1, 2)

    def fingerprint(self) -> str:
        """sha256 of the weights file: what a stored direction was fitted with."""
        h = hashlib.sha256()
        with open(self.weights, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        return h.hexdigest()


def parse_scorer(spec: str) -> tuple[str, str, Path] | None:
    """None for "momentum"; ("open_clip", ARCH, WEIGHTS_FILE) for "open_clip:ARCH:WEIGHTS_FILE"."""
    if spec == MOMENTUM:
        return None
    parts = spec.split(":", 2)
    if len(parts) == 3 and parts[0] == "open_clip" and parts[1] and parts[2]:
        return parts[0], parts[1], Path(parts[2])
    raise ScorerUnavailable(f"unknown quality scorer {spec!r}; use 'momentum' or 'open_clip:ARCH:WEIGHTS_FILE'")


def build_scorer(spec: str, momentum_backbone: nn.Module | None = None, dim: int = 0) -> Any:
    """`spec`: "momentum" (needs the momentum backbone and its width), or "open_clip:ARCH:WEIGHTS_FILE"
    (e.g. open_clip:convnext_base_w:/models/open_clip_pytorch_model.bin)."""
    parsed = parse_scorer(spec)
    if parsed is None:
        if momentum_backbone is None:
            raise ScorerUnavailable("the momentum scorer is the recipe's own key encoder: build it with the model")
        return MomentumScorer(momentum_backbone, dim)
    return OpenClipScorer(parsed[1], parsed[2])


class QualityPCA(nn.Module):
    """The foreground direction the quality loss projects on, kept as buffers so the checkpoint holds it.

    Loaded once (`load`, a frozen scorer's direction fitted on the release), or, with `refit_images`,
    refitted from the training batches' tokens every `refit_images` images (`observe`; the momentum
    scorer, see the module docstring). `current()` is None until a direction exists. Under DDP each
    rank sums its own batches (the window buffers are kept out of DDP's buffer broadcast) and the
    sums are all-reduced at a refit, so every rank fits the same direction from all ranks' images."""

    WINDOW = ("w_sum", "w_outer", "w_inner", "w_border", "w_tokens", "w_images")

    def __init__(self, dim: int, refit_images: int = 0):
        super().__init__()
        self.refit_images = int(refit_images)
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("direction", torch.zeros(dim))
        self.register_buffer("fits", torch.zeros((), dtype=torch.long))
        self.register_buffer("drift", torch.ones(()))  # cosine between the last two fits (1: none yet)
        if self.refit_images:
            f64 = torch.float64
            for name, shape in (("w_sum", (dim,)), ("w_outer", (dim, dim)), ("w_inner", (dim,)), ("w_border", (dim,))):
                self.register_buffer(name, torch.zeros(shape, dtype=f64))
            self.register_buffer("w_tokens", torch.zeros((), dtype=torch.long))
            self.register_buffer("w_images", torch.zeros((), dtype=torch.long))

    def current(self) -> Principal | None:
        return Principal(self.mean, self.direction) if int(self.fits) > 0 else None

    @torch.no_grad()
    def load(self, principal: Principal) -> None:
        if principal.direction.shape != self.direction.shape:
            raise ValueError(f"a direction of width {principal.direction.shape[0]} does not fit the scorer's "
                             f"{self.direction.shape[0]}")
        self._set(principal)

    def _set(self, principal: Principal) -> None:
        if int(self.fits) > 0:
            self.drift.copy_(torch.dot(self.direction, principal.direction.to(self.direction)))
        self.mean.copy_(principal.mean)
        self.direction.copy_(principal.direction)
        self.fits += 1

    @torch.no_grad()
    def observe(self, *tokens: torch.Tensor) -> bool:
        """Add a batch's tokens (one tensor per view, [B, N, D] each) to the window; refit when it holds
        `refit_images` images (all ranks together). True when this call refitted."""
        if not self.refit_images:
            return False
        for t in tokens:
            s = TokenSums.of(t)
            self.w_sum += s.sum
            self.w_outer += s.outer
            self.w_inner += s.inner_sum
            self.w_border += s.border_sum
            self.w_tokens += s.tokens
        self.w_images += tokens[0].shape[0]  # views of one image count once
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        if int(self.w_images) * world < self.refit_images:
            return False
        window = [getattr(self, n) for n in self.WINDOW]
        if world > 1:
            for t in window:
                dist.all_reduce(t)
        sums = TokenSums(int(self.w_tokens), int(self.w_images), self.w_sum, self.w_outer, self.w_inner, self.w_border)
        self._set(sums.principal())
        for t in window:
            t.zero_()
        return True


def token_weights(t1: torch.Tensor, t2: torch.Tensor, gamma: float, principal: Principal | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights [B], quality [B]) of the pairs whose views have tokens t1[i], t2[i]; both detached.

    Both views are projected on the same direction: the stored one, or without one the first
    principal direction of this batch's tokens of both views."""
    t1, t2 = t1.float(), t2.float()
    direction = principal.direction.to(t1) if principal is not None else batch_principal(torch.cat([t1, t2]))
    fg_map1, fg_map2 = soft_foreground(t1 @ direction), soft_foreground(t2 @ direction)
    fg1, bg1 = pooled(t1, fg_map1)
    fg2, bg2 = pooled(t2, fg_map2)
    w = quality_weights(fg1, fg2, bg1, bg2, gamma)
    quality = F.cosine_similarity(fg1, fg2, dim=-1) - F.cosine_similarity(bg1, bg2, dim=-1)
    return w, quality.detach()


def pair_weights(scorer: Scorer, view1: torch.Tensor, view2: torch.Tensor, gamma: float,
                 principal: Principal | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """token_weights of the scorer's tokens of the two views."""
    return token_weights(scorer(view1), scorer(view2), gamma, principal)


def fit_release(scorer: Scorer, batches: Any, limit: int = PCA_IMAGES) -> tuple[Principal, int]:
    """(the principal direction of the scorer's tokens, images used) over up to `limit` images from
    `batches` (normalised image tensors on the scorer's device), streamed: only the sums are held."""
    got = fit_tokens(batches, scorer, limit)
    if got is None:
        raise ValueError("no images to fit the quality loss's foreground direction on")
    return got


def write_pca(path: Path, principal: Principal, info: dict[str, Any]) -> None:
    """A direction and what it was fitted with, as JSON (readable, and the same on every platform)."""
    doc = {**info, "dim": int(principal.direction.shape[0]), "mean": principal.mean.float().tolist(),
           "direction": principal.direction.float().tolist()}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, sort_keys=True) + "\n", encoding="utf-8")


def read_pca(path: Path) -> tuple[Principal, dict[str, Any]]:
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    principal = Principal(torch.tensor(doc.pop("mean")), torch.tensor(doc.pop("direction")))
    return principal, doc

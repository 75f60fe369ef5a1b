"""MoCo v2 (He et al. 2020; Chen et al. 2020): a query encoder trained with InfoNCE against a
momentum-updated key encoder and a queue of K past keys, with an MLP head and "aug+" views.

Options from "Improving Contrastive Learning by Visualizing Feature Transformation" (Zhu et al.,
ICCV 2021), both off by default:
- positive extrapolation: q' = l*q + (1-l)*k and k' = l*k + (1-l)*q with l ~ Beta(2,2) + 1 (l > 1
  pushes the pair apart: harder positives), re-normalised;
- negative interpolation: each queue entry is mixed with a random other one,
  n' = l*n_i + (1-l)*n_j with l ~ Beta(1.6,1.6), re-normalised; the mixed negatives replace the
  queue's in the loss (K is unchanged, so the chance-level loss stays ln(K+1)), the stored queue is not changed.

GenView's quality-driven loss (Li et al., ECCV 2024), off by default (`quality_loss`): each query's
InfoNCE term is weighted by how much its pair's foregrounds agree beyond their backgrounds, w = B
softmax(gamma * quality), detached; the scoring network is passkit.recipes.quality's (by default this
model's momentum encoder; what that weights-free fallback changes against the reference is said there),
and the foreground direction its maps are projected on is the model's `quality_pca` buffers (fitted on
the release for a frozen scorer, refitted every `quality_refit_images` training images for the momentum
encoder), so checkpoints carry it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from passkit.recipes.augment import two_views
from passkit.recipes.backbones import build_backbone, mlp_head
from passkit.recipes.engine import is_distributed
from passkit.recipes.losses import weighted_info_nce
from passkit.recipes.optim import OptimConfig
from passkit.recipes.presets import Preset
from passkit.recipes.quality import PCA_IMAGES, QualityPCA, build_scorer, read_pca, token_weights
from passkit.recipes.recipe import StepOutput


@dataclass(slots=True)
class MoCoConfig:
    arch: str = "resnet50"
    small_stem: bool = False
    width: int = 64  # ResNet base width (64: torchvision's; 16 for CPU tests)
    image_size: int = 224
    dim: int = 128  # projection dimension
    queue: int = 65536  # K
    momentum: float = 0.999  # m, key encoder EMA
    temperature: float = 0.2  # T (MoCo v2)
    bn_splits: int = 8  # single-process shuffled-BN emulation (1 under DDP: keys are shuffled across ranks)
    ft_positive: bool = False
    ft_negative: bool = False
    ft_pos_alpha: float = 2.0  # l+ ~ Beta(a, a) + 1
    ft_neg_alpha: float = 1.6  # l- ~ Beta(a, a)
    hist_negatives: int = 4096  # negative similarities kept per step for the histograms
    quality_loss: bool = False  # GenView: InfoNCE terms weighted by the pairs' foreground quality
    quality_gamma: float = 1.0  # w = B softmax(gamma * quality): 0 gives every pair weight 1
    quality_scorer: str = "momentum"  # or "open_clip:ARCH:WEIGHTS_FILE" (passkit.recipes.quality)
    quality_pca: str | None = None  # a frozen scorer's direction fitted on the release (quality.write_pca's file)
    quality_refit_images: int = PCA_IMAGES  # the momentum scorer: refit its direction every this many images

    @property
    def chance_loss(self) -> float:
        """InfoNCE of an encoder that cannot tell the positive from K negatives: ln(K+1)."""
        return math.log(self.queue + 1)


@torch.no_grad()
def concat_all_gather(x: torch.Tensor) -> torch.Tensor:
    if not is_distributed():
        return x
    out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out)


class MoCo(nn.Module):
    def __init__(self, cfg: MoCoConfig):
        super().__init__()
        self.cfg = cfg
        splits = 1 if is_distributed() else cfg.bn_splits
        backbone, feat = build_backbone(cfg.arch, small_stem=cfg.small_stem, bn_splits=splits, width=cfg.width)
        self.backbone = backbone
        self.encoder_q = nn.Sequential(backbone, mlp_head(feat, feat, cfg.dim))
        self.encoder_k = copy.deepcopy(self.encoder_q)
        for p in self.encoder_k.parameters():
            p.requires_grad = False
        self.register_buffer("queue", F.normalize(torch.randn(cfg.dim, cfg.queue), dim=0))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.feature_dim = feat
        # a plain attribute, not a submodule: the scorer's weights are the key encoder's own (or frozen
        # ones kept out of checkpoints); only its foreground direction joins the state dict
        self.scorer = build_scorer(cfg.quality_scorer, self.encoder_k[0], feat) if cfg.quality_loss else None
        self.quality_pca: QualityPCA | None = None
        if self.scorer is not None:
            self.quality_pca = QualityPCA(self.scorer.dim, 0 if self.scorer.frozen else cfg.quality_refit_images)
            if cfg.quality_pca:
                self.quality_pca.load(read_pca(Path(cfg.quality_pca))[0])
            # each rank sums its own batches into the refit window; DDP must not overwrite them with rank 0's
            self._ddp_params_and_buffers_to_ignore = [f"quality_pca.{n}" for n in QualityPCA.WINDOW]

    @torch.no_grad()
    def momentum_update(self, m: float | None = None) -> None:
        m = self.cfg.momentum if m is None else m
        for pq, pk in zip(self.encoder_q.parameters(), self.encoder_k.parameters(), strict=True):
            pk.mul_(m).add_(pq.detach(), alpha=1 - m)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        keys = concat_all_gather(keys)
        n, k = keys.shape[0], self.cfg.queue
        if n >= k:
            self.queue.copy_(keys[-k:].T)
            self.queue_ptr.zero_()
            return
        idx = (self.queue_ptr + torch.arange(n, device=keys.device)) % k  # wraps: any batch size works
        self.queue[:, idx] = keys.T.to(self.queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + n) % k)

    @torch.no_grad()
    def _keys(self, im_k: torch.Tensor) -> torch.Tensor:
        """Key embeddings computed on a shuffled batch (shuffled BN), returned in the input order."""
        if is_distributed():
            return self._keys_ddp(im_k)
        perm = torch.randperm(im_k.shape[0], device=im_k.device)
        k = self.encoder_k(im_k[perm])
        return F.normalize(k.float(), dim=1)[torch.argsort(perm)]

    @torch.no_grad()
    def _keys_ddp(self, im_k: torch.Tensor) -> torch.Tensor:
        n = im_k.shape[0]
        all_k = concat_all_gather(im_k)
        world, rank = dist.get_world_size(), dist.get_rank()
        perm = torch.randperm(all_k.shape[0], device=im_k.device)
        dist.broadcast(perm, src=0)
        mine = perm.view(world, -1)[rank]
        k = F.normalize(self.encoder_k(all_k[mine]).float(), dim=1)
        k_all = concat_all_gather(k)
        return k_all[torch.argsort(perm)].view(world, n, -1)[rank]

    def forward(self, im_q: torch.Tensor, im_k: torch.Tensor) -> StepOutput:
        cfg = self.cfg
        q = F.normalize(self.encoder_q(im_q).float(), dim=1)
        k = k_clean = self._keys(im_k)
        negatives = self.queue.clone().detach()
        if self.training and cfg.ft_positive:
            lam = torch.distributions.Beta(cfg.ft_pos_alpha, cfg.ft_pos_alpha).sample((q.shape[0], 1)).to(q) + 1
            q, k = F.normalize(lam * q + (1 - lam) * k, dim=1), F.normalize(lam * k + (1 - lam) * q.detach(), dim=1)
        if self.training and cfg.ft_negative:
            lam = torch.distributions.Beta(cfg.ft_neg_alpha, cfg.ft_neg_alpha).sample((1, cfg.queue)).to(negatives)
            other = negatives[:, torch.randperm(cfg.queue, device=negatives.device)]
            negatives = F.normalize(lam * negatives + (1 - lam) * other, dim=0)
        l_pos = (q * k).sum(1, keepdim=True)
        l_neg = q @ negatives
        weights = quality = None
        if self.scorer is not None and self.quality_pca is not None:
            t_q, t_k = self.scorer(im_q), self.scorer(im_k)
            weights, quality = token_weights(t_q, t_k, cfg.quality_gamma, self.quality_pca.current())
            if self.training:
                self.quality_pca.observe(t_q, t_k)  # the next window's direction; this step used the last one
        loss, logits = weighted_info_nce(l_pos, l_neg, cfg.temperature, weights)
        if self.training:
            self.enqueue(k_clean)  # with positive extrapolation the loss saw mixed keys; store clean ones
        with torch.no_grad():
            acc = (logits.argmax(1) == 0).float().mean()
            nh = min(cfg.hist_negatives, l_neg.numel())
            neg_sample = l_neg.reshape(-1)[torch.randint(l_neg.numel(), (nh,), device=l_neg.device)]
        metrics = {"acc": acc, "pos_sim": l_pos.detach().mean(), "neg_sim": l_neg.detach().mean(),
                   "z_std": q.detach().std(0).mean() * math.sqrt(cfg.dim)}
        if weights is not None and quality is not None:
            metrics.update(quality=quality.mean(), weight_max=weights.max(), weight_min=weights.min())
            if self.quality_pca is not None:
                metrics.update(pca_fits=self.quality_pca.fits.float(), pca_drift=self.quality_pca.drift)
        return StepOutput(
            loss=loss,
            metrics=metrics,
            embeddings=q.detach(), pos_sim=l_pos.detach().reshape(-1), neg_sim=neg_sample.detach(),
        )


class MoCoV2:
    """The MoCo v2 recipe for passkit.recipes.engine."""

    name = "moco_v2"

    def __init__(self, cfg: MoCoConfig | None = None):
        self.cfg = cfg or MoCoConfig()

    def build_model(self) -> MoCo:
        return MoCo(self.cfg)

    def transform(self) -> Callable[[Any], tuple[torch.Tensor, ...]]:
        return two_views(self.cfg.image_size)

    def training_step(self, model: nn.Module, views: Sequence[torch.Tensor], step: int) -> StepOutput:
        if len(views) != 2:
            raise ValueError(f"MoCo v2 needs 2 views per sample, got {len(views)}")
        return model(views[0], views[1])

    def after_step(self, model: nn.Module, step: int, total_steps: int) -> None:
        model.momentum_update()  # type: ignore[operator]

    def features(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return model.backbone(images)  # type: ignore[operator]

    def embed(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """The projected embedding the contrastive loss compares (the query encoder's output)."""
        return model.encoder_q(images)  # type: ignore[operator]

    def describe(self) -> dict[str, Any]:
        return {"recipe": self.name, **asdict(self.cfg)}


def preset(name: str) -> Preset:
    """The validation preset `name` (smoke, small, full; see passkit.recipes.presets)."""
    if name == "smoke":
        # quality_refit_images 32: the momentum scorer's direction is refitted within the 20 steps
        return Preset("smoke", "moco_v2", MoCoConfig(arch="resnet18", width=16, small_stem=True, image_size=32,
                                                     queue=64, momentum=0.99, bn_splits=2, quality_refit_images=32),
                      OptimConfig(name="sgd", lr=0.03, weight_decay=1e-4), batch_size=8, steps=20,
                      eval_spec="synthetic:160:80", rankme_floor=2.0, judge_learning=False)
    if name == "small":
        return Preset("small", "moco_v2", MoCoConfig(arch="resnet18", width=32, small_stem=True, image_size=64,
                                                     queue=4096, momentum=0.99, bn_splits=4),
                      OptimConfig(name="sgd", lr=0.06, weight_decay=5e-4), batch_size=128, epochs=100,
                      eval_size=64, rankme_floor=16.0, knn_margin=0.02)
    return Preset("full", "moco_v2", MoCoConfig(arch="resnet50", image_size=224, queue=65536, momentum=0.999,
                                                bn_splits=8),
                  OptimConfig(name="sgd", lr=0.03, weight_decay=1e-4), batch_size=256, epochs=200,
                  eval_size=224, eval_spec="synthetic:2000:1000", warmup_frac=0.0, rankme_floor=64.0, knn_margin=0.05)

"""SwAV (Caron et al. 2020): online clustering with swapped prediction over multi-crop views.

Each view's projection z (l2-normalised) is scored against K learnable prototypes (unit
vectors). For each of the 2 large crops, Sinkhorn-Knopp (3 iterations, epsilon 0.05) turns the
detached scores of the batch (plus a queue of past large-crop projections, once the queue has
started) into soft codes q that use every prototype equally; every other view then predicts q
with softmax(scores / T). Prototypes are frozen for the first `freeze_prototypes_steps` steps (as
SwAV's first epoch) and re-normalised after every step. If the network collapses to one output
the codes stay equipartitioned but the predictions become uniform, so the loss sits at ln K: the
collapse alarm watches for that and for RankMe ~1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from passkit.recipes.collapse import CollapseAlarm
from passkit.recipes.engine import is_distributed
from passkit.recipes.losses import sinkhorn, swapped_prediction
from passkit.recipes.multicrop import MultiCropConfig, multi_crop, multi_crop_step
from passkit.recipes.optim import OptimConfig
from passkit.recipes.presets import Preset
from passkit.recipes.recipe import StepOutput
from passkit.recipes.vit import build_any_backbone


@dataclass(slots=True)
class SwAVConfig:
    arch: str = "resnet50"
    small_stem: bool = False
    width: int = 64
    patch_size: int = 16  # ViT backbones
    hidden_dim: int = 2048
    dim: int = 128
    prototypes: int = 3000
    temperature: float = 0.1
    sinkhorn_eps: float = 0.05
    sinkhorn_iters: int = 3
    queue: int = 3840  # 0: no queue
    queue_start_step: int = 15 * 500  # SwAV starts its queue at epoch 15
    freeze_prototypes_steps: int = 313  # SwAV: the first epoch's iterations
    crops: MultiCropConfig = field(default_factory=lambda: MultiCropConfig(224, 96, 2, 6))
    alarm_every: int = 10

    @property
    def chance_loss(self) -> float:
        """Swapped prediction of a collapsed network (uniform over the prototypes): ln K."""
        return math.log(self.prototypes)


class SwAV(nn.Module):
    def __init__(self, cfg: SwAVConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone, feat = build_any_backbone(cfg.arch, patch_size=cfg.patch_size, small_stem=cfg.small_stem,
                                                 width=cfg.width)
        self.projector = nn.Sequential(nn.Linear(feat, cfg.hidden_dim), nn.BatchNorm1d(cfg.hidden_dim),
                                       nn.ReLU(inplace=True), nn.Linear(cfg.hidden_dim, cfg.dim))
        self.prototypes = nn.Linear(cfg.dim, cfg.prototypes, bias=False)
        self.normalize_prototypes()
        # the queue holds projections of the 2 large crops: [2, Q, dim]; "queue_fill" counts valid rows
        self.register_buffer("queue", torch.zeros(2, cfg.queue, cfg.dim))
        self.register_buffer("queue_fill", torch.zeros((), dtype=torch.long))
        self.feature_dim = feat

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projector(self.backbone(x)).float(), dim=1)

    def forward(self, views: Sequence[torch.Tensor], step: int) -> StepOutput:
        cfg = self.cfg
        # same-size views go through the backbone together (BN statistics over all crops of a size)
        z: list[torch.Tensor] = []
        i = 0
        while i < len(views):
            j = i
            while j < len(views) and views[j].shape[-2:] == views[i].shape[-2:]:
                j += 1
            z += list(self.project(torch.cat(list(views[i:j]))).chunk(j - i))
            i = j
        frozen = step < cfg.freeze_prototypes_steps
        w = self.prototypes.weight.detach() if frozen else self.prototypes.weight  # frozen: no grad at all
        scores = [zi @ w.float().T for zi in z]
        use_queue = cfg.queue > 0 and step >= cfg.queue_start_step
        b = views[0].shape[0]
        codes: list[torch.Tensor] = []
        with torch.no_grad():
            for c in range(2):  # codes of the 2 large crops, from the batch and the queue's rows
                s = scores[c].detach()
                fill = int(self.queue_fill)
                if use_queue and fill > 0:
                    s = torch.cat([s, self.queue[c, :fill] @ w.float().T.detach()])
                codes.append(sinkhorn(s, cfg.sinkhorn_eps, cfg.sinkhorn_iters)[:b])
        loss = swapped_prediction(scores, codes, cfg.temperature)
        if self.training and use_queue:  # filled from queue_start_step, used as soon as it holds rows
            self._enqueue(torch.stack([z[0].detach(), z[1].detach()]))
        with torch.no_grad():
            pos = (z[0] * z[1]).sum(1)
            sim = z[0] @ z[1].T
            neg = sim[~torch.eye(b, dtype=torch.bool, device=sim.device)]
            p = F.softmax(scores[0] / cfg.temperature, dim=1)
            used = p.argmax(1).unique().numel()
        return StepOutput(loss=loss, metrics={"pos_sim": pos.mean(), "neg_sim": neg.mean(),
                                              "prototypes_used": float(used), "entropy": -(p * p.clamp_min(1e-12).log()).sum(1).mean()},
                          embeddings=z[0].detach(), pos_sim=pos, neg_sim=neg)

    @torch.no_grad()
    def _enqueue(self, z2: torch.Tensor) -> None:
        """Push the newest large-crop projections in front (SwAV's queue order), [2, B, dim]."""
        if is_distributed():
            out = [torch.empty_like(z2) for _ in range(dist.get_world_size())]
            dist.all_gather(out, z2.contiguous())
            z2 = torch.cat(out, dim=1)
        n, qlen = z2.shape[1], self.cfg.queue
        n = min(n, qlen)
        if n < qlen:
            self.queue[:, n:] = self.queue[:, :-n].clone()
        self.queue[:, :n] = z2[:, :n].to(self.queue.dtype)
        self.queue_fill.copy_(torch.clamp(self.queue_fill + n, max=qlen))


class SwAVRecipe:
    """The SwAV recipe for passkit.recipes.engine."""

    name = "swav"

    def __init__(self, cfg: SwAVConfig | None = None):
        self.cfg = cfg or SwAVConfig()
        self.alarm = CollapseAlarm(self.name, self.cfg.chance_loss, every=self.cfg.alarm_every,
                                   start=self.cfg.freeze_prototypes_steps)

    def build_model(self) -> SwAV:
        return SwAV(self.cfg)

    def transform(self) -> Callable[[Any], tuple[torch.Tensor, ...]]:
        return multi_crop(self.cfg.crops)

    def training_step(self, model: nn.Module, views: Sequence[torch.Tensor], step: int) -> StepOutput:
        return multi_crop_step("SwAV", self.cfg.crops, self.alarm, model, views, step)

    def after_step(self, model: nn.Module, step: int, total_steps: int) -> None:
        model.normalize_prototypes()  # type: ignore[operator]

    def features(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return model.backbone(images)  # type: ignore[operator]

    def embed(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Projected, l2-normalised embeddings (for alignment / uniformity)."""
        return model.project(images)  # type: ignore[operator]

    def describe(self) -> dict[str, Any]:
        return {"recipe": self.name, **asdict(self.cfg)}


def preset(name: str) -> Preset:
    """The validation preset `name` (smoke, small, full; see passkit.recipes.presets)."""
    if name == "smoke":
        crops = MultiCropConfig(32, 16, 2, 2, (0.3, 1.0), (0.1, 0.3), blur=False)
        return Preset("smoke", "swav", SwAVConfig(arch="vit_nano", patch_size=4, hidden_dim=128, dim=32, prototypes=30,
                                                  queue=0, freeze_prototypes_steps=2, crops=crops),
                      OptimConfig(name="adamw", lr=2e-3, weight_decay=0.04, min_8bit_size=1024), batch_size=8,
                      steps=20, eval_spec="synthetic:160:80", rankme_floor=2.0, judge_learning=False)
    if name == "small":
        crops = MultiCropConfig(64, 32, 2, 4, (0.3, 1.0), (0.1, 0.3))
        return Preset("small", "swav", SwAVConfig(arch="resnet18", width=32, small_stem=True, hidden_dim=512, dim=64,
                                                  prototypes=300, queue=1024, queue_start_step=500,
                                                  freeze_prototypes_steps=100, crops=crops),
                      OptimConfig(name="sgd", lr=0.1, weight_decay=1e-6), batch_size=128, epochs=100,
                      eval_size=64, rankme_floor=16.0, knn_margin=0.02)
    return Preset("full", "swav", SwAVConfig(), OptimConfig(name="lars", lr=0.6, weight_decay=1e-6),
                  batch_size=256, epochs=200, eval_size=224, eval_spec="synthetic:2000:1000",
                  rankme_floor=64.0, knn_margin=0.05)

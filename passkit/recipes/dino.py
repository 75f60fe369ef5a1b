"""DINO (Caron et al. 2021): self-distillation with no labels.

A student (backbone + projection head) is trained to match, on all multi-crop views, the
softmax output of a teacher that sees only the 2 large crops. The teacher is a deep copy of the
student updated as an EMA (momentum 0.996 -> 1 on a cosine over training); its outputs are
centred (centre EMA 0.9) and sharpened with a temperature warmed up linearly from 0.04 to 0.07
(student temperature 0.1). Centring alone flattens, sharpening alone collapses to one
dimension; together they avoid both. The head's last layer is weight-normalised and frozen for
the first epoch (`freeze_last_layer_steps`). If the outputs become uniform the loss sits at
ln(out_dim): the collapse alarm watches for that and for RankMe ~1. Backbones: ResNet (torchvision)
or ViT (passkit.recipes.vit).
"""

from __future__ import annotations

import copy
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
from passkit.recipes.losses import dino_loss
from passkit.recipes.multicrop import MultiCropConfig, multi_crop, multi_crop_step
from passkit.recipes.optim import OptimConfig
from passkit.recipes.presets import Preset
from passkit.recipes.recipe import StepOutput
from passkit.recipes.vit import build_any_backbone


@dataclass(slots=True)
class DINOConfig:
    arch: str = "vit_small"
    patch_size: int = 16
    drop_path: float = 0.1
    small_stem: bool = False
    width: int = 64
    out_dim: int = 65536
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    student_temp: float = 0.1
    teacher_temp: float = 0.04  # warmup start
    teacher_temp_final: float = 0.07
    teacher_temp_warmup_steps: int = 30 * 1250  # DINO: 30 epochs
    center_momentum: float = 0.9
    momentum: float = 0.996  # -> 1 on a cosine
    freeze_last_layer_steps: int = 1250  # the first epoch
    crops: MultiCropConfig = field(default_factory=lambda: MultiCropConfig(224, 96, 2, 10, (0.32, 1.0), (0.05, 0.32)))
    alarm_every: int = 10

    @property
    def chance_loss(self) -> float:
        """Cross-entropy to a uniform teacher over out_dim outputs: ln(out_dim)."""
        return math.log(self.out_dim)

    def teacher_temp_at(self, step: int) -> float:
        if step >= self.teacher_temp_warmup_steps:
            return self.teacher_temp_final
        t = step / max(1, self.teacher_temp_warmup_steps)
        return self.teacher_temp + t * (self.teacher_temp_final - self.teacher_temp)

    def momentum_at(self, step: int, total: int) -> float:
        return 1 - (1 - self.momentum) * (math.cos(math.pi * step / max(1, total)) + 1) / 2


class DINOHead(nn.Module):
    """MLP (3 layers, GELU) -> bottleneck -> l2-normalise -> weight-normalised last layer (norm fixed to 1)."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int, bottleneck_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, hidden_dim),
                                 nn.GELU(), nn.Linear(hidden_dim, bottleneck_dim))
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = nn.Parameter(torch.empty(out_dim, bottleneck_dim))
        nn.init.trunc_normal_(self.last_layer, std=0.02)

    def bottleneck(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(x), dim=-1)

    def forward(self, x: torch.Tensor, freeze_last: bool = False) -> torch.Tensor:
        w = self.last_layer.detach() if freeze_last else self.last_layer  # frozen: no grad, optimizer skips it
        return F.linear(self.bottleneck(x), F.normalize(w, dim=1))


class DINO(nn.Module):
    def __init__(self, cfg: DINOConfig):
        super().__init__()
        self.cfg = cfg
        backbone, feat = build_any_backbone(cfg.arch, patch_size=cfg.patch_size, drop_path=cfg.drop_path,
                                            small_stem=cfg.small_stem, width=cfg.width)
        self.student = nn.ModuleDict({"backbone": backbone,
                                      "head": DINOHead(feat, cfg.out_dim, cfg.hidden_dim, cfg.bottleneck_dim)})
        self.teacher = copy.deepcopy(self.student)
        for p in self.teacher.parameters():
            p.requires_grad = False
        self.register_buffer("center", torch.zeros(1, cfg.out_dim))
        self.feature_dim = feat

    @property
    def backbone(self) -> nn.Module:
        return self.student["backbone"]

    def _run(self, net: nn.ModuleDict, views: Sequence[torch.Tensor], freeze_last: bool = False) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Head outputs per view, and the backbone features of the first view; same-size views batched together."""
        outs: list[torch.Tensor] = []
        first: torch.Tensor | None = None
        i = 0
        while i < len(views):
            j = i
            while j < len(views) and views[j].shape[-2:] == views[i].shape[-2:]:
                j += 1
            f = net["backbone"](torch.cat(list(views[i:j])))
            if first is None:
                first = f[: views[0].shape[0]]
            outs += list(net["head"](f, freeze_last).float().chunk(j - i))  # type: ignore[call-arg]
            i = j
        assert first is not None
        return outs, first

    def forward(self, views: Sequence[torch.Tensor], step: int) -> StepOutput:
        cfg = self.cfg
        s_out, s_feat = self._run(self.student, views, freeze_last=step < cfg.freeze_last_layer_steps)
        with torch.no_grad():
            self.teacher.train(self.training)
            t_out, _ = self._run(self.teacher, views[:2])
            temp = cfg.teacher_temp_at(step)
        loss, t_prob = dino_loss(s_out, t_out, self.center, cfg.student_temp, temp)
        with torch.no_grad():
            t_ents = [-(q * q.clamp_min(1e-12).log()).sum(-1).mean() for q in t_prob]
            # the teacher's entropy once per (teacher view, other view) pair, as dino_loss pairs them
            pair_ents = [e for e in t_ents for _ in range(len(s_out) - 1)]
        # The loss is H(teacher) + KL(teacher || student). H(teacher) moves with the temperature
        # schedule and the centring (it rises as centring flattens a random teacher), so the KL
        # term, what the student actually reduces, is the learning signal to watch.
        kl = loss.detach() - sum(pair_ents, torch.zeros((), device=s_out[0].device)) / len(pair_ents)
        if self.training:
            self.update_center(torch.cat(t_out))
        with torch.no_grad():
            z0 = F.normalize(s_feat.float(), dim=1)
            t_ent = torch.stack(t_ents).mean()  # loss = t_ent + kl (both teacher views weigh alike)
            # cosine of the two large crops' student outputs (similarity histograms)
            p0, p1 = F.normalize(s_out[0], dim=1), F.normalize(s_out[1], dim=1)
            pos = (p0 * p1).sum(1)
            sim = p0 @ p1.T
            neg = sim[~torch.eye(len(p0), dtype=torch.bool, device=sim.device)]
        return StepOutput(loss=loss, metrics={"teacher_temp": temp, "teacher_entropy": t_ent, "kl": kl,
                                              "pos_sim": pos.mean(), "neg_sim": neg.mean()},
                          embeddings=z0, pos_sim=pos, neg_sim=neg)

    @torch.no_grad()
    def update_center(self, teacher_out: torch.Tensor) -> None:
        c = teacher_out.sum(0, keepdim=True)
        n = torch.tensor(float(len(teacher_out)), device=c.device)
        if is_distributed():
            dist.all_reduce(c)
            dist.all_reduce(n)
        m = self.cfg.center_momentum
        self.center.mul_(m).add_(c / n, alpha=1 - m)

    @torch.no_grad()
    def momentum_update(self, m: float) -> None:
        for ps, pt in zip(self.student.parameters(), self.teacher.parameters(), strict=True):
            pt.mul_(m).add_(ps.detach(), alpha=1 - m)
        for bs, bt in zip(self.student.buffers(), self.teacher.buffers(), strict=True):
            bt.copy_(bs)  # BN running statistics follow the student


class DINORecipe:
    """The DINO recipe for passkit.recipes.engine."""

    name = "dino"

    def __init__(self, cfg: DINOConfig | None = None):
        self.cfg = cfg or DINOConfig()
        self.alarm = CollapseAlarm(self.name, self.cfg.chance_loss, every=self.cfg.alarm_every, start=1)

    def build_model(self) -> DINO:
        return DINO(self.cfg)

    def transform(self) -> Callable[[Any], tuple[torch.Tensor, ...]]:
        return multi_crop(self.cfg.crops)

    def training_step(self, model: nn.Module, views: Sequence[torch.Tensor], step: int) -> StepOutput:
        return multi_crop_step("DINO", self.cfg.crops, self.alarm, model, views, step)

    def after_step(self, model: nn.Module, step: int, total_steps: int) -> None:
        model.momentum_update(self.cfg.momentum_at(step, total_steps))  # type: ignore[operator]

    def features(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """The teacher's backbone (DINO evaluates the teacher)."""
        return model.teacher["backbone"](images)  # type: ignore[index]

    def embed(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return model.teacher["head"].bottleneck(model.teacher["backbone"](images))  # type: ignore[index]

    def describe(self) -> dict[str, Any]:
        return {"recipe": self.name, **asdict(self.cfg)}


def preset(name: str) -> Preset:
    """The validation preset `name` (smoke, small, full; see passkit.recipes.presets)."""
    if name == "smoke":
        crops = MultiCropConfig(32, 16, 2, 2, (0.3, 1.0), (0.1, 0.3), blur=False)
        return Preset("smoke", "dino", DINOConfig(arch="vit_nano", patch_size=4, drop_path=0.0, out_dim=256,
                                                  hidden_dim=128, bottleneck_dim=32, teacher_temp_final=0.04,
                                                  momentum=0.95, freeze_last_layer_steps=5, crops=crops),
                      OptimConfig(name="adamw", lr=1e-3, weight_decay=0.04, min_8bit_size=1024), batch_size=8,
                      steps=20, eval_spec="synthetic:160:80", rankme_floor=2.0, judge_learning=False)
    if name == "small":
        crops = MultiCropConfig(64, 32, 2, 4, (0.3, 1.0), (0.1, 0.3))
        return Preset("small", "dino", DINOConfig(arch="vit_tiny", patch_size=8, out_dim=4096, hidden_dim=512,
                                                  bottleneck_dim=128, teacher_temp_warmup_steps=1000,
                                                  freeze_last_layer_steps=200, crops=crops),
                      OptimConfig(name="adamw", lr=5e-4, weight_decay=0.04), batch_size=128, epochs=100,
                      eval_size=64, rankme_floor=16.0, knn_margin=0.02)
    return Preset("full", "dino", DINOConfig(), OptimConfig(name="adamw", lr=5e-4, weight_decay=0.04),
                  batch_size=256, epochs=100, eval_size=224, eval_spec="synthetic:2000:1000",
                  warmup_frac=0.1, rankme_floor=64.0, knn_margin=0.05)

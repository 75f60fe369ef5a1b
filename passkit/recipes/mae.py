"""MAE (He et al. 2022): masked autoencoders, with the medical preset of Xiao et al. 2023.

A ViT encoder sees a random 25% of the patches (mask ratio 0.75); a lightweight decoder (its own
width and depth, mask tokens, sin-cos positions) reconstructs the pixels of the masked patches,
each normalised by its own mean and variance (norm_pix_loss). The loss is the mean squared error
on masked patches only, so it is judged by reconstruction error (and, after training, a linear
probe on the encoder's features), not by kNN alone: MAE features are known to kNN poorly.

The medical preset ("Delving into Masked Autoencoders for Multi-Label Thorax Disease
Classification", Xiao et al., WACV 2023): mask ratio 0.90, random resized crop scale 0.5-1.0,
a 2-block decoder for ViT-S; for finetuning, layer-wise LR decay 0.55, RandAugment magnitude 6
and DropPath 0.2 (`MedicalFinetune`, `finetune_param_groups`, `finetune_transform`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torchvision.transforms import v2

from passkit.recipes.augment import MultiView, _ToUint8
from passkit.recipes.collapse import CollapseAlarm
from passkit.recipes.losses import masked_mse
from passkit.recipes.optim import OptimConfig
from passkit.recipes.presets import Preset
from passkit.recipes.recipe import StepOutput
from passkit.recipes.vit import (
    Block,
    VisionTransformer,
    ViTConfig,
    init_weights,
    lrd_param_groups,
    sincos_pos_embed,
)


@dataclass(slots=True)
class MAEConfig:
    arch: str = "vit_base"
    patch_size: int = 16
    image_size: int = 224
    mask_ratio: float = 0.75
    norm_pix_loss: bool = True
    decoder_dim: int = 512
    decoder_depth: int = 8
    decoder_heads: int = 16
    crop_scale: tuple[float, float] = (0.2, 1.0)
    drop_path: float = 0.0
    alarm_every: int = 10

    def check(self) -> None:
        if not 0.0 < self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1), got {self.mask_ratio}")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")

    chance_loss = None  # MSE has no chance level; the alarm watches RankMe only


def medical_config(arch: str = "vit_small", image_size: int = 224, patch_size: int = 16) -> MAEConfig:
    """Xiao et al. 2023 for chest X-rays: mask 0.90, crops 0.5-1.0, a 2-block decoder for ViT-S."""
    depth = 2 if arch == "vit_small" else 8
    return MAEConfig(arch=arch, patch_size=patch_size, image_size=image_size, mask_ratio=0.90, crop_scale=(0.5, 1.0),
                     decoder_depth=depth, decoder_dim=512, decoder_heads=16)


@dataclass(slots=True)
class MedicalFinetune:
    """Finetuning settings of the medical preset (Xiao et al. 2023)."""

    layer_decay: float = 0.55
    randaug_magnitude: int = 6
    randaug_ops: int = 2
    drop_path: float = 0.2
    weight_decay: float = 0.05


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """[B,3,H,W] -> [B, N, p*p*3] in row-major patch order (MAE's layout)."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // p, p, w // p, p)
    return torch.einsum("nchpwq->nhwpqc", x).reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(t: torch.Tensor, p: int, h: int, w: int) -> torch.Tensor:
    b = t.shape[0]
    x = t.reshape(b, h // p, w // p, p, p, 3)
    return torch.einsum("nhwpqc->nchpwq", x).reshape(b, 3, h, w)


class MAE(nn.Module):
    def __init__(self, cfg: MAEConfig):
        super().__init__()
        cfg.check()
        self.cfg = cfg
        self.encoder = VisionTransformer(ViTConfig(size=cfg.arch, patch_size=cfg.patch_size, drop_path=cfg.drop_path))
        d, dd = self.encoder.embed_dim, cfg.decoder_dim
        self.decoder_embed = nn.Linear(d, dd)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dd))
        self.decoder_blocks = nn.ModuleList(Block(dd, cfg.decoder_heads) for _ in range(cfg.decoder_depth))
        self.decoder_norm = nn.LayerNorm(dd, eps=1e-6)
        self.decoder_pred = nn.Linear(dd, cfg.patch_size**2 * 3)
        for m in (self.decoder_embed, self.decoder_blocks, self.decoder_norm, self.decoder_pred):
            m.apply(init_weights)
        nn.init.normal_(self.mask_token, std=0.02)
        self.feature_dim = d

    @property
    def backbone(self) -> VisionTransformer:
        return self.encoder

    def random_masking(self, n: int, b: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(kept indices [B, n_keep], restore order [B, N], mask [B, N] with 1 = masked)."""
        keep = max(1, int(round(n * (1 - self.cfg.mask_ratio))))
        noise = torch.rand(b, n, device=device)
        shuffle = noise.argsort(1)
        restore = shuffle.argsort(1)
        mask = torch.ones(b, n, device=device)
        mask[:, :keep] = 0
        return shuffle[:, :keep], restore, torch.gather(mask, 1, restore)

    def forward(self, imgs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, predicted patches [B,N,p*p*3], mask [B,N], cls features of the visible patches)."""
        tokens = self.encoder.patchify_embed(imgs)
        b, n, d = tokens.shape
        ids_keep, restore, mask = self.random_masking(n, b, tokens.device)
        visible = torch.gather(tokens, 1, ids_keep[..., None].expand(-1, -1, d))
        latent = self.encoder.encode_tokens(visible)
        x = self.decoder_embed(latent)
        gh, gw = imgs.shape[-2] // self.cfg.patch_size, imgs.shape[-1] // self.cfg.patch_size
        masks = self.mask_token.to(x.dtype).expand(b, n - visible.shape[1], -1)
        full = torch.cat([x[:, 1:], masks], dim=1)
        full = torch.gather(full, 1, restore[..., None].expand(-1, -1, x.shape[-1]))
        full = full + sincos_pos_embed(x.shape[-1], gh, gw).to(full)
        x = torch.cat([x[:, :1], full], dim=1)
        for blk in self.decoder_blocks:
            x = blk(x)
        pred = self.decoder_pred(self.decoder_norm(x))[:, 1:].float()
        loss = masked_mse(pred, patchify(imgs.float(), self.cfg.patch_size), mask, self.cfg.norm_pix_loss)
        return loss, pred, mask, latent[:, 0]


def mae_transform(size: int, scale: tuple[float, float]) -> MultiView:
    """MAE's augmentation: random resized crop (bicubic) and flip only."""
    return MultiView([v2.Compose([v2.RandomResizedCrop(size, scale=scale, antialias=True,
                                                       interpolation=v2.InterpolationMode.BICUBIC),
                                  v2.RandomHorizontalFlip(), _ToUint8()])])


def finetune_transform(size: int, ft: MedicalFinetune | None = None) -> v2.Compose:
    """Finetuning augmentation of the medical preset: crop, flip, RandAugment(n=2, m=6)."""
    ft = ft or MedicalFinetune()
    return v2.Compose([v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip(), _ToUint8(),
                       v2.RandAugment(num_ops=ft.randaug_ops, magnitude=ft.randaug_magnitude)])


def finetune_param_groups(encoder: VisionTransformer, head: nn.Module, base_lr: float,
                          ft: MedicalFinetune | None = None) -> list[dict[str, Any]]:
    """Optimizer groups for finetuning an MAE encoder with layer-wise LR decay (0.55 in the medical preset):
    block i gets lr x decay^(depth - i), the patch embedding decay^(depth + 1), the head the full lr."""
    ft = ft or MedicalFinetune()
    groups = lrd_param_groups(encoder, ft.weight_decay, ft.layer_decay, encoder.depth)
    for g in groups:
        g["lr"] = base_lr * float(g["lr_scale"])  # type: ignore[arg-type]
    groups.append({"params": [p for p in head.parameters() if p.requires_grad], "weight_decay": ft.weight_decay,
                   "lr": base_lr, "lr_scale": 1.0, "lars_exclude": False})
    return groups


def finetune_encoder(cfg: MAEConfig, state: dict[str, torch.Tensor] | None, ft: MedicalFinetune | None = None) -> VisionTransformer:
    """A ViT for finetuning with the preset's DropPath, loaded from an MAE model's `encoder.*` weights."""
    ft = ft or MedicalFinetune()
    enc = VisionTransformer(ViTConfig(size=cfg.arch, patch_size=cfg.patch_size, drop_path=ft.drop_path))
    if state is not None:
        sd = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
        enc.load_state_dict(sd)
    return enc


class MAERecipe:
    """The MAE recipe for passkit.recipes.engine."""

    name = "mae"

    def __init__(self, cfg: MAEConfig | None = None):
        self.cfg = cfg or MAEConfig()
        self.alarm = CollapseAlarm(self.name, None, every=self.cfg.alarm_every, start=1)

    def build_model(self) -> MAE:
        return MAE(self.cfg)

    def transform(self) -> Callable[[Any], tuple[torch.Tensor, ...]]:
        return mae_transform(self.cfg.image_size, self.cfg.crop_scale)

    def training_step(self, model: nn.Module, views: Sequence[torch.Tensor], step: int) -> StepOutput:
        loss, _pred, _mask, feats = model(views[0])
        out = StepOutput(loss=loss, metrics={"recon_loss": loss.detach()}, embeddings=feats.detach())
        if self.alarm.due(step):
            out.metrics["collapse"] = float(self.alarm.check(step, loss, out.embeddings))
        return out

    def after_step(self, model: nn.Module, step: int, total_steps: int) -> None:
        return None

    def features(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Mean of the encoder's patch tokens over the whole (unmasked) image (MAE's linear-probe feature)."""
        return model.encoder.forward_tokens(images)[:, 1:].mean(1)  # type: ignore[union-attr, operator]

    def embed(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """MAE has no projection head: its embeddings are the encoder features."""
        return self.features(model, images)

    @torch.no_grad()
    def reconstruction_error(self, model: nn.Module, images: torch.Tensor, seed: int = 0) -> float:
        """Masked-patch MSE (in the loss's target space) on fixed images with a fixed mask draw."""
        g = torch.get_rng_state()
        torch.manual_seed(seed)
        was = model.training
        model.eval()
        try:
            return float(model(images)[0])  # type: ignore[operator]
        finally:
            model.train(was)
            torch.set_rng_state(g)

    def describe(self) -> dict[str, Any]:
        return {"recipe": self.name, **asdict(self.cfg)}


def preset(name: str) -> Preset:
    """The validation preset `name` (smoke, small, full; see passkit.recipes.presets)."""
    adam = {"name": "adamw", "weight_decay": 0.05, "betas": (0.9, 0.95)}
    if name == "smoke":
        return Preset("smoke", "mae", MAEConfig(arch="vit_nano", patch_size=4, image_size=32, decoder_dim=64,
                                                decoder_depth=1, decoder_heads=4),
                      OptimConfig(**adam, lr=1.5e-3, min_8bit_size=1024), batch_size=8, steps=20,
                      eval_spec="synthetic:160:80", rankme_floor=2.0, judge_learning=False)
    if name == "small":
        return Preset("small", "mae", MAEConfig(arch="vit_tiny", patch_size=8, image_size=64, decoder_dim=128,
                                                decoder_depth=2, decoder_heads=4),
                      OptimConfig(**adam, lr=1.5e-3), batch_size=128, epochs=200, eval_size=64,
                      rankme_floor=16.0, knn_margin=0.02)
    return Preset("full", "mae", MAEConfig(), OptimConfig(**adam, lr=1.5e-4 * 256 / 256), batch_size=256,
                  epochs=400, eval_size=224, eval_spec="synthetic:2000:1000", warmup_frac=0.1,
                  rankme_floor=64.0, knn_margin=0.05)

"""A compact Vision Transformer for DINO and MAE (Dosovitskiy et al. 2021; MAE/DINO variants).

Why our own and not timm: the recipes need three things timm does not give in one place without
patching (any input size per call, for multi-crop; random masking inside the encoder, for MAE;
per-block access, for layer-wise LR decay), and the whole model is ~120 lines, so the dependency
is not worth its weight. The layout follows timm's (pre-norm blocks, cls token, fused qkv, GELU
MLP, DropPath) so weights map one to one.

Positional embeddings are fixed 2-D sin-cos (MAE, MoCo v3), computed per patch grid and cached,
so a 96 px local crop and a 224 px global crop go through the same network without interpolation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# name: (embed_dim, depth, heads)
VIT_SIZES: dict[str, tuple[int, int, int]] = {
    "vit_nano": (96, 4, 3),  # CPU tests
    "vit_tiny": (192, 12, 3),
    "vit_small": (384, 12, 6),
    "vit_base": (768, 12, 12),
    "vit_large": (1024, 24, 16),
}


def sincos_pos_embed(dim: int, gh: int, gw: int) -> torch.Tensor:
    """[gh*gw, dim] 2-D sin-cos embedding (half the channels per axis), as in MAE."""
    if dim % 4:
        raise ValueError(f"embed dim must be a multiple of 4 for 2-D sin-cos embeddings, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    ys, xs = torch.meshgrid(torch.arange(gh, dtype=torch.float64), torch.arange(gw, dtype=torch.float64), indexing="ij")
    out = []
    for pos in (ys.reshape(-1), xs.reshape(-1)):
        ang = pos[:, None] * omega[None]
        out += [ang.sin(), ang.cos()]
    return torch.cat(out, dim=1).float()


class DropPath(nn.Module):
    """Stochastic depth: drop a residual branch per sample with probability p."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def init_weights(m: nn.Module) -> None:
    """MAE/timm init: xavier-uniform linears, zero biases, unit LayerNorms."""
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


@dataclass(slots=True)
class ViTConfig:
    size: str = "vit_small"
    patch_size: int = 16
    drop_path: float = 0.0
    embed_dim: int | None = None  # override VIT_SIZES
    depth: int | None = None
    heads: int | None = None

    def dims(self) -> tuple[int, int, int]:
        if self.size not in VIT_SIZES:
            raise ValueError(f"unknown ViT size {self.size!r}; choose one of {', '.join(VIT_SIZES)}")
        d, n, h = VIT_SIZES[self.size]
        return self.embed_dim or d, self.depth or n, self.heads or h


class VisionTransformer(nn.Module):
    """ViT encoder: images [B,3,H,W] (H, W multiples of the patch size) -> cls feature [B, D]."""

    def __init__(self, cfg: ViTConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or ViTConfig()
        dim, depth, heads = cfg.dims()
        if dim % heads:
            raise ValueError(f"embed dim {dim} is not divisible by {heads} heads")
        self.embed_dim, self.depth, self.patch_size = dim, depth, cfg.patch_size
        self.patch_embed = nn.Conv2d(3, dim, cfg.patch_size, cfg.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        dpr = [cfg.drop_path * i / max(1, depth - 1) for i in range(depth)]  # linearly increasing
        self.blocks = nn.ModuleList(Block(dim, heads, drop_path=p) for p in dpr)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self._pos: dict[tuple[int, int], torch.Tensor] = {}
        self.apply(init_weights)
        w = self.patch_embed.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)

    def pos_embed(self, gh: int, gw: int, device: torch.device) -> torch.Tensor:
        key = (gh, gw)
        if key not in self._pos:
            self._pos[key] = sincos_pos_embed(self.embed_dim, gh, gw)
        return self._pos[key].to(device)

    def patchify_embed(self, x: torch.Tensor) -> torch.Tensor:
        """Patch tokens with positions added, [B, N, D]."""
        p = self.patch_size
        if x.shape[-1] % p or x.shape[-2] % p:
            raise ValueError(f"image size {tuple(x.shape[-2:])} is not a multiple of the patch size {p}")
        t = self.patch_embed(x)
        gh, gw = t.shape[-2:]
        t = t.flatten(2).transpose(1, 2)
        return t + self.pos_embed(gh, gw, t.device).to(t.dtype)

    def encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Prepend the cls token, run the blocks and the final norm: [B, 1+N, D]."""
        x = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1).to(tokens.dtype), tokens], dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode_tokens(self.patchify_embed(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_tokens(x)[:, 0]


def build_vit(size: str = "vit_small", *, patch_size: int = 16, drop_path: float = 0.0) -> tuple[VisionTransformer, int]:
    """(ViT encoder returning the cls feature, its dimension)."""
    m = VisionTransformer(ViTConfig(size=size, patch_size=patch_size, drop_path=drop_path))
    return m, m.embed_dim


def build_any_backbone(arch: str, *, patch_size: int = 16, drop_path: float = 0.0, small_stem: bool = False,
                       width: int = 64, bn_splits: int = 1) -> tuple[nn.Module, int]:
    """A ViT (`vit_*`) or a ResNet (passkit.recipes.backbones) by name."""
    if arch.startswith("vit_"):
        return build_vit(arch, patch_size=patch_size, drop_path=drop_path)
    from passkit.recipes.backbones import ARCHS, build_backbone

    if arch not in ARCHS:
        raise ValueError(f"unknown backbone {arch!r}; choose one of {', '.join((*ARCHS, *VIT_SIZES))}")
    return build_backbone(arch, small_stem=small_stem, bn_splits=bn_splits, width=width)


def layer_id(name: str, depth: int) -> int:
    """Depth index of a ViT parameter for layer-wise LR decay: embeddings 0, block i -> i+1, rest depth+1."""
    if name.startswith(("cls_token", "patch_embed", "pos_embed", "mask_token")):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return depth + 1


def lrd_param_groups(model: nn.Module, weight_decay: float, layer_decay: float, depth: int,
                     prefix: str = "") -> list[dict[str, object]]:
    """Param groups with `lr_scale = layer_decay ** (depth + 1 - layer)` (BEiT/MAE finetuning).

    Biases, norms and tokens get no weight decay. The engine multiplies `lr` by the schedule, so
    the scale is baked into each group's lr by `apply_lr_scale` once the base lr is known.
    """
    groups: dict[tuple[int, bool], dict[str, object]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        n = name[len(prefix):] if prefix and name.startswith(prefix) else name
        no_wd = p.ndim <= 1 or n in ("cls_token",) or n.endswith(".bias")
        lid = layer_id(n, depth) if (not prefix or name.startswith(prefix)) else depth + 1
        key = (lid, no_wd)
        if key not in groups:
            groups[key] = {"params": [], "weight_decay": 0.0 if no_wd else weight_decay,
                           "lr_scale": layer_decay ** (depth + 1 - lid), "lars_exclude": no_wd}
        groups[key]["params"].append(p)  # type: ignore[union-attr]
    return [groups[k] for k in sorted(groups)]


"""Validation presets: how big a pretraining run `passkit validate` does, and its pass thresholds.

smoke: seconds on a CPU, for CI and tiny releases (the demo has 11 images); proves the pipeline
runs end to end, not that the release is good. small: a narrow network at 64 px for a workstation.
full: each paper's ImageNet recipe for a GPU (MoCo v2: ResNet-50, 224 px, batch 256, SGD lr 0.03,
K=65536, T=0.2, m=0.999, 200 epochs; SwAV: ResNet-50, 3000 prototypes, 2x224 + 6x96 crops, LARS;
DINO: ViT-S/16, 2x224 + 10x96 crops, AdamW; MAE: ViT-B/16, mask 0.75, AdamW betas (0.9, 0.95)).

Every recipe uses an 8-bit optimizer state (bitsandbytes where installed, passkit's own otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from passkit.recipes.multicrop import MultiCropConfig
from passkit.recipes.optim import OptimConfig

RECIPES = ("moco_v2", "swav", "dino", "mae")
PRESETS = ("smoke", "small", "full")


@dataclass(slots=True)
class Preset:
    name: str
    recipe: str
    config: Any  # the recipe's config dataclass (MoCoConfig, SwAVConfig, DINOConfig, MAEConfig)
    optim: OptimConfig
    batch_size: int
    steps: int = 0  # fixed steps, or
    epochs: float = 0.0  # passes over the release (steps = epochs * samples / batch)
    warmup_frac: float = 0.05
    eval_size: int = 32
    eval_spec: str = "synthetic:800:400"  # default labelled set when --eval synthetic
    loss_ratio: float = 0.9  # pass: final loss < loss_ratio * chance loss (MAE: x reconstruction error at init)
    rankme_floor: float = 4.0  # pass: RankMe of release embeddings above this
    knn_margin: float = 0.0  # pass: kNN (MAE: linear probe) of pretrained > random init + margin
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def moco(self) -> Any:
        """The MoCo config (the moco_v2 presets' `config`), kept for callers that predate the others."""
        return self.config

    @property
    def image_size(self) -> int:
        c = self.config
        return int(c.crops.large_size if hasattr(c, "crops") else c.image_size)

    def build_recipe(self) -> Any:
        from passkit.recipes.dino import DINORecipe
        from passkit.recipes.mae import MAERecipe
        from passkit.recipes.moco import MoCoV2
        from passkit.recipes.swav import SwAVRecipe

        cls = {"moco_v2": MoCoV2, "swav": SwAVRecipe, "dino": DINORecipe, "mae": MAERecipe}[self.recipe]
        return cls(self.config)

    def total_steps(self, samples: int) -> int:
        if self.steps:
            return self.steps
        return max(1, round(self.epochs * samples / self.batch_size))


def _moco(name: str) -> Preset:
    from passkit.recipes.moco import MoCoConfig

    if name == "smoke":
        return Preset("smoke", "moco_v2", MoCoConfig(arch="resnet18", width=16, small_stem=True, image_size=32,
                                                     queue=64, momentum=0.99, bn_splits=2),
                      OptimConfig(name="sgd", lr=0.03, weight_decay=1e-4), batch_size=8, steps=20,
                      eval_spec="synthetic:160:80", rankme_floor=2.0)
    if name == "small":
        return Preset("small", "moco_v2", MoCoConfig(arch="resnet18", width=32, small_stem=True, image_size=64,
                                                     queue=4096, momentum=0.99, bn_splits=4),
                      OptimConfig(name="sgd", lr=0.06, weight_decay=5e-4), batch_size=128, epochs=100,
                      eval_size=64, rankme_floor=16.0, knn_margin=0.02)
    return Preset("full", "moco_v2", MoCoConfig(arch="resnet50", image_size=224, queue=65536, momentum=0.999,
                                                bn_splits=8),
                  OptimConfig(name="sgd", lr=0.03, weight_decay=1e-4), batch_size=256, epochs=200,
                  eval_size=224, eval_spec="synthetic:2000:1000", warmup_frac=0.0, rankme_floor=64.0, knn_margin=0.05)


def _swav(name: str) -> Preset:
    from passkit.recipes.swav import SwAVConfig

    if name == "smoke":
        crops = MultiCropConfig(32, 16, 2, 2, (0.3, 1.0), (0.1, 0.3), blur=False)
        return Preset("smoke", "swav", SwAVConfig(arch="vit_nano", patch_size=4, hidden_dim=128, dim=32, prototypes=30,
                                                  queue=0, freeze_prototypes_steps=2, crops=crops),
                      OptimConfig(name="adamw", lr=2e-3, weight_decay=0.04, min_8bit_size=1024), batch_size=8,
                      steps=20, eval_spec="synthetic:160:80", rankme_floor=2.0)
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


def _dino(name: str) -> Preset:
    from passkit.recipes.dino import DINOConfig

    if name == "smoke":
        crops = MultiCropConfig(32, 16, 2, 2, (0.3, 1.0), (0.1, 0.3), blur=False)
        return Preset("smoke", "dino", DINOConfig(arch="vit_nano", patch_size=4, drop_path=0.0, out_dim=256,
                                                  hidden_dim=128, bottleneck_dim=32, teacher_temp_final=0.04,
                                                  momentum=0.95, freeze_last_layer_steps=5, crops=crops),
                      OptimConfig(name="adamw", lr=1e-3, weight_decay=0.04, min_8bit_size=1024), batch_size=8,
                      steps=20, eval_spec="synthetic:160:80", rankme_floor=2.0)
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


def _mae(name: str) -> Preset:
    from passkit.recipes.mae import MAEConfig

    adam = {"name": "adamw", "weight_decay": 0.05, "betas": (0.9, 0.95)}
    if name == "smoke":
        return Preset("smoke", "mae", MAEConfig(arch="vit_nano", patch_size=4, image_size=32, decoder_dim=64,
                                                decoder_depth=1, decoder_heads=4),
                      OptimConfig(**adam, lr=1.5e-3, min_8bit_size=1024), batch_size=8, steps=20,
                      eval_spec="synthetic:160:80", rankme_floor=2.0)
    if name == "small":
        return Preset("small", "mae", MAEConfig(arch="vit_tiny", patch_size=8, image_size=64, decoder_dim=128,
                                                decoder_depth=2, decoder_heads=4),
                      OptimConfig(**adam, lr=1.5e-3), batch_size=128, epochs=200, eval_size=64,
                      rankme_floor=16.0, knn_margin=0.02)
    return Preset("full", "mae", MAEConfig(), OptimConfig(**adam, lr=1.5e-4 * 256 / 256), batch_size=256,
                  epochs=400, eval_size=224, eval_spec="synthetic:2000:1000", warmup_frac=0.1,
                  rankme_floor=64.0, knn_margin=0.05)


def get(name: str, recipe: str = "moco_v2") -> Preset:
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; available: {', '.join(RECIPES)}")
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose smoke, small or full")
    p = {"moco_v2": _moco, "swav": _swav, "dino": _dino, "mae": _mae}[recipe](name)
    p.optim.bits = 8
    return p

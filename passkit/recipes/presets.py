"""Validation presets: how big a pretraining run `passkit validate` does, and its pass thresholds.

smoke: seconds on a CPU, for CI and tiny releases (the demo has 11 images); proves the pipeline
runs end to end, not that the release is good: its loss check asks for a finite loss, not for
learning that 20 steps on 11 images cannot show (`judge_learning=False`). small: a narrow network at 64 px for a workstation.
full: each paper's ImageNet recipe for a GPU (MoCo v2: ResNet-50, 224 px, batch 256, SGD lr 0.03,
K=65536, T=0.2, m=0.999, 200 epochs; SwAV: ResNet-50, 3000 prototypes, 2x224 + 6x96 crops, LARS;
DINO: ViT-S/16, 2x224 + 10x96 crops, AdamW; MAE: ViT-B/16, mask 0.75, AdamW betas (0.9, 0.95)).

Every recipe uses an 8-bit optimizer state (bitsandbytes where installed, passkit's own otherwise).
Each recipe's three presets are built by `preset(name)` in the recipe's own module, found through
passkit.recipes.registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from passkit.recipes.optim import OptimConfig
from passkit.recipes.registry import PRESETS, RECIPES, entry

__all__ = ["PRESETS", "RECIPES", "Preset", "get"]


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
    # False (smoke): too few steps to show learning, so the loss check proves the plumbing only
    # (a finite loss); RankMe and kNN still judge collapse and features
    judge_learning: bool = True
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
        return entry(self.recipe).recipe()(self.config)

    def total_steps(self, samples: int) -> int:
        if self.steps:
            return self.steps
        return max(1, round(self.epochs * samples / self.batch_size))


def get(name: str, recipe: str = "moco_v2") -> Preset:
    """Preset `name` of `recipe`, built by the recipe's module (passkit.recipes.registry)."""
    e = entry(recipe)
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose smoke, small or full")
    p = e.preset(name)
    p.optim.bits = 8
    return p

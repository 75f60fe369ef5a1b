"""Validation presets: how big a pretraining run `passkit validate` does, and its pass thresholds.

smoke: seconds on a CPU, for CI and tiny releases (the demo has 11 images); proves the pipeline
runs end to end, not that the release is good. small: a narrow ResNet-18 at 64 px for a
workstation. full: MoCo v2's ImageNet recipe (ResNet-50, 224 px, batch 256, SGD lr 0.03, K=65536,
T=0.2, m=0.999, 200 epochs) for a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from passkit.recipes.moco import MoCoConfig
from passkit.recipes.optim import OptimConfig


@dataclass(slots=True)
class Preset:
    name: str
    moco: MoCoConfig
    optim: OptimConfig
    batch_size: int
    steps: int = 0  # fixed steps, or
    epochs: float = 0.0  # passes over the release (steps = epochs * samples / batch)
    warmup_frac: float = 0.05
    eval_size: int = 32
    eval_spec: str = "synthetic:800:400"  # default labelled set when --eval synthetic
    loss_ratio: float = 0.9  # pass: final loss < loss_ratio * ln(K+1)
    rankme_floor: float = 4.0  # pass: RankMe of release embeddings above this
    knn_margin: float = 0.0  # pass: kNN(pretrained) > kNN(random init) + margin
    extra: dict[str, object] = field(default_factory=dict)

    def total_steps(self, samples: int) -> int:
        if self.steps:
            return self.steps
        return max(1, round(self.epochs * samples / self.batch_size))


def get(name: str) -> Preset:
    if name == "smoke":
        return Preset("smoke", MoCoConfig(arch="resnet18", width=16, small_stem=True, image_size=32, queue=64,
                                          momentum=0.99, bn_splits=2),
                      OptimConfig(name="sgd", lr=0.03, weight_decay=1e-4), batch_size=8, steps=20,
                      eval_spec="synthetic:160:80", rankme_floor=2.0)
    if name == "small":
        return Preset("small", MoCoConfig(arch="resnet18", width=32, small_stem=True, image_size=64, queue=4096,
                                          momentum=0.99, bn_splits=4),
                      OptimConfig(name="sgd", lr=0.06, weight_decay=5e-4), batch_size=128, epochs=100,
                      eval_size=64, rankme_floor=16.0, knn_margin=0.02)
    if name == "full":
        return Preset("full", MoCoConfig(arch="resnet50", image_size=224, queue=65536, momentum=0.999, bn_splits=8),
                      OptimConfig(name="sgd", lr=0.03, weight_decay=1e-4), batch_size=256, epochs=200,
                      eval_size=224, eval_spec="synthetic:2000:1000", warmup_frac=0.0, rankme_floor=64.0,
                      knn_margin=0.05)
    raise ValueError(f"unknown preset {name!r}; choose smoke, small or full")

"""Shared by the recipe learning tests: train a recipe on synthetic images, then compare its features
with the same architecture at random init on the synthetic labelled set."""

from __future__ import annotations

from typing import Any

import torch

from passkit.recipes.engine import TensorData, TrainConfig, Trainer, TrainResult
from passkit.recipes.evaluate import evaluate_features
from passkit.recipes.optim import OptimConfig
from passkit.recipes.synthetic import generate, labelled_set


def train_small(rec: Any, steps: int, lr: float) -> TrainResult:
    """`steps` of 8-bit AdamW on 512 synthetic 32 px images, batch 64."""
    x, _ = generate(512, 32, seed=0)
    return Trainer(rec, TensorData(x, rec.transform(), 64), TrainConfig(
        steps=steps, optim=OptimConfig(name="adamw", lr=lr, bits=8, weight_decay=0.04, min_8bit_size=1024),
        warmup_steps=5, log_every=5, progress=False)).fit()


def features_vs_random_init(rec: Any, model: torch.nn.Module) -> tuple[dict[str, Any], dict[str, Any]]:
    """kNN / linear probe / RankMe of the trained model and of a fresh one (seed 0), on the same set."""
    ls = labelled_set(400, 200, 32)
    torch.manual_seed(0)
    rand = rec.build_model().eval()
    model = model.eval()
    return (evaluate_features(lambda v: rec.features(model, v), ls, "cpu"),
            evaluate_features(lambda v: rec.features(rand, v), ls, "cpu"))

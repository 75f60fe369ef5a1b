"""The contract between the training engine and a self-supervised recipe.

The engine (passkit.recipes.engine) owns data, devices, precision, DDP, the optimizer, the
schedule, checkpoints and logging; a recipe owns the model and the objective. MoCo v2 implements
it here; SwAV, DINO and MAE plug into the same engine by implementing the same methods.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn


@dataclass(slots=True)
class StepOutput:
    """What one training step returns. Tensors stay on the device (no sync) until the engine logs.

    loss: scalar to backpropagate. metrics: scalars to log (tensors or floats). embeddings: a
    batch of the representation whose rank (RankMe) tracks collapse. pos_sim / neg_sim: cosine
    similarities of positive and negative pairs, for the similarity histograms over training.
    """

    loss: torch.Tensor
    metrics: dict[str, Any] = field(default_factory=dict)
    embeddings: torch.Tensor | None = None
    pos_sim: torch.Tensor | None = None
    neg_sim: torch.Tensor | None = None


@runtime_checkable
class Recipe(Protocol):
    name: str

    def build_model(self) -> nn.Module:
        """A fresh, randomly initialised model (the engine moves and wraps it)."""
        ...

    def transform(self) -> Callable[[Any], tuple[torch.Tensor, ...]]:
        """Per-sample augmentation: image in, one uint8 CHW tensor per view out."""
        ...

    def training_step(self, model: nn.Module, views: Sequence[torch.Tensor], step: int) -> StepOutput:
        """Forward the (normalised, on-device) views; `model` may be DDP-wrapped."""
        ...

    def after_step(self, model: nn.Module, step: int, total_steps: int) -> None:
        """Updates outside the optimizer (momentum encoders, queues, centres); `model` is unwrapped."""
        ...

    def features(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Backbone features for evaluation (kNN, linear probe, RankMe); `model` is unwrapped."""
        ...

    def embed(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """The projected embedding the objective works on (alignment/uniformity); `model` is unwrapped."""
        ...

    def describe(self) -> dict[str, Any]:
        """The recipe's settings, recorded in checkpoints and validation results."""
        ...


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DDP / torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod  # type: ignore[assignment]
        else:
            return model

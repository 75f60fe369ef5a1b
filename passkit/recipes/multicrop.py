"""Multi-crop (SwAV, DINO): 2 large crops and N small crops of one image, as one MultiView.

Large crops cover a big part of the image (scale 0.14-1 by default, SwAV/DINO's), small crops a
small part (0.05-0.14) at a lower resolution, so N extra views cost little. Every crop gets
MoCo v2's colour jitter, grayscale and flip; blur and solarisation follow DINO's asymmetry
(global crop 1: blur p=1.0; global crop 2: blur p=0.1 and solarise p=0.2; local: blur p=0.5).
Views leave as uint8 CHW tensors; the engine stacks each view position into its own batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torchvision.transforms import v2

from passkit.recipes.augment import MultiView, _ToUint8
from passkit.recipes.collapse import CollapseAlarm
from passkit.recipes.recipe import StepOutput


@dataclass(slots=True)
class MultiCropConfig:
    large_size: int = 224
    small_size: int = 96
    n_large: int = 2
    n_small: int = 6
    large_scale: tuple[float, float] = (0.14, 1.0)
    small_scale: tuple[float, float] = (0.05, 0.14)
    blur: bool = True  # off for tiny images, where a 3x3 blur wipes the content

    def check(self) -> None:
        if self.n_large != 2:
            raise ValueError(f"multi-crop needs exactly 2 large crops (the teacher/code views), got {self.n_large}")
        if self.n_small < 0:
            raise ValueError(f"n_small must be >= 0, got {self.n_small}")


def _crop(size: int, scale: tuple[float, float], blur_p: float, solarize_p: float, blur: bool) -> v2.Compose:
    steps: list[Any] = [
        v2.RandomResizedCrop(size, scale=scale, antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
        v2.RandomGrayscale(p=0.2),
    ]
    if blur and blur_p > 0:
        k = max(3, int(0.1 * size) // 2 * 2 + 1)
        steps.append(v2.RandomApply([v2.GaussianBlur(k, sigma=(0.1, 2.0))], p=blur_p))
    steps.append(_ToUint8())
    if solarize_p > 0:
        steps.append(v2.RandomSolarize(128, p=solarize_p))
    return v2.Compose(steps)


def multi_crop(cfg: MultiCropConfig) -> MultiView:
    """The transform: image -> (large_1, large_2, small_1, ..., small_N)."""
    cfg.check()
    views = [_crop(cfg.large_size, cfg.large_scale, 1.0, 0.0, cfg.blur),
             _crop(cfg.large_size, cfg.large_scale, 0.1, 0.2, cfg.blur)]
    small = _crop(cfg.small_size, cfg.small_scale, 0.5, 0.0, cfg.blur)
    return MultiView(views + [small] * cfg.n_small)


def multi_crop_step(recipe: str, crops: MultiCropConfig, alarm: CollapseAlarm, model: nn.Module,
                    views: Sequence[torch.Tensor], step: int) -> StepOutput:
    """A training step of a multi-crop recipe (SwAV, DINO): check the views, forward, and let the
    collapse alarm look at the loss and embeddings when it is due."""
    want = crops.n_large + crops.n_small
    if len(views) != want:
        raise ValueError(f"{recipe} needs {want} views per sample ({crops.n_large} large + {crops.n_small} small), "
                         f"got {len(views)}: use the recipe's transform()")
    out: StepOutput = model(views, step)
    if alarm.due(step):
        out.metrics["collapse"] = float(alarm.check(step, out.loss, out.embeddings))
    return out

"""Augmentations. Samples arrive as PIL RGB images (passkit.stream) or uint8 CHW tensors
(the synthetic set); views leave as uint8 CHW tensors and are normalised on the device, where
the float conversion is cheap, so the loader moves 4x fewer bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def moco_v2_augment(size: int, *, scale: tuple[float, float] = (0.2, 1.0), blur: bool = True) -> v2.Compose:
    """MoCo v2's "aug+": random resized crop, colour jitter (p=0.8), grayscale (p=0.2), Gaussian
    blur (p=0.5, sigma 0.1-2.0, kernel ~10% of the size), horizontal flip."""
    steps: list[Any] = [
        v2.RandomResizedCrop(size, scale=scale, antialias=True),
        v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        v2.RandomGrayscale(p=0.2),
    ]
    if blur:
        k = max(3, int(0.1 * size) // 2 * 2 + 1)
        steps.append(v2.RandomApply([v2.GaussianBlur(k, sigma=(0.1, 2.0))], p=0.5))
    steps += [v2.RandomHorizontalFlip(), _ToUint8()]
    return v2.Compose(steps)


class _ToUint8:
    """PIL image or tensor -> uint8 CHW tensor (v2.PILToTensor rejects tensors)."""

    def __call__(self, x: Any) -> torch.Tensor:
        if isinstance(x, torch.Tensor):
            return x if x.dtype == torch.uint8 else x.clamp(0, 255).to(torch.uint8)
        return v2.functional.pil_to_tensor(x)


class MultiView:
    """A transform returning one view per transform (passkit.stream stacks each view separately)."""

    def __init__(self, transforms: Sequence[Callable[[Any], torch.Tensor]]):
        self.transforms = list(transforms)

    def __call__(self, img: Any) -> tuple[torch.Tensor, ...]:
        return tuple(t(img) for t in self.transforms)


def two_views(size: int, **kw: Any) -> MultiView:
    t = moco_v2_augment(size, **kw)
    return MultiView([t, t])


def eval_transform(size: int) -> v2.Compose:
    """Resize the shorter side (x8/7, as ImageNet evaluation does) and center-crop to `size`."""
    return v2.Compose([v2.Resize(max(size, round(size * 8 / 7)), antialias=True), v2.CenterCrop(size), _ToUint8()])


def normalize(x: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 [B,3,H,W] on any device -> normalised float."""
    m = torch.tensor(mean, device=x.device, dtype=dtype).view(1, -1, 1, 1) * 255
    s = torch.tensor(std, device=x.device, dtype=dtype).view(1, -1, 1, 1) * 255
    return (x.to(dtype) - m) / s

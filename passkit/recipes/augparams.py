"""Per-sample augmentation parameters, drawn in the loader's workers; the pixels stay encoded.

In device mode a worker only reads the JPEG's header, draws every random choice of every view
(crop box, flip, jitter factors and order, grayscale, blur sigma, solarize) and hands over the
encoded bytes with those numbers (`Encoded`); the training process decodes and augments whole
batches on its device (passkit.recipes.device_augment). The draws use Python's `random`, which
the loader seeds per batch from (seed, epoch, rank, batch number), so the parameters do not
depend on num_workers, and the same release, seed and epoch give the same batches.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from passkit.recipes.augspec import ViewSpec
from passkit.stream import decode

# One view's parameters, as a row of floats (one tensor per batch moves them in one copy).
FIELDS = ("left", "top", "right", "bottom", "flip", "jitter", "brightness", "contrast", "saturation", "hue",
          "order0", "order1", "order2", "order3", "gray", "blur", "sigma", "solarize")
COL = {name: i for i, name in enumerate(FIELDS)}
NEUTRAL = (1.0, 1.0, 1.0, 0.0)  # brightness, contrast, saturation, hue that change nothing


def _uniform(r: Any, rng: tuple[float, float] | None, neutral: float) -> float:
    return neutral if rng is None else r.uniform(rng[0], rng[1])


def draw(spec: ViewSpec, width: int, height: int, rng: random.Random | None = None) -> list[float]:
    """One view's parameters for a `width` x `height` image, with torchvision's distributions:
    the crop as RandomResizedCrop.get_params, each RandomApply applied when a uniform draw is
    below its p, jitter factors uniform in their ranges, the jitter order a random permutation,
    the blur sigma uniform in its range."""
    r: Any = rng if rng is not None else random
    box = decode.rrc_box(width, height, spec.scale, spec.ratio, r)
    flip = float(spec.flip_p > 0 and r.random() < spec.flip_p)
    jitter = float(spec.jitter_p > 0 and r.random() < spec.jitter_p)
    factors = [_uniform(r, rng_, n) for rng_, n in
               zip((spec.brightness, spec.contrast, spec.saturation, spec.hue), NEUTRAL, strict=True)]
    order = r.sample(range(4), 4)
    gray = float(spec.gray_p > 0 and r.random() < spec.gray_p)
    blur = float(spec.blur_kernel > 0 and spec.blur_p > 0 and r.random() < spec.blur_p)
    sigma = r.uniform(*spec.blur_sigma)
    solarize = float(spec.solarize_p > 0 and r.random() < spec.solarize_p)
    return [float(v) for v in (*box, flip, jitter, *factors, *order, gray, blur, sigma, solarize)]


@dataclass(frozen=True, slots=True)
class Encoded:
    """One sample as a worker hands it over: the JPEG bytes and one parameter row per view.

    Not a tensor nor a tuple, so the loader's collate keeps a batch of them as a list (the byte
    strings differ in length and cannot be stacked)."""

    data: bytes
    params: torch.Tensor  # float32 [views, len(FIELDS)]


class EncodedViews(decode.JpegTransform):
    """The worker side of device mode: JPEG bytes in, `Encoded` out (header read, nothing decoded)."""

    def __init__(self, specs: Sequence[ViewSpec]):
        super().__init__(None)
        self.specs = tuple(specs)

    def apply(self, data: decode.Source) -> Encoded:
        if not isinstance(data, bytes):
            raise TypeError("device mode needs the encoded JPEG; the loader hands it over to JPEG transforms")
        w, h = decode.jpeg_size(data)
        rows = [draw(s, w, h) for s in self.specs]
        return Encoded(data, torch.tensor(rows, dtype=torch.float32))

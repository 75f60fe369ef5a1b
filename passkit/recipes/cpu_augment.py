"""The CPU loader's fast path for the recipes' augmentations: cropped reduced-scale decode per
view, then the photometric steps in float with OpenCV, in the loader's workers.

    specs = view_specs(recipe.transform())        # read off the torchvision reference
    dl = loader(release, 256, transform=JpegViews(specs), num_workers=2)

Why: the reference transform (augment.moco_v2_augment, multicrop._crop, mae.mae_transform) runs
torchvision on a PIL image, which costs, per MoCo v2 image on one core (ms, measured with
benchmarks/train_input.py --cpu-target's stage timing on its 640-1600 px photos): the full
decode 4.4, RandomResizedCrop's antialiased resize from full resolution 6 per view, Gaussian
blur (23 px kernel, torch conv on one thread) 10-11 per blurred view, colour jitter 2-4 per
jittered view (hue's HSV round trip most of it): about 27 in all, so two workers on two cores
gave a tenth of what the cores decode and crop. Here each view decodes only its crop at the
DCT scale it needs (passkit.stream.decode.crop_resize, flip folded in), and the photometric
steps run in float32 with OpenCV: one separable blur pass (the reference's kernel and reflect
border), HSV in float (no 8-bit hue quantisation).

The parameters come from passkit.recipes.augparams.draw, the same draws (and the same tested
distributions) as the device pipeline, from Python's `random`, which the loader seeds per batch,
so batches do not depend on num_workers. The pixels follow the device pipeline's float formulas
(tests/recipes/test_cpu_augment.py holds them to passkit.recipes.device_ops, which is held to
torchvision's functional ops): the reference rounds to 8 bits after each PIL step and
resamples with its antialias filter, so it is close, not equal.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np
import torch

from passkit.recipes.augparams import COL, draw
from passkit.recipes.augspec import ViewSpec, view_specs
from passkit.stream import decode

_LUMA = np.array([0.2989, 0.587, 0.114], np.float32)  # torchvision's rgb_to_grayscale weights


def _gray(x: np.ndarray) -> np.ndarray:
    """Luma [H, W] of float RGB [H, W, 3]."""
    return x @ _LUMA


def brightness(x: np.ndarray, f: float) -> np.ndarray:
    return np.clip(x * f, 0, 1, out=x)


def _blend(x: np.ndarray, other: np.ndarray | float, f: float) -> np.ndarray:
    return np.clip(x * f + other * (1 - f), 0, 1)


def contrast(x: np.ndarray, f: float) -> np.ndarray:
    return _blend(x, float(_gray(x).mean()), f)


def saturation(x: np.ndarray, f: float) -> np.ndarray:
    return _blend(x, _gray(x)[..., None], f)


def hue(x: np.ndarray, f: float) -> np.ndarray:
    """Shift the hue by f (a fraction of the circle): OpenCV's float HSV keeps hue in degrees
    at float precision, where its uint8 HSV would round it to 2-degree steps."""
    hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)
    hsv[..., 0] = np.mod(hsv[..., 0] + f * 360.0, 360.0)
    return np.clip(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB), 0, 1)


JITTER: tuple[Callable[[np.ndarray, float], np.ndarray], ...] = (brightness, contrast, saturation, hue)


def gaussian_blur(x: np.ndarray, kernel: int, sigma: float) -> np.ndarray:
    """torchvision's separable kernel (exp(-t^2 / 2 sigma^2), normalised) with reflect padding,
    which is OpenCV's BORDER_REFLECT_101."""
    t = np.arange(kernel, dtype=np.float64) - (kernel - 1) / 2
    k = np.exp(-(t**2) / (2 * sigma**2))
    k = (k / k.sum()).astype(np.float32)
    return cv2.sepFilter2D(x, -1, k, k, borderType=cv2.BORDER_REFLECT_101)


def photometric(x: np.ndarray, p: Sequence[float], spec: ViewSpec) -> np.ndarray:
    """Colour jitter (in the drawn order), grayscale, blur and solarize on float RGB [H, W, 3]
    in [0, 1], each where its parameter row says so; the flip is done in the crop."""
    if p[COL["jitter"]] > 0.5:
        factors = p[COL["brightness"]:COL["hue"] + 1]
        for pos in range(4):
            op = int(round(p[COL["order0"] + pos]))
            if factors[op] != (0.0 if op == 3 else 1.0):  # a neutral factor changes nothing
                x = JITTER[op](x, float(factors[op]))
    if p[COL["gray"]] > 0.5:
        x = np.repeat(_gray(x)[..., None], 3, axis=2)
    if p[COL["blur"]] > 0.5 and spec.blur_kernel > 0:
        x = gaussian_blur(x, spec.blur_kernel, float(p[COL["sigma"]]))
    if p[COL["solarize"]] > 0.5:
        t = spec.solarize_threshold / 255.0
        x = np.where(x >= t, 1.0 - x, x).astype(np.float32)
    return x


def view(data: decode.Source, size: tuple[int, int], p: Sequence[float], spec: ViewSpec) -> torch.Tensor:
    """One view: crop box, flip and photometric parameters `p` (an augparams.draw row) -> uint8
    [3, h, w]. Views that change no colour stay in uint8 throughout."""
    box = (p[COL["left"]], p[COL["top"]], p[COL["right"]], p[COL["bottom"]])
    h, w = spec.size
    chw = decode.crop_resize(data, box, (w, h), size, flip=p[COL["flip"]] > 0.5)
    if not any(p[COL[k]] > 0.5 for k in ("jitter", "gray", "blur", "solarize")):
        return chw
    x = cv2.merge(list(chw.numpy())).astype(np.float32) * np.float32(1 / 255)  # HWC float
    x = photometric(x, p, spec)
    out = np.empty((3, h, w), np.uint8)
    cv2.split(np.clip(x * 255 + 0.5, 0, 255).astype(np.uint8), list(out))
    return torch.from_numpy(out)


class JpegViews(decode.JpegTransform):
    """A recipe's views on the encoded JPEG, in the loader's workers: tuple of uint8 [3, h, w]."""

    def __init__(self, specs: Sequence[ViewSpec]):
        super().__init__(None)
        self.specs = tuple(specs)

    def apply(self, data: decode.Source) -> tuple[torch.Tensor, ...]:
        w, h = decode.jpeg_size(data)
        return tuple(view(data, (w, h), draw(s, w, h), s) for s in self.specs)

    def __repr__(self) -> str:
        return f"JpegViews({len(self.specs)} views: {sorted({s.size for s in self.specs})})"


def fast_views(transform: Any) -> Any:
    """JpegViews for a recipe transform the spec reader understands; anything else as it is
    (a custom transform keeps the PIL path rather than being run differently)."""
    if isinstance(transform, decode.JpegTransform):
        return transform
    try:
        return JpegViews(view_specs(transform))
    except (ValueError, AttributeError, TypeError, IndexError):
        return transform

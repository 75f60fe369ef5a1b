"""The CPU loader's fast path for the recipes' augmentations: one cropped, reduced-scale decode
per sample for all its views, then the photometric steps in float with OpenCV, in the loader's
workers.

    specs = view_specs(recipe.transform())        # read off the torchvision reference
    dl = loader(release, 256, transform=JpegViews(specs), num_workers=2)

Why: the reference transform (augment.moco_v2_augment, multicrop._crop, mae.mae_transform) runs
torchvision on a PIL image, which costs, per MoCo v2 image on one core (ms, measured with
benchmarks/train_input.py --cpu-target's stage timing on its 640-1600 px photos): the full
decode 4.4, RandomResizedCrop's antialiased resize from full resolution 6 per view, Gaussian
blur (23 px kernel, torch conv on one thread) 10-11 per blurred view, colour jitter 2-4 per
jittered view (hue's HSV round trip most of it): about 27 in all, so two workers on two cores
gave a tenth of what the cores decode and crop.

Where the time goes here (MoCo v2's two 224 px views, the benchmark's first 200 photos, CPU time
of one thread per image, 3-5 passes, load average 5-6 from the machine's other users; the stage
breakdown `benchmarks/train_input.py --cpu-target` prints): the
decode 2.1 -- the part both crops need, once, at the DCT scale of the view that needs the most
resolution (decode.crop_resize_views; a cropped decode per view, which Huffman-decodes every row
down to its crop's bottom twice, cost 3.6; at load 1.2, 1.9 against 3.3); resampling both views
0.9 (box_reduce, then one bilinear pass with the flip folded in); the colour steps 1.0 -- hue 0.3
(HSV in float, no 8-bit hue quantisation), blur 0.27 (one separable pass, the reference's kernel
less its negligible tail, reflect border), contrast 0.19, saturation 0.15 (one 3x3 transform),
brightness 0.07, grayscale 0.02, each weighted by how often it applies; to float, back to uint8
and to planar 0.3; header, draws and the rest 0.2: 4.2-4.4 in all, against 4.5-4.7 for decoding
and cropping the two views with a decode each and nothing else. Before, the colour steps cost
2.7-2.9 (a strided np.mod on the hue channel 0.5 per jittered view, saturation's blend through a
luma image 0.2, the full 23-tap blur 0.37, merge/split and clip passes 0.16 per view) and each
view had its own decode: 7.8-8.0 in all.

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
_GRAY = np.repeat(_LUMA[None], 3, axis=0)  # RGB -> three copies of the luma, as one 3x3 transform
# Blur taps of the reference kernel that carry less than this (of the unit sum) are left out:
# pixels are in [0, 1], so the result moves by at most this per pass (1/4000 of an 8-bit level).
_BLUR_TAIL = 1e-6


# The colour ops take float RGB [H, W, 3] in [0, 1] and may work in place. Each is one or two
# SIMD passes (cv2.transform, in-place numpy ufuncs): a strided numpy op on one channel of the
# interleaved image (np.mod on the hue plane) had cost more than both colour conversions.


def brightness(x: np.ndarray, f: float) -> np.ndarray:
    np.multiply(x, np.float32(f), out=x)
    return np.clip(x, 0, 1, out=x)


def contrast(x: np.ndarray, f: float) -> np.ndarray:
    """Blend with the mean luma (the channel means' luma: the same number, one pass cheaper)."""
    mean = float(_LUMA.astype(np.float64) @ cv2.mean(x)[:3])
    np.multiply(x, np.float32(f), out=x)
    np.add(x, np.float32((1 - f) * mean), out=x)
    return np.clip(x, 0, 1, out=x)


def saturation(x: np.ndarray, f: float) -> np.ndarray:
    """Blend with the pixel's luma: f x + (1 - f) gray(x) is one 3x3 matrix on each pixel."""
    m = np.float32(f) * np.eye(3, dtype=np.float32) + np.float32(1 - f) * _GRAY
    y = cv2.transform(x, m)
    return np.clip(y, 0, 1, out=y)


def hue(x: np.ndarray, f: float) -> np.ndarray:
    """Shift the hue by f (a fraction of the circle): OpenCV's float HSV keeps hue in degrees
    at float precision, where its uint8 HSV would round it to 2-degree steps. The shift is added
    as a non-negative offset, so hues reach up to 720 degrees; OpenCV's HSV->RGB takes the
    sector modulo 6 (tests/recipes/test_cpu_augment.py holds it to torchvision's adjust_hue
    across the circle), which saves wrapping the interleaved hue channel in numpy."""
    hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)
    cv2.add(hsv, (float(f * 360.0) % 360.0, 0.0, 0.0, 0.0), dst=hsv)
    y = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    return np.clip(y, 0, 1, out=y)


JITTER: tuple[Callable[[np.ndarray, float], np.ndarray], ...] = (brightness, contrast, saturation, hue)


def grayscale(x: np.ndarray) -> np.ndarray:
    return cv2.transform(x, _GRAY)


def blur_kernel(kernel: int, sigma: float) -> np.ndarray:
    """torchvision's separable kernel (exp(-t^2 / 2 sigma^2), normalised over `kernel` taps),
    without the outer taps whose weights sum to under _BLUR_TAIL: MoCo v2's 23 taps at sigma
    0.1-2.0 need 3-21, and the filter's cost is proportional to the taps."""
    t = np.arange(kernel, dtype=np.float64) - (kernel - 1) / 2
    k = np.exp(-(t**2) / (2 * sigma**2))
    k /= k.sum()
    r = (kernel - 1) // 2
    tail = np.cumsum(k[:r])  # mass of the outermost taps on one side, counted inwards
    cut = int(np.searchsorted(tail, _BLUR_TAIL / 2, side="right"))  # taps per side to leave out
    return k[cut:kernel - cut].astype(np.float32)


def gaussian_blur(x: np.ndarray, kernel: int, sigma: float) -> np.ndarray:
    """torchvision's Gaussian blur with reflect padding, which is OpenCV's BORDER_REFLECT_101
    (the leftmost taps of the tail are dropped, see blur_kernel)."""
    k = blur_kernel(kernel, sigma)
    return cv2.sepFilter2D(x, -1, k, k, borderType=cv2.BORDER_REFLECT_101)


def solarize(x: np.ndarray, threshold: float) -> np.ndarray:
    """1 - x where x >= threshold. On a single-channel view of the pixels, so OpenCV's mask
    applies element by element (np.where took 1 ms on a 224 px view)."""
    flat = x.reshape(x.shape[0], -1)
    mask = cv2.compare(flat, float(threshold), cv2.CMP_GE)
    cv2.subtract(1.0, flat, dst=flat, mask=mask)
    return x


def photometric(x: np.ndarray, p: Sequence[float], spec: ViewSpec) -> np.ndarray:
    """Colour jitter (in the drawn order), grayscale, blur and solarize on float RGB [H, W, 3]
    in [0, 1] (may be changed in place), each where its parameter row says so; the flip is done
    in the crop."""
    if p[COL["jitter"]] > 0.5:
        factors = p[COL["brightness"]:COL["hue"] + 1]
        for pos in range(4):
            op = int(round(p[COL["order0"] + pos]))
            if factors[op] != (0.0 if op == 3 else 1.0):  # a neutral factor changes nothing
                x = JITTER[op](x, float(factors[op]))
    if p[COL["gray"]] > 0.5:
        x = grayscale(x)
    if p[COL["blur"]] > 0.5 and spec.blur_kernel > 0:
        x = gaussian_blur(x, spec.blur_kernel, float(p[COL["sigma"]]))
    if p[COL["solarize"]] > 0.5:
        x = solarize(np.ascontiguousarray(x), spec.solarize_threshold / 255.0)
    return x


_STEPS = ("jitter", "gray", "blur", "solarize")


def colour(hwc: np.ndarray, p: Sequence[float], spec: ViewSpec) -> torch.Tensor:
    """A cropped view, uint8 [h, w, 3], through the photometric steps `p` asks for -> uint8
    [3, h, w]. Views that change no colour stay in uint8 throughout; the others are rounded to
    8 bits once, at the end."""
    if any(p[COL[k]] > 0.5 for k in _STEPS):
        x = photometric(np.multiply(hwc, np.float32(1 / 255), dtype=np.float32), p, spec)
        hwc = cv2.convertScaleAbs(x, alpha=255.0)  # rounds and saturates; x >= 0, so |.| changes nothing
    return decode.to_chw(hwc)


def _box(p: Sequence[float]) -> decode.Box:
    return (p[COL["left"]], p[COL["top"]], p[COL["right"]], p[COL["bottom"]])


class JpegViews(decode.JpegTransform):
    """A recipe's views on the encoded JPEG, in the loader's workers: tuple of uint8 [3, h, w]."""

    def __init__(self, specs: Sequence[ViewSpec]):
        super().__init__(None)
        self.specs = tuple(specs)

    def apply(self, data: decode.Source) -> tuple[torch.Tensor, ...]:
        w, h = decode.jpeg_size(data)
        rows = [draw(s, w, h) for s in self.specs]
        crops = decode.crop_resize_views(data, [_box(p) for p in rows], [(s.size[1], s.size[0]) for s in self.specs],
                                         (w, h), [p[COL["flip"]] > 0.5 for p in rows])
        return tuple(colour(c, p, s) for c, p, s in zip(crops, rows, self.specs, strict=True))

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

"""Blank and single-colour images: they teach a self-supervised model nothing and waste a sample.

An image is judged on a 64x64 area-averaged copy: the image check computes it from the pixels it
already holds and the ledger keeps it, so the release never decodes a staged image again (older
ledgers without it fall back to a 1/8-scale JPEG decode):
the share of pixels within `tolerance` (per channel, 0-255) of the median colour. When that share
reaches `min_fraction` the image is dropped, as `blank` when the colour is near white or near
black, and as `single_colour` otherwise. Photos of sky, snow or a night scene keep enough texture
to stay well below the default 98 % (the demo's darkest photo, the Hubble deep field, is at 86 %).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

SIDE = 64
WHITE = 240  # luminance at or above: "blank" (white page)
BLACK = 16  # luminance at or below: "blank" (black frame)


@dataclass(frozen=True, slots=True)
class QualityVerdict:
    reason: str  # "blank" or "single_colour"
    detail: str
    fraction: float
    colour: tuple[int, int, int]


def flat_fraction(img: Image.Image | np.ndarray, tolerance: int = 12) -> tuple[float, tuple[int, int, int]]:
    """Share of pixels within `tolerance` of the median colour, and that colour (RGB input).

    The median per channel comes from a 256-bin histogram (the mean of the two middle values, as
    np.median, rounded half to even) and the share from OpenCV's inRange: a quarter of numpy's
    cost on the 64x64 copy, and the same numbers."""
    a = np.asarray(img.convert("RGB") if isinstance(img, Image.Image) else img)
    small = a if a.shape[:2] == (SIDE, SIDE) else cv2.resize(a, (SIDE, SIDE), interpolation=cv2.INTER_AREA)
    small = np.ascontiguousarray(small)
    n = SIDE * SIDE
    colour = []
    for c in range(3):
        cum = cv2.calcHist([small], [c], None, [256], [0, 256]).ravel().cumsum()
        upper = int(np.searchsorted(cum, n // 2, side="right"))  # the value at sorted index n/2
        lower = int(np.searchsorted(cum, n // 2 - 1, side="right"))  # and at n/2 - 1
        colour.append(round((lower + upper) / 2))
    lo = np.array([max(0, v - tolerance) for v in colour], np.uint8)
    hi = np.array([min(255, v + tolerance) for v in colour], np.uint8)
    near = cv2.countNonZero(cv2.inRange(small, lo, hi)) / n
    return round(float(near), 4), (colour[0], colour[1], colour[2])


def verdict(frac: float, colour: tuple[int, int, int], min_fraction: float = 0.98,
            tolerance: int = 12) -> QualityVerdict | None:
    """A verdict from a measured flat fraction (as `flat_fraction` gives), or None to keep."""
    if frac < min_fraction:
        return None
    lum = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
    reason = "blank" if lum >= WHITE or lum <= BLACK else "single_colour"
    detail = (f"{frac:.1%} of pixels within ±{tolerance} of rgb{colour} "
              f"(limit {min_fraction:.0%})")
    return QualityVerdict(reason, detail, frac, colour)


def check_image(img: Image.Image | np.ndarray, min_fraction: float = 0.98,
                tolerance: int = 12) -> QualityVerdict | None:
    """A verdict when the image is (nearly) one flat colour, else None."""
    frac, colour = flat_fraction(img, tolerance)
    return verdict(frac, colour, min_fraction, tolerance)


def check_bytes(data: bytes, min_fraction: float = 0.98, tolerance: int = 12) -> QualityVerdict | None:
    """`check_image` on encoded bytes, decoding a JPEG at reduced scale (ledgers without flat_fraction)."""
    with Image.open(io.BytesIO(data)) as im:
        if im.format == "JPEG":
            im.draft("RGB", (SIDE, SIDE))
        im.load()
        return check_image(im, min_fraction, tolerance)

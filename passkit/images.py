"""Image check: decode safely, resize, strip every byte of metadata, re-encode, fingerprint.

Downloaded bytes are hostile until proven otherwise: the decoder gets a pixel budget before it
allocates anything, and what leaves this module is a fresh JPEG built from pixels alone, so no
EXIF, GPS, XMP or ICC block can ride along into a release.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageOps

from passkit.config import ImageSpec
from passkit.filters.quality import flat_fraction
from passkit.records import ImageInfo

ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"})


class ImageReject(Exception):
    """The bytes are not a usable image; `reason` is the short code recorded in the ledger."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class CheckedImage:
    info: ImageInfo
    image: Image.Image  # the resized RGB pixels, handed to the people filter


def fit_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(width, height) scaled so the longer side is at most `max_side`, aspect ratio kept."""
    if max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


_N = np.arange(32)
_DCT32 = np.cos(np.pi * (2 * _N[None, :] + 1) * _N[:, None] / 64)[:8]  # first 8 DCT-II rows, n=32


def phash(img: Image.Image | np.ndarray) -> str:
    """64-bit DCT perceptual hash (pHash): 32x32 grey, 2-D DCT, top-left 8x8 above its median.

    Accepts a PIL image or an RGB/grey uint8 array; area-averaged to 32x32 with OpenCV (a third of
    Pillow's Lanczos cost, and area averaging is what the 32x32 summary wants anyway).
    """
    a = np.asarray(img)
    if a.ndim == 3:
        a = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY)
    g = cv2.resize(a, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float64)
    low = (_DCT32 @ g @ _DCT32.T).ravel()
    bits = low > np.median(low[1:])
    return f"{int.from_bytes(np.packbits(bits).tobytes(), 'big'):016x}"


def modification_note(spec: ImageSpec) -> str:
    return f"resized to at most {spec.max_side} px on the longer side, re-encoded as JPEG, metadata removed"


def check(data: bytes, spec: ImageSpec) -> CheckedImage:
    """Decode, validate and normalise one downloaded image, or raise ImageReject."""
    if not data:
        raise ImageReject("empty", "zero bytes")
    src_sha = hashlib.sha256(data).hexdigest()
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data))
            fmt = im.format or "unknown"
            if fmt not in ALLOWED_FORMATS:
                raise ImageReject("unsupported_format", f"format {fmt}")
            w, h = im.size
            if w * h > spec.max_pixels:
                raise ImageReject("too_many_pixels", f"{w}x{h} exceeds {spec.max_pixels} pixels")
            if min(w, h) < spec.min_side:
                raise ImageReject("too_small", f"{w}x{h}, shorter side under {spec.min_side}")
            if fmt == "JPEG":
                # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when the target is that much smaller.
                # The box has the image's own aspect: a square box would stop a wide photo at the
                # scale where its *shorter* side still covers max_side, decoding 4x the pixels.
                im.draft("RGB", fit_size(w, h, spec.max_side))
            im.load()
        except ImageReject:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ImageReject("too_many_pixels", str(e)) from None
        except (OSError, SyntaxError, ValueError, Image.UnidentifiedImageError) as e:
            raise ImageReject("decode_error", f"{type(e).__name__}: {e}") from None
        except Exception as e:  # Pillow plugins raise a zoo of types on hostile input
            raise ImageReject("decode_error", f"{type(e).__name__}: {e}") from None
    with contextlib.suppress(Exception):  # honour orientation before the EXIF block is dropped
        im = ImageOps.exif_transpose(im, in_place=True) or im  # frame 0 of animations, as loaded
    if im.mode not in ("RGB", "L"):
        if "A" in im.getbands() or im.mode == "P":
            rgba = im.convert("RGBA")
            bg = Image.new("RGB", rgba.size, (255, 255, 255))
            bg.paste(rgba, mask=rgba.getchannel("A"))
            im = bg
        else:
            im = im.convert("RGB")
    if im.mode != "RGB":
        im = im.convert("RGB")
    # Target from the original size (orientation applied), not the draft-scaled one, so the output
    # size does not depend on which DCT scale libjpeg picked.
    ow, oh = (h, w) if (im.width > im.height) != (w > h) else (w, h)
    pixels = np.asarray(im)
    target = fit_size(ow, oh, spec.max_side)
    if target != im.size:
        # After a DCT-scaled decode the remaining factor is under 2, where bilinear is ~7x cheaper
        # than area averaging and libjpeg's scaled IDCT has already band-limited the pixels; larger
        # factors (PNG, WebP, small JPEG scales) get area averaging so nothing aliases.
        ratio = max(im.size) / max(target)
        interp = cv2.INTER_LINEAR if ratio < 2 else cv2.INTER_AREA
        pixels = cv2.resize(pixels, target, interpolation=interp)
    clean = Image.fromarray(pixels, "RGB")  # pixels only: no info dict survives
    buf = io.BytesIO()
    clean.save(buf, "JPEG", quality=spec.jpeg_quality, optimize=False, progressive=False)
    jpeg = buf.getvalue()
    flat, colour = flat_fraction(pixels)
    info = ImageInfo(
        jpeg=jpeg,
        sha256=hashlib.sha256(jpeg).hexdigest(),
        source_sha256=src_sha,
        phash=phash(pixels),
        width=clean.width,
        height=clean.height,
        orig_width=w,
        orig_height=h,
        orig_format=fmt,
        source_bytes=len(data),
        flat_fraction=flat,
        flat_colour=colour,
    )
    return CheckedImage(info, clean)

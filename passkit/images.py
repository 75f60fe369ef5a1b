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

import numpy as np
from PIL import Image, ImageOps

from passkit.config import ImageSpec
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


def phash(img: Image.Image) -> str:
    """64-bit DCT perceptual hash (pHash): 32x32 grey, 2-D DCT, top-left 8x8 above its median."""
    g = np.asarray(img.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    n = 32
    k = np.arange(n)
    basis = np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n))  # DCT-II rows
    dct = basis @ g @ basis.T
    low = dct[:8, :8].flatten()
    bits = low > np.median(low[1:])
    return f"{int(''.join('1' if b else '0' for b in bits), 2):016x}"


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
                im.draft("RGB", (spec.max_side, spec.max_side))
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
        im = ImageOps.exif_transpose(im)  # (animated images: frame 0, the one loaded above)
    if im.mode not in ("RGB", "L"):
        if "A" in im.getbands() or im.mode == "P":
            rgba = im.convert("RGBA")
            bg = Image.new("RGB", rgba.size, (255, 255, 255))
            bg.paste(rgba, mask=rgba.getchannel("A"))
            im = bg
        else:
            im = im.convert("RGB")
    im = im.convert("RGB")
    if max(im.size) > spec.max_side:
        scale = spec.max_side / max(im.size)
        size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
        im = im.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    clean = Image.frombytes("RGB", im.size, im.tobytes())  # pixels only: no info dict survives
    buf = io.BytesIO()
    clean.save(buf, "JPEG", quality=spec.jpeg_quality, optimize=False, progressive=False)
    jpeg = buf.getvalue()
    info = ImageInfo(
        jpeg=jpeg,
        sha256=hashlib.sha256(jpeg).hexdigest(),
        source_sha256=src_sha,
        phash=phash(clean),
        width=clean.width,
        height=clean.height,
        orig_width=w,
        orig_height=h,
        orig_format=fmt,
        source_bytes=len(data),
    )
    return CheckedImage(info, clean)

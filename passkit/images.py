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
import simplejpeg
from PIL import Image, ImageOps

from passkit import jpeg_planes
from passkit.config import ImageSpec
from passkit.filters.quality import flat_fraction
from passkit.reasons import Rejection
from passkit.records import ImageInfo

ALLOWED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF"})
JPEG_FORMATS = frozenset({"JPEG", "MPO"})  # MPO: camera JPEGs with extra frames; the first is the photo


class ImageReject(Rejection):
    """The bytes are not a usable image; `reason` is the short code recorded in the ledger."""


@dataclass(frozen=True, slots=True)
class CheckedImage:
    info: ImageInfo
    # The resized RGB pixels (H, W, 3), for the people filter; None when check() was told no one
    # needs them and took the planar path.
    pixels: np.ndarray | None

    @property
    def image(self) -> Image.Image:
        if self.pixels is None:
            raise ValueError("checked without RGB pixels: call images.check(..., pixels=True) for the people filter")
        return Image.fromarray(self.pixels, "RGB")


def fit_size(width: int, height: int, max_side: int, fit: str = "longer") -> tuple[int, int]:
    """(width, height) scaled so the longer side (fit="shorter": the shorter side) is at most
    `max_side`, aspect ratio kept; never enlarged."""
    side = max(width, height) if fit == "longer" else min(width, height)
    if side <= max_side:
        return width, height
    scale = max_side / side
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


def thumbnail(pixels: np.ndarray, side: int) -> np.ndarray:
    """A side x side area-averaged copy (the blank check and pHash summary).

    OpenCV's area resize is fast only for whole-number factors: a bilinear step to the nearest
    multiple of `side` first (a factor under 1.2, nothing aliases) makes it so, at a third of the
    cost of one area resize by a fractional factor, and within a few grey levels of it.
    """
    h, w = pixels.shape[:2]
    kw, kh = max(1, w // side), max(1, h // side)
    if (w, h) != (side * kw, side * kh):
        pixels = cv2.resize(pixels, (side * kw, side * kh), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(pixels, (side, side), interpolation=cv2.INTER_AREA)


def modification_note(spec: ImageSpec) -> str:
    return f"resized to at most {spec.max_side} px on the {spec.fit} side, re-encoded as JPEG, metadata removed"


def _dct_scale(w: int, h: int, target: tuple[int, int]) -> int:
    """The largest of 1, 2, 4, 8 that libjpeg can divide by and still cover the target size."""
    tw, th = target
    s = 1
    while s < 8 and w // (2 * s) >= tw and h // (2 * s) >= th:
        s *= 2
    return s


def _decode_jpeg(data: bytes, w: int, h: int, target: tuple[int, int]) -> np.ndarray | None:
    """RGB pixels at a reduced DCT scale straight into numpy (libjpeg-turbo via simplejpeg), or
    None when it cannot (CMYK, anything it warns about): Pillow then decodes, and decides.

    libjpeg's fast IDCT is not used: it saved under a tenth of the decode and moved people-detector
    scores (person_dev_coco's false rejections rose from 0.074 to 0.089). Plain chroma upsampling
    changed no verdict there, but saved nothing measurable either."""
    s = _dct_scale(w, h, target)
    try:  # strict: a truncated or corrupt stream raises instead of coming back grey-filled
        return simplejpeg.decode_jpeg(data, colorspace="RGB", min_width=-(-w // s), min_height=-(-h // s),
                                      strict=True)
    except Exception:
        return None


# EXIF orientation -> the numpy view that shows the photo upright (same as ImageOps.exif_transpose),
# for RGB arrays and single planes alike.
_ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: np.swapaxes(a, 0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.swapaxes(a, 0, 1)[::-1, ::-1],
    8: lambda a: np.rot90(a, 1),
}


def _orientation(im: Image.Image) -> int:
    try:
        o = im.getexif().get(0x0112, 1)
        return o if o in _ORIENT else 1
    except Exception:  # hostile EXIF: the photo as stored
        return 1


def _pillow_pixels(im: Image.Image) -> np.ndarray:
    """RGB pixels of an image Pillow has loaded: orientation applied, alpha flattened on white."""
    with contextlib.suppress(Exception):  # honour orientation before the EXIF block is dropped
        im = ImageOps.exif_transpose(im, in_place=True) or im  # frame 0 of animations, as loaded
    if im.mode not in ("RGB", "L") and ("A" in im.getbands() or im.mode == "P"):
        rgba = im.convert("RGBA")
        bg = Image.new("RGB", rgba.size, (255, 255, 255))
        bg.paste(rgba, mask=rgba.getchannel("A"))
        im = bg
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.asarray(im)


def _resize(pixels: np.ndarray, target: tuple[int, int]) -> np.ndarray:
    """`pixels` (an RGB array or one plane) at `target` (width, height).

    After a DCT-scaled decode the remaining factor is under 2, where bilinear is ~7x cheaper than
    area averaging and libjpeg's scaled IDCT has already band-limited the pixels; larger factors
    (PNG, WebP, small JPEG scales, full-resolution chroma) get area averaging so nothing aliases.
    """
    ph, pw = pixels.shape[:2]
    if (pw, ph) == target:
        return np.ascontiguousarray(pixels)
    interp = cv2.INTER_LINEAR if max(pw, ph) < 2 * max(target) else cv2.INTER_AREA
    return cv2.resize(pixels, target, interpolation=interp)


def _output_size(decoded: tuple[int, int], w: int, h: int, spec: ImageSpec) -> tuple[int, int]:
    """The output (width, height), from the original size with its orientation applied (not the
    decoded size), so it does not depend on which DCT scale libjpeg picked."""
    pw, ph = decoded
    ow, oh = (h, w) if (pw > ph) != (w > h) else (w, h)
    return fit_size(ow, oh, spec.max_side, spec.fit)


def check(data: bytes, spec: ImageSpec, pixels: bool = True) -> CheckedImage:
    """Decode, validate and normalise one downloaded image, or raise ImageReject.

    Pillow reads the header (format, size, orientation: the pixel budget is enforced before any
    pixel is allocated); JPEGs then decode at reduced DCT scale with libjpeg-turbo, other formats
    (and JPEGs libjpeg-turbo refuses) through Pillow. Resize with OpenCV, encode with
    libjpeg-turbo: no PIL<->numpy copies on the common path.

    `pixels=False`: the caller needs no RGB pixels (the people filter is off), so a YCbCr JPEG
    stays in Y, Cb, Cr planes from decode to encode when libturbojpeg is there (jpeg_planes:
    12-15 % less time per photo with the shorter side to 512). The people filter always gets RGB
    decoded as before: its recall and false-rejection rates were measured on those pixels.
    """
    if not data:
        raise ImageReject("empty", "zero bytes")
    src_sha = hashlib.sha256(data).hexdigest()
    rgb: np.ndarray | None = None
    planes: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
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
            if fmt in JPEG_FORMATS:
                box = fit_size(w, h, spec.max_side, spec.fit)
                if not pixels:
                    planes = jpeg_planes.decode_planes(data, _dct_scale(w, h, box))
                if planes is None:
                    rgb = _decode_jpeg(data, w, h, box)
                if planes is not None or rgb is not None:
                    turn = _ORIENT.get(_orientation(im))
                    if turn is not None and planes is not None:
                        planes = (turn(planes[0]), turn(planes[1]), turn(planes[2]))
                    elif turn is not None and rgb is not None:
                        rgb = turn(rgb)
                else:
                    # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when the target is that much
                    # smaller. The box has the image's own aspect: a square box would stop a wide
                    # photo at the scale where its *shorter* side still covers max_side.
                    im.draft("RGB", box)
            if planes is None and rgb is None:
                im.load()
        except ImageReject:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ImageReject("too_many_pixels", str(e)) from None
        except (OSError, SyntaxError, ValueError, Image.UnidentifiedImageError) as e:
            raise ImageReject("decode_error", f"{type(e).__name__}: {e}") from None
        except Exception as e:  # Pillow plugins raise a zoo of types on hostile input
            raise ImageReject("decode_error", f"{type(e).__name__}: {e}") from None
    if planes is not None:
        y, cb, cr = planes
        target = _output_size((y.shape[1], y.shape[0]), w, h, spec)
        chroma = ((target[0] + 1) // 2, (target[1] + 1) // 2)  # 4:2:0 out, as on the RGB path
        y, cb, cr = _resize(y, target), _resize(cb, chroma), _resize(cr, chroma)
        jpeg = jpeg_planes.encode_planes(y, cb, cr, spec.jpeg_quality)
        grey = thumbnail(y, 64)
        colour = cv2.cvtColor(cv2.merge([grey, thumbnail(cr, 64), thumbnail(cb, 64)]), cv2.COLOR_YCrCb2RGB)
        return _checked(jpeg, grey, colour, target, w, h, fmt, data, src_sha, None)
    if rgb is None:
        rgb = _pillow_pixels(im)
    target = _output_size((rgb.shape[1], rgb.shape[0]), w, h, spec)
    rgb = _resize(rgb, target)
    # A fresh baseline JPEG from pixels alone: no EXIF, GPS, XMP or ICC block survives.
    jpeg = simplejpeg.encode_jpeg(rgb, quality=spec.jpeg_quality, colorspace="RGB", colorsubsampling="420")
    thumb = thumbnail(rgb, 64)
    return _checked(jpeg, thumb, thumb, target, w, h, fmt, data, src_sha, rgb)


def _checked(jpeg: bytes, grey: np.ndarray, colour: np.ndarray, target: tuple[int, int], w: int, h: int,
             fmt: str, data: bytes, src_sha: str, rgb: np.ndarray | None) -> CheckedImage:
    """The record of a checked image: pHash from the grey (or RGB) thumbnail, blank check from the
    colour one."""
    flat, flat_colour = flat_fraction(colour)
    info = ImageInfo(
        jpeg=jpeg,
        sha256=hashlib.sha256(jpeg).hexdigest(),
        source_sha256=src_sha,
        phash=phash(grey),
        width=target[0],
        height=target[1],
        orig_width=w,
        orig_height=h,
        orig_format=fmt,
        source_bytes=len(data),
        flat_fraction=flat,
        flat_colour=flat_colour,
    )
    return CheckedImage(info, rgb)

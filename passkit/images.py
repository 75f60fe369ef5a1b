"""Image check: decode safely, resize, strip every byte of metadata, re-encode, fingerprint.

Downloaded bytes are hostile until proven otherwise: only the parsers of the formats the check
takes ever see them, the decoder gets a pixel budget and a memory budget (in bytes, shared by the
threads of a process) before it allocates anything, and what leaves this module is a fresh JPEG
built from pixels alone, so no EXIF, GPS, XMP or ICC block can ride along into a release.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np
import simplejpeg
from PIL import Image, ImageOps

from passkit import jpeg_planes, process
from passkit.config import ImageSpec
from passkit.filters.quality import flat_fraction
from passkit.reasons import Rejection
from passkit.records import ImageInfo

ALLOWED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF"})
JPEG_FORMATS = frozenset({"JPEG", "MPO"})  # MPO: camera JPEGs with extra frames; the first is the photo
# The Pillow plugins that may parse downloaded bytes (MPO comes through the JPEG plugin). Pillow
# otherwise tries every plugin it has (PSD, ICO, EPS, FITS, ...) on whatever arrives: their header
# parsers are attack surface the crawler has no use for.
OPEN_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")

MB = 1 << 20
# Decode memory, in bytes a pixel, of what Pillow holds: its storage for the modes decoders produce
# (RGB, RGBA, LA, CMYK, I, F: 4; 16-bit grey: 2; L, P, 1: 1; a 16-bit RGBA PNG is stored as 8-bit
# RGBA, its 16-bit rows only pass through a line buffer), plus the decoders that fill full-size
# buffers of their own first (libwebp's animation decoder keeps two RGBA canvases and hands Pillow
# a third copy; libtiff's RGBA reader one). Checked against the peak RSS of one check() on
# 16-megapixel files of each format and mode (the estimates are at or above it).
_STORAGE_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
_DECODER_BUFFER = {"WEBP": 12, "TIFF": 4}
_NUMPY_COPY = 6  # np.asarray(im) goes through Pillow's tobytes, which joins its chunks: 2 x 3 bytes
# libjpeg's default progressive script writes 10 scans (one per component more for CMYK, a few more
# in other encoders); 100 leaves room for unusual encoders and stops scan bombs of thousands.
MAX_JPEG_SCANS = 100


class ImageReject(Rejection):
    """The bytes are not a usable image; `reason` is the short code recorded in the ledger."""


class DecodeBudget:
    """Bytes of decode memory the image checks of one process share (image.decode_budget_mb).

    A check reserves its estimated peak before decoding and gives it back when its pixels are
    resized; while the others hold too much it waits (a queue, not a failure), so a worker's
    decode memory stays under the budget whatever its threads download at once. An image whose
    estimate is over the whole budget is rejected (`decode_budget`).
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.held = 0
        self.peak = 0  # the most ever held at once (tests, diagnostics)
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def reserve(self, n: int) -> Iterator[None]:
        if n > self.limit:
            raise ImageReject("decode_budget", f"decoding needs about {-(-n // MB)} MB, over "
                              f"image.decode_budget_mb ({self.limit // MB} MB)")
        with self._cond:
            while self.held + n > self.limit:
                self._cond.wait()
            self.held += n
            self.peak = max(self.peak, self.held)
        try:
            yield
        finally:
            if n >= TRIM_AT:
                process.hand_back_freed_memory()
            with self._cond:
                self.held -= n
                self._cond.notify_all()


# After a decode this large, freed memory goes back to the OS before the next decode may start:
# glibc keeps what a thread freed in that thread's arena, where the next big decode, on another
# thread, cannot use it, so a worker's RSS would grow by a budget per thread instead of one budget
# (four 9400 x 9400 RGBA PNGs in turn: 1160 MB without, against 680 MB reserved at once).
TRIM_AT = 64 * MB


_budgets: dict[int, DecodeBudget] = {}
_budgets_lock = threading.Lock()


def decode_budget(spec: ImageSpec) -> DecodeBudget:
    """This process's shared budget for the spec's limit (one per limit: specs rarely differ)."""
    limit = spec.decode_budget_mb * MB
    b = _budgets.get(limit)
    if b is None:
        with _budgets_lock:
            b = _budgets.setdefault(limit, DecodeBudget(limit))
    return b


def _decode_cost(im: Image.Image, fmt: str, w: int, h: int, box: tuple[int, int]) -> tuple[int, int]:
    """(peak bytes of the usual decode, peak bytes of the reduced one), estimated from the header.

    JPEG: the DCT-scaled decode, Pillow's or libjpeg-turbo's (RGB, converted and copied to numpy),
    plus the coefficients of a progressive file, which libjpeg keeps for the whole image at full
    size whatever the DCT scale (2 bytes a sample); the reduced decode is the same, the DCT scale
    being all there is. Other formats decode at full size: the image as
    Pillow stores it, an orientation copy, the RGBA conversion and white canvas of an image with
    alpha or a palette (a plain RGB conversion otherwise), the numpy copy; the reduced decode
    keeps only the stored image, a converted copy where Image.reduce needs one (and its
    premultiplied copy for alpha), and the reduced pixels.
    """
    px = w * h
    if fmt in JPEG_FORMATS:
        s = _dct_scale(w, h, box)
        cost = -(-w // s) * -(-h // s) * (4 + 4 + _NUMPY_COPY)  # Pillow's fallback: stored, converted, numpy
        if im.info.get("progressive"):
            cost += 2 * px * _jpeg_components(im)
        return cost, cost
    stored = _STORAGE_BYTES.get(im.mode, 4)
    alpha = im.mode in ("P", "PA") or "A" in im.getbands() or "transparency" in im.info
    convert = 0 if im.mode == "RGB" else (8 if alpha else 4)
    full = px * (stored + _DECODER_BUFFER.get(fmt, 0) + stored + convert + _NUMPY_COPY)
    k = max(1, min(w // max(1, box[0]), h // max(1, box[1])))
    small = -(-w // k) * -(-h // k) * (8 + 8 + _NUMPY_COPY)  # the reduced image through the usual conversions
    convert = 0 if im.mode in ("L", "RGB", "LA", "RGBA") else 4
    premultiplied = 4 if im.mode in ("LA", "RGBA") or (convert and alpha) else 0
    lean = px * (stored + _DECODER_BUFFER.get(fmt, 0) + convert + premultiplied) + small
    return full, lean


def _jpeg_components(im: Image.Image) -> float:
    """Samples a pixel a JPEG stores, from its components' sampling factors (3 for 4:4:4 YCbCr,
    1.5 for 4:2:0, 4 for CMYK); 4 when the header does not say."""
    layer = getattr(im, "layer", None)
    try:
        hmax = max(c[1] for c in layer)
        vmax = max(c[2] for c in layer)
        return sum(c[1] * c[2] for c in layer) / (hmax * vmax)
    except Exception:
        return 4.0


def _reduced_pixels(im: Image.Image, box: tuple[int, int]) -> np.ndarray:
    """RGB pixels of an image too big to convert at full size: decoded, then at once reduced by
    a whole factor that keeps it at least `box` (box averaging, alpha premultiplied), and only
    then converted. Formats other than JPEG cannot be decoded at reduced size."""
    w, h = im.size
    k = max(1, min(w // max(1, box[0]), h // max(1, box[1])))
    im.load()
    if k == 1:
        return _pillow_pixels(im)
    turn = _ORIENT.get(_orientation(im))  # the reduced copy loses TIFF tags: orientation from here
    if im.mode not in ("L", "RGB", "LA", "RGBA"):  # Image.reduce takes 8-bit L and RGB(A) only
        alpha = im.mode in ("P", "PA") or "A" in im.getbands() or "transparency" in im.info
        im = im.convert("RGBA" if alpha else "RGB")
    small = im.reduce(k)
    del im
    small.info = {}  # no EXIF or XMP left for _pillow_pixels to turn the photo a second time
    rgb = _pillow_pixels(small)
    return turn(rgb) if turn is not None else rgb


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

    Pillow reads the header (format, size: the pixel budget is enforced, and the decode's memory
    reserved from the process's budget, before any pixel is allocated); JPEGs then decode at
    reduced DCT scale with libjpeg-turbo, other formats (and JPEGs libjpeg-turbo refuses) through
    Pillow, at full size, or reduced right after decoding when the usual conversions would not fit
    the budget. Resize with OpenCV, encode with libjpeg-turbo: no PIL<->numpy copies on the
    common path.

    `pixels=False`: the caller needs no RGB pixels (the people filter is off), so a YCbCr JPEG
    stays in Y, Cb, Cr planes from decode to encode when libturbojpeg is there (jpeg_planes:
    12-15 % less time per photo with the shorter side to 512). The people filter always gets RGB
    decoded as before: its recall and false-rejection rates were measured on those pixels.
    """
    if not data:
        raise ImageReject("empty", "zero bytes")
    src_sha = hashlib.sha256(data).hexdigest()
    im, fmt, w, h = _open(data, spec)
    box = fit_size(w, h, spec.max_side, spec.fit)
    try:
        full, lean = _decode_cost(im, fmt, w, h, box)
    except Exception as e:  # a header Pillow parsed but cannot describe
        raise ImageReject("decode_error", f"{type(e).__name__}: {e}") from None
    if fmt in JPEG_FORMATS and im.info.get("progressive"):
        # Each scan of a progressive JPEG passes over the whole image: thousands of tiny scans
        # keep a core busy for minutes. FF DA cannot occur inside entropy-coded data (an FF there
        # is followed by 00), so the count is exact but for markers hidden in APPn/COM payloads,
        # which only make it larger.
        scans = data.count(b"\xff\xda")
        if scans > MAX_JPEG_SCANS:
            raise ImageReject("decode_error", f"progressive JPEG with {scans} scans (at most {MAX_JPEG_SCANS})")
    budget = decode_budget(spec)
    reduced = full > budget.limit
    with budget.reserve(lean if reduced else full):
        out = _decode(data, spec, pixels, im, fmt, w, h, box, reduced, src_sha)
        del im  # the decoded image goes before its reservation does
    return out


def _other_format(data: bytes) -> str | None:
    """The format another Pillow plugin claims from the first bytes (its signature test only: no
    parser runs), to tell an unsupported format from bytes that are no image."""
    Image.init()
    prefix = data[:16]
    for fmt, (_factory, accept) in list(Image.OPEN.items()):
        if fmt in OPEN_FORMATS or accept is None:
            continue
        try:
            hit = accept(prefix)
        except Exception:
            continue
        if hit and not isinstance(hit, str):
            return fmt
    return None


def _open(data: bytes, spec: ImageSpec) -> tuple[Image.Image, str, int, int]:
    """The image's header through the allowed formats' parsers only: (image, format, width, height).

    Pillow's DecompressionBombWarning is not turned into an error here: the spec's max_pixels is
    checked right after, before any pixel is decoded, and warning filters are process-wide state
    that `warnings.catch_warnings` swaps without a lock, which the fetch threads would race on."""
    try:
        im = Image.open(io.BytesIO(data), formats=OPEN_FORMATS)
    except Image.UnidentifiedImageError as e:
        other = _other_format(data)
        if other is not None:
            raise ImageReject("unsupported_format", f"format {other}") from None
        raise ImageReject("decode_error", f"{type(e).__name__}: {e}") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageReject("too_many_pixels", str(e)) from None
    except Exception as e:  # Pillow plugins raise a zoo of types on hostile input
        raise ImageReject("decode_error", f"{type(e).__name__}: {e}") from None
    fmt = im.format or "unknown"
    if fmt not in ALLOWED_FORMATS:
        raise ImageReject("unsupported_format", f"format {fmt}")
    w, h = im.size
    if w * h > spec.max_pixels:
        raise ImageReject("too_many_pixels", f"{w}x{h} exceeds {spec.max_pixels} pixels")
    if min(w, h) < spec.min_side:
        raise ImageReject("too_small", f"{w}x{h}, shorter side under {spec.min_side}")
    return im, fmt, w, h


def _decode(data: bytes, spec: ImageSpec, pixels: bool, im: Image.Image, fmt: str, w: int, h: int,
            box: tuple[int, int], reduced: bool, src_sha: str) -> CheckedImage:
    """check()'s decode, resize and encode, once the decode's memory is reserved."""
    rgb: np.ndarray | None = None
    planes: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    try:
        if fmt in JPEG_FORMATS:
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
            if reduced and fmt not in JPEG_FORMATS:
                rgb = _reduced_pixels(im, box)
                im.close()  # the full-size decode goes before the resize
            else:
                im.load()
    except ImageReject:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageReject("too_many_pixels", str(e)) from None
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

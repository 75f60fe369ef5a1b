"""Fast decode: choose the crop first, then decode only the part of the JPEG that crop needs,
only as large as it needs.

A 1600 px photo cropped and resized to 224 px does not need its full-resolution pixels. JPEG
stores 8x8 DCT blocks, and libjpeg-turbo can reconstruct them at 1/2, 1/4 or 1/8 of the size for
a fraction of the IDCT, upsampling and colour-conversion work; it can also stop after the crop's
last row and skip the IDCT of the rows above and the columns beside it. The transforms here:

1. read the image size from the JPEG header (no decoding);
2. draw the crop in full-resolution coordinates, with exactly torchvision's RandomResizedCrop
   distribution (or the deterministic resize + center crop);
3. decode the crop's part (plus 2 pixels) at the strongest DCT reduction that still leaves the
   crop at least as large as the output -- so the result is a downscale, like the
   full-resolution path, never an upscale (powers of two: the other n/8 scales use slower IDCTs);
4. box-filter by whole factors where the crop is still 2x the output or more (box_reduce), then
   one bilinear pass for the sub-pixel box and the flip (cv2.warpAffine), and return a planar
   uint8 CHW tensor (normalise on the device: passkit.recipes.augment.normalize).

Several crops of one image (a recipe's views: passkit.recipes.cpu_augment) share one decode,
crop_resize_views: the part covering all of them at the finest scale any of them needs, so the
Huffman decoding above the crops is done once, not once per view.

Decoders, in order: libturbojpeg 3 through ctypes (`decode_region`, the crop's part only; the
`turbojpeg` wheel of the `fast` and `dev` extras ships one), simplejpeg (the whole image at the
reduced scale), Pillow's `draft`. The pixels the resampling reads are the same from each, so the
output does not depend on which is installed. Anything they cannot read (CMYK, 12-bit, damaged
or non-JPEG bytes) falls back to a full Pillow decode.

Where the CPU time goes (benchmarks/loader_vs_webdataset.py's 5,000 photos, 640-1600 px, ~175 KB,
RandomResizedCrop(224), one AMD EPYC core, ms per image, measured stage by stage in one process):
the cropped decode 1.56 (the whole image at the same DCT scale took 2.11-2.26: two thirds of that
is Huffman decoding, which no DCT scale reduces and which a JPEG without restart markers must do
for every row above the crop too -- stopping at the crop's bottom, 0.83 of the height on
average, and skipping the IDCT and colour conversion beside the crop is what is left to save;
the DCT scales chosen were 1 for 32 % of the crops, 1/2 for 57 %, 1/4-1/8 for 11 %); resampling
0.28; reading the two members and the key check 0.09; parsing a shard's tar headers 0.05
(amortised; every worker parses each shard it reads); header, crop and flip draws 0.03; stacking
the batch 0.09; per-batch seeding 0.01: 2.1-2.2 in all. In two DataLoader workers a pass costs
2.3-2.5 per image (stacking into shared memory, handing batches over, each worker parsing every
shard), the main process 0.02. webdataset's default pipeline on the same photos: Pillow's full
decode 3.4 and torchvision's crop, flip and PILToTensor 2.6, 7.5-8 per image in its workers.
Single-threaded throughout: cv2 is set to one thread in the workers and torch's DataLoader sets
torch's; libjpeg-turbo decodes on the calling thread.

These are "JPEG transforms": they take the encoded bytes (`wants_jpeg = True`); the loader hands
them the `.jpg` member as is. Any other transform gets a decoded PIL RGB image, as before.
Randomness comes from Python's `random` (torchvision's own transforms use torch's RNG); the
loader seeds both, and numpy's, per batch.
"""

from __future__ import annotations

import ctypes
import io
import math
import random
import threading
from collections.abc import Callable, Sequence
from ctypes import c_char_p, c_int, c_size_t, c_void_p
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image

try:  # optional: faster header parsing and n/8 scaled decoding into numpy
    import simplejpeg
except ImportError:  # pragma: no cover - depends on the environment
    simplejpeg = None

Box = tuple[float, float, float, float]  # left, top, right, bottom in full-resolution pixels


def backend() -> str:
    """Which decoder the fast path uses: "libturbojpeg" (the crop's rows and columns only, at
    reduced scale), "simplejpeg" (the whole image at reduced scale) or "pillow-draft"."""
    if _turbo() is not None:
        return "libturbojpeg"
    return "simplejpeg" if simplejpeg is not None else "pillow-draft"


# ----------------------------------------------------------------------------- libturbojpeg 3


class _Scale(ctypes.Structure):
    _fields_ = [("num", c_int), ("denom", c_int)]


class _Region(ctypes.Structure):
    _fields_ = [("x", c_int), ("y", c_int), ("w", c_int), ("h", c_int)]


_TJINIT_DECOMPRESS = 1
_TJPARAM_STOPONWARNING, _TJPARAM_SUBSAMP, _TJPARAM_JPEGWIDTH, _TJPARAM_JPEGHEIGHT = 0, 4, 5, 6
_TJPF_RGB = 0
# TJSAMP_* (444, 422, 420, GRAY, 440, 411, 441) -> width of an iMCU: where a crop may start
_MCU_WIDTH = {0: 8, 1: 16, 2: 16, 3: 8, 4: 8, 5: 32, 6: 8}
# Columns at a cropped decode's left and right edges are upsampled without their outer
# neighbour (h2 chroma at full scale), so they can differ from a whole decode by a few levels:
# decode this many more pixels on every side than the crop's resampling reads.
_MARGIN = 2

_turbo_lock = threading.Lock()
_turbo_lib: list[ctypes.CDLL | None] = []  # empty until looked up, then [library or None]


def _turbo() -> ctypes.CDLL | None:
    """libturbojpeg 3 (the TurboJPEG 3 API: scaling *and* cropping), looked up where
    passkit.jpeg_planes looks (PASSKIT_TURBOJPEG, the system's, the `turbojpeg` wheel's), once."""
    if _turbo_lib:
        return _turbo_lib[0]
    with _turbo_lock:
        if not _turbo_lib:
            from passkit.jpeg_planes import _candidates as candidates  # the same places, in order

            found = None
            for path in candidates():
                try:
                    lib = ctypes.CDLL(path)
                    lib.tj3Init.restype = c_void_p
                    lib.tj3Init.argtypes = [c_int]
                    lib.tj3Destroy.argtypes = [c_void_p]
                    lib.tj3DecompressHeader.argtypes = [c_void_p, c_char_p, c_size_t]
                    lib.tj3Get.argtypes = [c_void_p, c_int]
                    lib.tj3Set.argtypes = [c_void_p, c_int, c_int]
                    lib.tj3SetScalingFactor.argtypes = [c_void_p, _Scale]
                    lib.tj3SetCroppingRegion.argtypes = [c_void_p, _Region]
                    lib.tj3Decompress8.argtypes = [c_void_p, c_char_p, c_size_t, c_void_p, c_int, c_int]
                except (OSError, AttributeError):  # not there, or a 2.x library without tj3*
                    continue
                found = lib
                break
            _turbo_lib.append(found)
    return _turbo_lib[0]


def decode_region(data: bytes, size: tuple[int, int], k: int, box: Box) -> tuple[np.ndarray, int, int] | None:
    """Decode at 1/k only the part of the image around `box` (full-resolution pixels): RGB uint8
    [h, w, 3] and the (x, y) of its top-left corner in the 1/k image; None where libturbojpeg 3
    is missing or this JPEG is not for it (CMYK, 12-bit, lossless, damaged: the callers' other
    decoders decide those, as before).

    A JPEG has no index into its entropy-coded data, so the rows above the crop are still
    Huffman-decoded (their IDCT and colour conversion are skipped), but decoding stops after the
    crop's last row, and the columns beside the crop skip IDCT, upsampling and colour
    conversion. On the benchmark's photos the Huffman decoding is two thirds of a whole decode at
    any DCT scale, which is why cropping saves more than a stronger DCT reduction would.
    The pixels the crop's resampling reads are the same as a whole decode's, bit for bit.
    """
    lib = _turbo()
    if lib is None or not isinstance(data, bytes):
        return None
    w, h = size
    sw, sh = -(-w // k), -(-h // k)  # libjpeg's size at 1/k
    left, top, right, bottom = box
    handle = lib.tj3Init(_TJINIT_DECOMPRESS)
    if not handle:
        return None
    try:
        if lib.tj3DecompressHeader(handle, data, len(data)) != 0:
            return None
        if (lib.tj3Get(handle, _TJPARAM_JPEGWIDTH), lib.tj3Get(handle, _TJPARAM_JPEGHEIGHT)) != (w, h):
            return None
        mcu = _MCU_WIDTH.get(lib.tj3Get(handle, _TJPARAM_SUBSAMP))
        if mcu is None:
            return None
        step = -(-mcu // k)  # an iMCU's width at 1/k: the crop's left edge must be a multiple
        x0 = max(0, math.floor(left * sw / w) - _MARGIN) // step * step
        x1 = min(sw, math.ceil(right * sw / w) + _MARGIN)
        y0 = max(0, math.floor(top * sh / h) - _MARGIN)
        y1 = min(sh, math.ceil(bottom * sh / h) + _MARGIN)
        lib.tj3Set(handle, _TJPARAM_STOPONWARNING, 1)  # a damaged stream fails, as simplejpeg's strict mode
        if (lib.tj3SetScalingFactor(handle, _Scale(1, k)) != 0
                or lib.tj3SetCroppingRegion(handle, _Region(x0, y0, x1 - x0, y1 - y0)) != 0):
            return None
        out = np.empty((y1 - y0, x1 - x0, 3), np.uint8)
        if lib.tj3Decompress8(handle, data, len(data), out.ctypes.data, (x1 - x0) * 3, _TJPF_RGB) != 0:
            return None
        return out, x0, y0
    finally:
        lib.tj3Destroy(handle)  # a handle costs under a microsecond: one per call, none shared by threads


Source = bytes | Image.Image  # encoded JPEG, or an already decoded image


def jpeg_size(data: Source) -> tuple[int, int]:
    """(width, height) from the header, without decoding."""
    if isinstance(data, Image.Image):
        return data.size
    if simplejpeg is not None:
        try:
            h, w, _, _ = simplejpeg.decode_jpeg_header(data)
            return int(w), int(h)
        except ValueError:
            pass
    with Image.open(io.BytesIO(data)) as im:
        return im.size


def decode_pil(data: bytes) -> Image.Image:
    """Full-resolution decode to PIL RGB (the slow path, and the fallback)."""
    im = Image.open(io.BytesIO(data))
    im.load()
    return im if im.mode == "RGB" else im.convert("RGB")


def decode_reduced(data: Source, size: tuple[int, int], need: tuple[int, int]) -> np.ndarray:
    """Decode to RGB uint8 [H, W, 3] at the smallest DCT scale whose size is at least `need` (w, h).

    `size` is the full (w, h) from the header; the result's shape tells which scale was used.
    A decoded PIL image is converted as it is.
    """
    if isinstance(data, Image.Image):
        return np.asarray(data if data.mode == "RGB" else data.convert("RGB"))
    w, h = size
    nw, nh = min(max(need[0], 1), w), min(max(need[1], 1), h)
    if simplejpeg is not None:
        try:
            return simplejpeg.decode_jpeg(data, colorspace="RGB", min_width=nw, min_height=nh)
        except ValueError:
            pass  # e.g. CMYK: Pillow below converts it
    im = Image.open(io.BytesIO(data))
    if im.format == "JPEG":
        im.draft("RGB", (nw, nh))  # picks the largest 1/2^k reduction that stays >= (nw, nh)
    im.load()
    return np.asarray(im if im.mode == "RGB" else im.convert("RGB"))


def reduction(crop_w: float, crop_h: float, out: tuple[int, int]) -> int:
    """The DCT reduction (1, 2, 4 or 8) that keeps a crop_w x crop_h crop at least `out` (w, h).

    Only powers of two: libjpeg-turbo's other n/8 scales use slower generic IDCTs (5/8 or 7/8
    decode slower than full size), while 1/2, 1/4, 1/8 are the fast paths."""
    k = 1
    while k < 8 and crop_w / (2 * k) >= out[0] and crop_h / (2 * k) >= out[1]:
        k *= 2
    return k


Frame = tuple[float, float, float, float]  # sx, sy, ox, oy: full-res (x, y) -> (x * sx - ox, y * sy - oy)


def decode_part(data: Source, size: tuple[int, int], k: int, box: Box) -> tuple[np.ndarray, Frame]:
    """RGB uint8 [h, w, 3] covering `box` at DCT scale 1/k, and the frame that maps full-resolution
    coordinates onto it: the crop's part where libturbojpeg 3 can decode it, else the whole image."""
    w, h = size
    part = decode_region(data, (w, h), k, box) if isinstance(data, bytes) else None
    if part is not None:
        arr, ox, oy = part
        return arr, (math.ceil(w / k) / w, math.ceil(h / k) / h, ox, oy)
    arr = decode_reduced(data, (w, h), (math.ceil(w / k), math.ceil(h / k)))
    return arr, (arr.shape[1] / w, arr.shape[0] / h, 0.0, 0.0)


def box_reduce(arr: np.ndarray, fx: int, fy: int) -> np.ndarray:
    """Means of fx x fy blocks of uint8 [h, w, c], rounded to nearest, the last row and column of
    blocks partial: PIL's Image.reduce((fx, fy)) (whose fixed point is a level off in places),
    with OpenCV's whole-factor INTER_AREA on the whole blocks and on each partial strip. PIL's
    copied the pixels into its own 4-byte layout and back: 0.38 ms against 0.07 to halve a
    460 px crop."""
    h, w = arr.shape[:2]
    bw, bh = w // fx, h // fy  # whole blocks
    out = np.empty((-(-h // fy), -(-w // fx), arr.shape[2]), np.uint8)
    for rows, cols, y0, x0 in ((slice(0, bh * fy), slice(0, bw * fx), 0, 0), (slice(0, bh * fy), slice(bw * fx, w), 0, bw),
                               (slice(bh * fy, h), slice(0, bw * fx), bh, 0), (slice(bh * fy, h), slice(bw * fx, w), bh, bw)):
        part = arr[rows, cols]
        if part.size:
            dw, dh = -(-part.shape[1] // fx), -(-part.shape[0] // fy)  # 1 along a partial strip's short side
            out[y0:y0 + dh, x0:x0 + dw] = cv2.resize(part, (dw, dh), interpolation=cv2.INTER_AREA).reshape(dh, dw, -1)
    return out


def resample(arr: np.ndarray, frame: Frame, box: Box, out: tuple[int, int], flip: bool = False) -> np.ndarray:
    """The full-resolution `box` of a decoded part (`frame` as decode_part's) resized to `out`
    (w, h): uint8 [out_h, out_w, 3].

    After the DCT reduction the crop is usually 1-2x the output size, so one bilinear sampling
    pass (cv2.warpAffine: sub-pixel box, flip folded into the matrix) finishes it; the DCT scaling
    itself is the low-pass filter. Where the crop is still 2x or more the output along one axis
    (aspect change, the 1/8 limit, or a part decoded finer for another view), a whole-factor box
    filter (box_reduce) comes first.
    """
    sx, sy, ox, oy = frame
    left, top, right, bottom = box
    x0, y0, x1, y1 = left * sx - ox, top * sy - oy, right * sx - ox, bottom * sy - oy
    ax, ay = (x1 - x0) / out[0], (y1 - y0) / out[1]  # source pixels per output pixel
    if ax >= 2 or ay >= 2:  # box-filter by whole factors first, so bilinear never skips pixels
        fx, fy = max(1, int(ax)), max(1, int(ay))
        ix0, iy0 = max(0, int(x0)), max(0, int(y0))
        ix1, iy1 = min(arr.shape[1], math.ceil(x1)), min(arr.shape[0], math.ceil(y1))
        arr = box_reduce(arr[iy0:iy1, ix0:ix1], fx, fy)
        x0, x1, y0, y1 = (x0 - ix0) / fx, (x1 - ix0) / fx, (y0 - iy0) / fy, (y1 - iy0) / fy
        ax, ay = ax / fx, ay / fy
    tx, ty = x0 + 0.5 * ax - 0.5, y0 + 0.5 * ay - 0.5  # output pixel centres -> source coordinates
    m = np.array([[-ax, 0, tx + ax * (out[0] - 1)] if flip else [ax, 0, tx], [0, ay, ty]], dtype=np.float64)
    return cv2.warpAffine(arr, m, out, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


def to_chw(hwc: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] -> planar, contiguous uint8 [3, H, W]: a batch is then stacked from whole
    planes (a strided HWC->CHW copy inside torch.stack took three times as long as this split)."""
    chw = np.empty((3, *hwc.shape[:2]), np.uint8)
    cv2.split(hwc, list(chw))
    return torch.from_numpy(chw)


def crop_resize(data: Source, box: Box, out: tuple[int, int], size: tuple[int, int] | None = None,
                flip: bool = False) -> torch.Tensor:
    """JPEG bytes -> uint8 [3, out_h, out_w]: the full-resolution `box` resized to `out` (w, h),
    decoded at the strongest DCT reduction that keeps the crop at least `out` (resample says how)."""
    w, h = size if size is not None else jpeg_size(data)
    k = reduction(box[2] - box[0], box[3] - box[1], out)
    arr, frame = decode_part(data, (w, h), k, box)
    return to_chw(resample(arr, frame, box, out, flip))


def crop_resize_views(data: Source, boxes: Sequence[Box], outs: Sequence[tuple[int, int]],
                      size: tuple[int, int] | None = None,
                      flips: Sequence[bool] | None = None) -> list[np.ndarray]:
    """Several crops of one JPEG from a single decode: uint8 [out_h, out_w, 3] per box.

    The part covering every box is decoded once, at the DCT scale the view that needs the most
    resolution asks for. Huffman decoding up to the lowest crop's bottom row is most of a
    cropped decode, and one union decode does it once where a decode per view does it per view
    (MoCo v2's two 224 px views of the benchmark's photos: 1.9 ms against 3.3). A view whose own
    reduction would be stronger is box-filtered from the finer pixels instead of being
    DCT-scaled (within a few levels of crop_resize's); the others get crop_resize's pixels exactly.
    """
    w, h = size if size is not None else jpeg_size(data)
    k = min(reduction(b[2] - b[0], b[3] - b[1], o) for b, o in zip(boxes, outs, strict=True))
    union = (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))
    arr, frame = decode_part(data, (w, h), k, union)
    flips = flips if flips is not None else [False] * len(boxes)
    return [resample(arr, frame, b, o, f) for b, o, f in zip(boxes, outs, flips, strict=True)]


def pil_to_chw(im: Image.Image) -> torch.Tensor:
    """PIL RGB -> uint8 [3, H, W] (a view of one writable copy of the pixels)."""
    return torch.from_numpy(np.array(im, dtype=np.uint8)).permute(2, 0, 1)


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    """(h, w) as torchvision reads `size`."""
    if isinstance(size, int):
        return size, size
    s = tuple(int(v) for v in size)
    return (s[0], s[0]) if len(s) == 1 else (s[0], s[1])


def rrc_box(width: int, height: int, scale: tuple[float, float], ratio: tuple[float, float],
            rng: random.Random | None = None) -> Box:
    """torchvision RandomResizedCrop.get_params, as (left, top, right, bottom): the same
    distribution (area fraction uniform in `scale`, log aspect ratio uniform in `ratio`, 10 tries,
    then a center crop clamped to `ratio`), drawn from Python's `random` (20x cheaper per call
    than torch's; the loader seeds both per batch)."""
    r: Any = rng if rng is not None else random  # the module has the same methods
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target_area = area * r.uniform(scale[0], scale[1])
        aspect = math.exp(r.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            i = r.randint(0, height - h)
            j = r.randint(0, width - w)
            return (j, i, j + w, i + h)
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    i, j = (height - h) // 2, (width - w) // 2
    return (j, i, j + w, i + h)


class JpegTransform:
    """Base of transforms that take the encoded JPEG bytes (the loader checks `wants_jpeg`).

    `then`: optional transform applied to the uint8 tensor afterwards (e.g. colour jitter).
    """

    wants_jpeg = True

    def __init__(self, then: Callable[[torch.Tensor], Any] | None = None):
        self.then = then

    def apply(self, data: Source) -> Any:
        raise NotImplementedError

    def __call__(self, data: Source) -> Any:
        """JPEG bytes (fast path), or a PIL image (same crop and resize, nothing to skip)."""
        out = self.apply(data)
        return self.then(out) if self.then is not None else out


class RandomResizedCrop(JpegTransform):
    """torchvision's RandomResizedCrop(size, scale, ratio) + RandomHorizontalFlip(flip_p) on JPEG
    bytes, decoding at reduced DCT scale; uint8 [3, H, W] out."""

    def __init__(self, size: int | Sequence[int], scale: tuple[float, float] = (0.08, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), flip_p: float = 0.5,
                 then: Callable[[torch.Tensor], Any] | None = None):
        super().__init__(then)
        self.size = _pair(size)
        self.scale, self.ratio, self.flip_p = tuple(scale), tuple(ratio), flip_p

    def apply(self, data: Source) -> torch.Tensor:
        w, h = jpeg_size(data)
        box = rrc_box(w, h, self.scale, self.ratio)  # type: ignore[arg-type]
        flip = self.flip_p > 0 and random.random() < self.flip_p
        return crop_resize(data, box, (self.size[1], self.size[0]), (w, h), flip)

    def __repr__(self) -> str:
        return f"RandomResizedCrop(size={self.size}, scale={self.scale}, ratio={self.ratio}, flip_p={self.flip_p})"


class ResizeCenterCrop(JpegTransform):
    """Shorter side resized to `resize` (default `size`), center crop to `size`: torchvision's
    Resize + CenterCrop, on JPEG bytes at reduced DCT scale; uint8 [3, size, size] out."""

    def __init__(self, size: int | Sequence[int], resize: int | None = None,
                 then: Callable[[torch.Tensor], Any] | None = None):
        super().__init__(then)
        self.size = _pair(size)
        self.resize = resize if resize is not None else max(self.size)

    def apply(self, data: Source) -> torch.Tensor:
        w, h = jpeg_size(data)
        s = self.resize / min(w, h)  # full-res -> resized scale
        oh, ow = self.size
        cw, ch = min(ow / s, w), min(oh / s, h)  # center crop, in full-resolution pixels
        left, top = (w - cw) / 2, (h - ch) / 2
        return crop_resize(data, (left, top, left + cw, top + ch), (ow, oh), (w, h))

    def __repr__(self) -> str:
        return f"ResizeCenterCrop(size={self.size}, resize={self.resize})"


class ToTensor(JpegTransform):
    """Full-size decode to uint8 [3, H, W] (native size; the fast decoder, no scaling)."""

    def apply(self, data: Source) -> torch.Tensor:
        if isinstance(data, Image.Image):
            return pil_to_chw(data.convert("RGB"))
        if simplejpeg is not None:
            try:
                return torch.from_numpy(simplejpeg.decode_jpeg(data, colorspace="RGB")).permute(2, 0, 1)
            except ValueError:
                pass
        return pil_to_chw(decode_pil(data))


class Views(JpegTransform):
    """Several JPEG transforms on the same bytes, one output per view (multi-crop recipes).
    Each view decodes at the scale its own crop needs."""

    def __init__(self, transforms: Sequence[JpegTransform]):
        super().__init__(None)
        self.transforms = list(transforms)

    def apply(self, data: Source) -> Any:
        return tuple(t(data) for t in self.transforms)

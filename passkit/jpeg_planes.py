"""JPEG -> Y, Cb, Cr planes with libturbojpeg, for the image check's planar path.

A JPEG stores Y, Cb, Cr planes, chroma usually at half resolution. Decoding to RGB upsamples the
chroma and converts every pixel; the check then resizes three full-resolution channels and the
encoder converts back and downsamples again. Taking the planes as stored skips all of that. On
the ingest benchmark's photos, one thread (benchmarks/image_check_paths.py): a full-size decode
2.8 ms instead of 3.1, the image check with the shorter side to 512 5.0-5.2 ms instead of
5.6-6.0. In a crawl, where 16 threads a worker share the caches and the smaller working set
counts for more, a whole build took 6-13 % less wall time (A/B runs of the ingest benchmark's
spec; its --no-planar flag).

Neither simplejpeg nor Pillow hands out planes, so this binds the TurboJPEG C API with ctypes
(its 2.x functions, which libjpeg-turbo 2.0 to 3.x export; ctypes releases the GIL during
each call). The library is looked up in this order:
1. `PASSKIT_TURBOJPEG`: a path to libturbojpeg, or `off` to disable the planar path;
2. the system's libturbojpeg (`apt-get install libturbojpeg0`, `dnf install turbojpeg`);
3. the copy bundled in the `turbojpeg` wheel (`pip install turbojpeg`; the dev extra has it).
Without any, `available()` is False and the image check decodes to RGB, as it always could.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import importlib.util
import os
import threading
from collections.abc import Iterator
from ctypes import POINTER, byref, c_char_p, c_int, c_ubyte, c_ulong, c_void_p
from pathlib import Path

import numpy as np

TJCS_YCbCr = 1
TJSAMP_420 = 2
# TJSAMP_* -> (horizontal, vertical) chroma subsampling factors; GRAY (3) has no chroma planes.
_SUBSAMPLING = {0: (1, 1), 1: (2, 1), 2: (2, 2), 4: (1, 2), 5: (4, 1)}
TJFLAG_ACCURATEDCT = 4096  # as on the RGB path (simplejpeg's default): the accurate (I)DCT
TJFLAG_STOPONWARNING = 8192  # a truncated or corrupt stream fails instead of coming back grey-filled

_lock = threading.Lock()
_loaded = False
_lib: ctypes.CDLL | None = None
_where: str | None = None


def _candidates() -> Iterator[str]:
    env = os.environ.get("PASSKIT_TURBOJPEG", "").strip()
    if env:
        if env.lower() not in ("0", "off", "no", "false"):
            yield env
        return
    # The sonames first: dlopen finds them without find_library's `ldconfig -p` subprocess,
    # which each worker process would otherwise pay for.
    yield from ("libturbojpeg.so.0", "libturbojpeg.0.dylib")
    system = ctypes.util.find_library("turbojpeg")
    if system:
        yield system
    spec = importlib.util.find_spec("turbojpeg")
    if spec is not None and spec.origin:
        yield from sorted(glob.glob(str(Path(spec.origin).parent / "turbojpeg.libs" / "libturbojpeg*.so*")))


def _bind(lib: ctypes.CDLL) -> None:
    lib.tjInitDecompress.restype = c_void_p
    lib.tjInitDecompress.argtypes = []
    lib.tjDestroy.argtypes = [c_void_p]
    lib.tjDecompressHeader3.argtypes = [c_void_p, c_char_p, c_ulong] + [POINTER(c_int)] * 4
    lib.tjDecompressToYUVPlanes.argtypes = [c_void_p, c_char_p, c_ulong, POINTER(POINTER(c_ubyte)), c_int,
                                            POINTER(c_int), c_int, c_int]
    lib.tjPlaneWidth.argtypes = [c_int, c_int, c_int]
    lib.tjPlaneHeight.argtypes = [c_int, c_int, c_int]
    lib.tjInitCompress.restype = c_void_p
    lib.tjInitCompress.argtypes = []
    lib.tjCompressFromYUVPlanes.argtypes = [c_void_p, POINTER(POINTER(c_ubyte)), c_int, POINTER(c_int), c_int, c_int,
                                            POINTER(POINTER(c_ubyte)), POINTER(c_ulong), c_int, c_int]
    lib.tjFree.argtypes = [c_void_p]
    lib.tjGetErrorStr2.restype = c_char_p
    lib.tjGetErrorStr2.argtypes = [c_void_p]


def _load() -> ctypes.CDLL | None:
    global _loaded, _lib, _where
    if _loaded:
        return _lib
    with _lock:
        if not _loaded:
            for path in _candidates():
                try:
                    lib = ctypes.CDLL(path)
                    _bind(lib)  # AttributeError: too old (no YUV planes API)
                except (OSError, AttributeError):
                    continue
                _lib, _where = lib, path
                break
            _loaded = True
    return _lib


def available() -> bool:
    """Whether the planar path can run here."""
    return _load() is not None


def library() -> str | None:
    """The libturbojpeg in use (a path or a soname), or None."""
    _load()
    return _where


def decode_planes(data: bytes, scale: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(Y, Cb, Cr) of a YCbCr JPEG decoded at 1/`scale` (1, 2, 4 or 8), each plane its own size.

    None whenever the planar path does not apply or fails: no library, not a JPEG, greyscale,
    CMYK or RGB-coded JPEGs, a stream libjpeg warns about. The caller then decodes to RGB, which
    decides (and names) what is wrong. The caller also bounds the pixel count first, as
    images.check does from the header: the planes are allocated at the size the header states.
    """
    lib = _load()
    if lib is None:
        return None
    handle = lib.tjInitDecompress()
    if not handle:
        return None
    try:
        w, h, sub, cs = c_int(), c_int(), c_int(), c_int()
        if lib.tjDecompressHeader3(handle, data, len(data), byref(w), byref(h), byref(sub), byref(cs)) != 0:
            return None
        if cs.value != TJCS_YCbCr or sub.value not in _SUBSAMPLING:
            return None
        sw, sh = -(-w.value // scale), -(-h.value // scale)  # TurboJPEG's TJSCALED at 1/scale
        # Planes are padded to whole MCUs: allocate the padded size, hand back the image's part.
        planes = [np.empty((lib.tjPlaneHeight(i, sh, sub.value), lib.tjPlaneWidth(i, sw, sub.value)), np.uint8)
                  for i in range(3)]
        dst = (POINTER(c_ubyte) * 3)(*(p.ctypes.data_as(POINTER(c_ubyte)) for p in planes))
        strides = (c_int * 3)(*(p.shape[1] for p in planes))
        flags = TJFLAG_ACCURATEDCT | TJFLAG_STOPONWARNING
        if lib.tjDecompressToYUVPlanes(handle, data, len(data), dst, sw, strides, sh, flags) != 0:
            return None
    finally:
        lib.tjDestroy(handle)
    fx, fy = _SUBSAMPLING[sub.value]
    cw, ch = -(-sw // fx), -(-sh // fy)
    return planes[0][:sh, :sw], planes[1][:ch, :cw], planes[2][:ch, :cw]


def encode_planes(y: np.ndarray, cb: np.ndarray, cr: np.ndarray, quality: int) -> bytes:
    """A baseline 4:2:0 JPEG from Y (H, W) and Cb, Cr (ceil(H/2), ceil(W/2)) planes.

    TurboJPEG reads whole MCUs: a Y plane of odd width or height is read one column or row past
    its end (simplejpeg's encode_jpeg_yuv_planes does exactly that and crashed a threaded crawl),
    so odd planes are padded here by repeating the edge, as libjpeg pads RGB input itself.
    """
    lib = _load()
    if lib is None:
        raise RuntimeError("no libturbojpeg: check available() before encode_planes")
    h, w = y.shape
    chroma = ((h + 1) // 2, (w + 1) // 2)
    if cb.shape != chroma or cr.shape != chroma:
        raise ValueError(f"chroma planes {cb.shape}, {cr.shape} do not fit a {w}x{h} 4:2:0 image")
    y = np.pad(y, ((0, h % 2), (0, w % 2)), mode="edge") if h % 2 or w % 2 else np.ascontiguousarray(y)
    planes = [y, np.ascontiguousarray(cb), np.ascontiguousarray(cr)]
    src = (POINTER(c_ubyte) * 3)(*(p.ctypes.data_as(POINTER(c_ubyte)) for p in planes))
    strides = (c_int * 3)(*(p.strides[0] for p in planes))
    handle = lib.tjInitCompress()
    if not handle:
        raise MemoryError("tjInitCompress failed")
    buf, size = POINTER(c_ubyte)(), c_ulong(0)
    try:
        if lib.tjCompressFromYUVPlanes(handle, src, w, strides, h, TJSAMP_420, byref(buf), byref(size),
                                       quality, TJFLAG_ACCURATEDCT) != 0:
            raise RuntimeError(f"libturbojpeg could not encode a {w}x{h} image: "
                               f"{(lib.tjGetErrorStr2(handle) or b'').decode(errors='replace')}")
        return ctypes.string_at(buf, size.value)
    finally:
        if buf:
            lib.tjFree(buf)
        lib.tjDestroy(handle)

"""The bytes the demo catalog serves: files read from installed packages, PNG-encoded arrays,
images the demo draws itself (deterministic), and the deliberately broken ones.
"""

from __future__ import annotations

import importlib.util
import io
from functools import cache
from pathlib import Path

import numpy as np

from passkit.demo.catalog import CATALOG


def _package_file(package: str, rel: str) -> Path:
    """A data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the demo catalog needs the {package!r} package (pip install passkit installs it)")
    for root in spec.submodule_search_locations:
        p = Path(root) / rel
        if p.is_file():
            return p
    raise RuntimeError(f"the demo catalog needs {package}/{rel}, which this installation does not ship")


def _jpeg(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _gen_gradient() -> bytes:
    from PIL import Image, ImageDraw

    h, w = 320, 480
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    arr = np.stack([x / w * 255, y / h * 255, (np.sin(x / 37.0) * 0.5 + 0.5) * 255], axis=-1).astype(np.uint8)
    im = Image.fromarray(arr)
    d = ImageDraw.Draw(im)
    d.ellipse((40, 40, 180, 180), fill=(250, 210, 40))
    d.rectangle((260, 120, 430, 280), fill=(30, 60, 160))
    d.polygon([(200, 300), (300, 200), (360, 300)], fill=(200, 40, 60))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _gen_rings() -> bytes:
    n = 400
    y, x = np.mgrid[0:n, 0:n].astype(np.float32)
    r = np.hypot(x - n / 2, y - n / 2)
    wave = np.sin(r / 6.0) * 0.5 + 0.5
    arr = np.stack([wave * 255, (1 - wave) * 180 + 40, np.full_like(wave, 120)], axis=-1).astype(np.uint8)
    return _jpeg(arr)


def _ascent_png() -> bytes:
    import pywt.data
    from PIL import Image

    arr = np.clip(np.asarray(pywt.data.ascent()), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _truncate(data: bytes) -> bytes:
    # No 0xFF in the garbage: a stray EOI marker would let a lenient decoder "finish" the image.
    garbage = np.random.default_rng(20240101).integers(0, 255, 2048, dtype=np.uint8).tobytes()
    return data[: int(len(data) * 0.4)] + garbage


_HTML_AS_JPEG = (
    b"<!DOCTYPE html>\n<html><head><title>Harbour at dusk</title></head>\n"
    b"<body><h1>Harbour at dusk</h1><p>This is a web page, not an image. "
    b"(passkit demo: served with Content-Type image/jpeg on purpose.)</p></body></html>\n"
)


def _load(origin: str) -> bytes | None:
    if origin == "missing":
        return None
    if origin == "html":
        return _HTML_AS_JPEG
    if origin == "pywt:ascent":
        return _ascent_png()
    if origin == "gen:gradient":
        return _gen_gradient()
    if origin == "gen:rings":
        return _gen_rings()
    if origin.startswith("truncate:"):
        data = _load(origin.removeprefix("truncate:"))
        assert data is not None
        return _truncate(data)
    package, _, rel = origin.partition(":")
    return _package_file(package, rel).read_bytes()


@cache
def catalog_bytes() -> dict[str, bytes]:
    """file name -> served bytes, for every entry that serves something (computed once)."""
    out: dict[str, bytes] = {}
    for e in CATALOG:
        data = _load(e.origin)
        if data is not None:
            out[e.file] = data
    return out

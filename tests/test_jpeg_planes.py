"""The planar JPEG path: libturbojpeg's Y, Cb, Cr planes from decode to encode (people filter off)."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
import simplejpeg
from PIL import Image

from passkit import images, jpeg_planes
from passkit.config import ImageSpec
from passkit.images import ImageReject, check


def _photo(w: int, h: int, seed: int = 0) -> np.ndarray:
    """A photo-like RGB array: a real photo (skimage's coffee) cropped, resized and shifted."""
    from skimage import data as skd

    rng = np.random.default_rng(seed)
    src = skd.coffee()
    y, x = int(rng.integers(0, 100)), int(rng.integers(0, 150))
    px = cv2.resize(src[y : y + 300, x : x + 400], (w, h), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    return (px + rng.integers(-15, 16, size=3)).clip(0, 255).astype(np.uint8)


def _jpeg(px: np.ndarray, subsampling: int = 2, quality: int = 90, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(px).save(buf, "JPEG", quality=quality, subsampling=subsampling, **kw)
    return buf.getvalue()


def _variant(kind: str, px: np.ndarray) -> bytes:
    """The photo as a greyscale JPEG, a CMYK JPEG or a PNG."""
    buf = io.BytesIO()
    mode, fmt = {"grey": ("L", "JPEG"), "cmyk": ("CMYK", "JPEG"), "png": ("RGB", "PNG")}[kind]
    Image.fromarray(px).convert(mode).save(buf, fmt)
    return buf.getvalue()


def _planes_to_rgb(y: np.ndarray, cb: np.ndarray, cr: np.ndarray) -> np.ndarray:
    size = (y.shape[1], y.shape[0])
    up = [cv2.resize(c, size, interpolation=cv2.INTER_LINEAR) for c in (cr, cb)]
    return cv2.cvtColor(cv2.merge([y, *up]), cv2.COLOR_YCrCb2RGB)


def test_the_dev_setup_finds_libturbojpeg():
    """`make setup` installs the turbojpeg wheel (dev extra), so every test here runs the planar
    path instead of skipping it; elsewhere: apt-get install libturbojpeg0."""
    assert jpeg_planes.available(), "no libturbojpeg: pip install turbojpeg, or apt-get install libturbojpeg0"
    assert jpeg_planes.library()


@pytest.mark.parametrize("subsampling", ["444", "422", "420", "440", "411"])
@pytest.mark.parametrize("scale", [1, 2, 4, 8])
def test_planes_are_the_rgb_decode_before_colour_conversion(subsampling, scale):
    """Odd sizes, every DCT scale, every subsampling: the planes are what libjpeg-turbo decodes."""
    w, h = 803, 611
    data = simplejpeg.encode_jpeg(_photo(w, h), quality=90, colorsubsampling=subsampling)
    y, cb, cr = jpeg_planes.decode_planes(data, scale)
    sw, sh = -(-w // scale), -(-h // scale)
    fx, fy = {"444": (1, 1), "422": (2, 1), "420": (2, 2), "440": (1, 2), "411": (4, 1)}[subsampling]
    assert y.shape == (sh, sw) and cb.shape == cr.shape == (-(-sh // fy), -(-sw // fx))
    grey = simplejpeg.decode_jpeg(data, colorspace="GRAY", min_width=sw, min_height=sh)[..., 0]
    assert np.array_equal(y, grey)  # luma: the very samples libjpeg decodes
    # Chroma: close to the full-size decode's Cb, Cr averaged down to the planes' size, and far
    # closer than the same planes one row or column off (a cut or shifted plane fails here). At
    # coarse scales libjpeg's scaled IDCT and area averaging part ways, hence the relative test.
    full = cv2.cvtColor(simplejpeg.decode_jpeg(data, colorspace="RGB"), cv2.COLOR_RGB2YCrCb)
    size = (cb.shape[1], cb.shape[0])
    for plane, channel in ((cr, 1), (cb, 2)):
        want = cv2.resize(full[..., channel], size, interpolation=cv2.INTER_AREA).astype(float)
        err = np.abs(plane - want).mean()
        rows, cols = np.abs(plane[1:] - want[:-1]).mean(), np.abs(plane[:, 1:] - want[:, :-1]).mean()
        # a shift shows least along the coarser-sampled axis (4:1:1 chroma is 4 columns wide)
        off = rows if fx > fy else cols if fy > fx else min(rows, cols)
        if scale * max(fx, fy) <= 16:  # coarser chroma (4:1:1 at 1/8) has too few samples to tell
            assert err < 0.8 * off
        if scale <= 2:
            assert err < (1.0 if max(fx, fy) <= 2 else 2.0)


@pytest.mark.parametrize("kind", ["grey", "cmyk", "truncated", "png", "junk"])
def test_decode_planes_declines_what_it_cannot_take(kind):
    px = _photo(300, 200)
    data = {"truncated": _jpeg(px)[:3000], "junk": b"\xff\xd8\xff" + b"\x00" * 500}.get(kind)
    assert jpeg_planes.decode_planes(data or _variant(kind, px)) is None


@pytest.mark.parametrize(("w", "h"), [(640, 480), (641, 480), (640, 481), (333, 251), (17, 9)])
def test_encode_planes_keeps_size_and_content(w, h):
    """Odd widths and heights included: TurboJPEG reads whole MCUs, so odd planes are padded."""
    data = _jpeg(_photo(w, h), subsampling=2, quality=95)
    y, cb, cr = jpeg_planes.decode_planes(data)
    out = jpeg_planes.encode_planes(y, cb, cr, 95)
    hh, ww, _, sub = simplejpeg.decode_jpeg_header(out)
    assert (ww, hh, sub) == (w, h, "420")
    again = simplejpeg.decode_jpeg(out).astype(float)
    first = simplejpeg.decode_jpeg(data).astype(float)
    assert np.abs(again - first).mean() < 2.0
    with pytest.raises(ValueError, match="do not fit"):
        jpeg_planes.encode_planes(y, cb[:-1], cr, 95)


def test_encode_planes_is_safe_across_threads():
    """The crawler encodes from many threads at once; simplejpeg's planar encoder read past odd
    planes and crashed such a crawl."""
    sizes = [(331 + i, 251 + 2 * i) for i in range(16)]
    inputs = [jpeg_planes.decode_planes(_jpeg(_photo(w, h, seed=i))) for i, (w, h) in enumerate(sizes)]

    def one(i: int) -> tuple[int, int]:
        y, cb, cr = inputs[i % len(inputs)]
        h, w = simplejpeg.decode_jpeg_header(jpeg_planes.encode_planes(y, cb, cr, 90))[:2]
        return w, h

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(one, range(320)))
    assert got == [sizes[i % len(sizes)] for i in range(320)]


@pytest.mark.parametrize("fit", ["longer", "shorter"])
@pytest.mark.parametrize(("w", "h"), [(1600, 1067), (1067, 1600), (1001, 777), (700, 650), (300, 200)])
def test_planar_check_matches_the_rgb_check(fit, w, h):
    """Same output size, nearly the same pixels, pHash and blank check; no RGB pixels kept."""
    data = _jpeg(_photo(w, h), subsampling=2, quality=92)
    spec = ImageSpec(max_side=512, fit=fit)
    rgb = check(data, spec)
    planar = check(data, spec, pixels=False)
    assert planar.pixels is None and rgb.pixels is not None
    with pytest.raises(ValueError, match="pixels=True"):
        planar.image  # noqa: B018
    a, b = rgb.info, planar.info
    assert (a.width, a.height) == (b.width, b.height)
    assert (b.orig_width, b.orig_height, b.source_sha256) == (a.orig_width, a.orig_height, a.source_sha256)
    pa_ = simplejpeg.decode_jpeg(a.jpeg).astype(float)
    pb = simplejpeg.decode_jpeg(b.jpeg).astype(float)
    assert pa_.shape == pb.shape and np.abs(pa_ - pb).mean() < 2.5
    assert bin(int(a.phash, 16) ^ int(b.phash, 16)).count("1") <= 4
    assert abs(a.flat_fraction - b.flat_fraction) < 0.03
    assert Image.open(io.BytesIO(b.jpeg)).info.get("exif") is None
    assert check(data, spec, pixels=False).info.jpeg == b.jpeg  # deterministic


@pytest.mark.parametrize("subsampling", ["444", "422", "420", "440", "411"])
def test_planar_check_takes_every_subsampling(subsampling):
    data = simplejpeg.encode_jpeg(_photo(1001, 777), quality=92, colorsubsampling=subsampling)
    rgb, planar = check(data, ImageSpec(max_side=512)), check(data, ImageSpec(max_side=512), pixels=False)
    assert planar.pixels is None
    assert simplejpeg.decode_jpeg_header(planar.info.jpeg)[3] == "420"
    a = simplejpeg.decode_jpeg(rgb.info.jpeg).astype(float)
    b = simplejpeg.decode_jpeg(planar.info.jpeg).astype(float)
    assert a.shape == b.shape and np.abs(a - b).mean() < 2.5


@pytest.mark.parametrize("kind", ["grey", "cmyk", "png", "truncated"])
def test_planar_check_falls_back_to_the_rgb_path(kind):
    px = _photo(400, 300)
    if kind == "truncated":
        with pytest.raises(ImageReject) as e:
            check(_jpeg(px)[:4000], ImageSpec(max_side=200), pixels=False)
        assert e.value.reason == "decode_error"
        return
    out = check(_variant(kind, px), ImageSpec(max_side=200), pixels=False)
    assert out.pixels is not None and (out.info.width, out.info.height) == (200, 150)


def test_without_libturbojpeg_the_rgb_path_does_everything(monkeypatch):
    data = _jpeg(_photo(900, 600))
    monkeypatch.setattr(jpeg_planes, "_loaded", True)
    monkeypatch.setattr(jpeg_planes, "_lib", None)
    assert not jpeg_planes.available() and jpeg_planes.decode_planes(data) is None
    out = images.check(data, ImageSpec(max_side=300), pixels=False)
    assert out.pixels is not None and out.pixels.shape == (200, 300, 3)


def test_passkit_turbojpeg_off_disables_the_planar_path(monkeypatch):
    monkeypatch.setenv("PASSKIT_TURBOJPEG", "off")
    assert list(jpeg_planes._candidates()) == []
    monkeypatch.setenv("PASSKIT_TURBOJPEG", "/nowhere/libturbojpeg.so")
    assert list(jpeg_planes._candidates()) == ["/nowhere/libturbojpeg.so"]


def test_the_crawler_takes_the_planar_path_only_without_the_people_filter(monkeypatch, http_server, tmp_path):
    """People filter off: no RGB pixels are asked for; the detectors always get RGB (their recall
    and false rejections were measured on it)."""
    from passkit import pipeline, sources
    from passkit.build import build
    from tests.helpers.crawl import candidate, jpeg, list_opener, spec

    cands = [candidate(f"p{i}", http_server.serve_bytes(f"/p/{i}.jpg", jpeg(500 + i, (200, 150)))) for i in range(3)]
    monkeypatch.setitem(sources._OPENERS, "demo", list_opener(cands))
    asked: list[bool] = []
    real = pipeline.images.check

    def spy(data: bytes, image_spec: ImageSpec, pixels: bool = True) -> images.CheckedImage:
        asked.append(pixels)
        return real(data, image_spec, pixels=pixels)

    monkeypatch.setattr(pipeline.images, "check", spy)
    result = build(spec(), base=tmp_path, workers=1)
    assert asked == [False, False, False] and result.release.kept == 3

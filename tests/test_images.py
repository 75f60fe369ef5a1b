import io

import numpy as np
import pytest
from PIL import Image

from passkit.config import ImageSpec
from passkit.images import ImageReject, check, phash


def _jpeg(w=800, h=600, exif=True, seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    arr = (rng.random((h, w, 3)) * 255).astype("uint8")
    im = Image.fromarray(arr)
    buf = io.BytesIO()
    if exif:
        ex = Image.Exif()
        ex[0x010F] = "CameraMaker"  # Make
        ex[0x8825] = {1: "N", 2: (51.0, 30.0, 0.0)}  # GPS IFD
        im.save(buf, "JPEG", exif=ex, quality=80)
    else:
        im.save(buf, "JPEG", quality=80)
    return buf.getvalue()


def test_resizes_strips_metadata_and_hashes():
    data = _jpeg()
    assert Image.open(io.BytesIO(data)).getexif()
    out = check(data, ImageSpec(max_side=256))
    im = Image.open(io.BytesIO(out.info.jpeg))
    assert max(im.size) == 256 and im.size == (256, 192)
    assert not im.getexif() and "icc_profile" not in im.info and "xmp" not in im.info
    assert (out.info.orig_width, out.info.orig_height) == (800, 600)
    assert len(out.info.sha256) == 64 and len(out.info.phash) == 16
    assert check(data, ImageSpec(max_side=256)).info.jpeg == out.info.jpeg  # deterministic


def test_png_with_alpha_becomes_rgb():
    im = Image.new("RGBA", (300, 200), (10, 20, 30, 0))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    out = check(buf.getvalue(), ImageSpec())
    assert Image.open(io.BytesIO(out.info.jpeg)).mode == "RGB"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"<html><body>not an image</body></html>", "decode_error"),
        (_jpeg()[:2000], "decode_error"),
    ],
)
def test_bad_bytes_are_rejected_with_reason(data, reason):
    with pytest.raises(ImageReject) as e:
        check(data, ImageSpec())
    assert e.value.reason == reason


def test_too_small_and_pixel_bomb():
    small = io.BytesIO()
    Image.new("RGB", (40, 40)).save(small, "PNG")
    with pytest.raises(ImageReject, match="too_small"):
        check(small.getvalue(), ImageSpec(min_side=64))
    big = io.BytesIO()
    Image.new("1", (12000, 12000)).save(big, "PNG")  # tiny file, 144 MP
    with pytest.raises(ImageReject) as e:
        check(big.getvalue(), ImageSpec(max_pixels=50_000_000))
    assert e.value.reason == "too_many_pixels"


def test_phash_is_robust_to_resize_and_differs_across_images():
    a = Image.open(io.BytesIO(_jpeg(exif=False, seed=1)))
    b = a.resize((400, 300))
    c = Image.open(io.BytesIO(_jpeg(exif=False, seed=2)))
    ham = lambda x, y: bin(int(phash(x), 16) ^ int(phash(y), 16)).count("1")  # noqa: E731
    assert ham(a, b) <= 6
    assert ham(a, c) > 12


def test_wide_jpeg_decodes_at_reduced_scale_with_exact_output_size(monkeypatch):
    """A 2000x1000 photo for max_side 500 decodes at 1/4 (500x250): the scale is chosen from the
    photo's own aspect (a square 500x500 box would stop at 1/2, four times the pixels)."""
    import simplejpeg

    seen = []
    real = simplejpeg.decode_jpeg

    def spy(*a, **k):
        out = real(*a, **k)
        seen.append(out.shape[:2])
        return out

    monkeypatch.setattr(simplejpeg, "decode_jpeg", spy)
    out = check(_jpeg(2000, 1000, exif=False), ImageSpec(max_side=500))
    assert seen == [(250, 500)]
    assert (out.info.width, out.info.height) == (500, 250)
    out = check(_jpeg(1999, 1001, exif=False), ImageSpec(max_side=500))
    assert (out.info.width, out.info.height) == (500, 250)  # from the original size, not the decoded one


def test_exif_orientation_is_applied_then_dropped():
    arr = np.zeros((100, 300, 3), "uint8")
    arr[:, :150] = 255  # left half white
    buf = io.BytesIO()
    ex = Image.Exif()
    ex[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(arr).save(buf, "JPEG", exif=ex, quality=95)
    out = check(buf.getvalue(), ImageSpec(max_side=150))
    im = Image.open(io.BytesIO(out.info.jpeg))
    assert im.size == (50, 150) and not im.getexif()
    px = np.asarray(im.convert("L"), dtype=float)
    assert px[:60].mean() > 200 and px[-60:].mean() < 50  # the white half is now on top


@pytest.mark.parametrize("pixels", [True, False], ids=["rgb", "planar"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_pillow(orientation, pixels):
    """The fast paths (libjpeg-turbo into numpy, orientation applied in numpy, to RGB or to the
    Y, Cb, Cr planes) give the photo Pillow's exif_transpose gives."""
    from PIL import ImageOps

    arr = np.zeros((120, 200, 3), "uint8")
    arr[:60, :100] = (250, 20, 20)
    arr[60:, 100:] = (20, 20, 250)
    arr[:60, 100:] = (20, 250, 20)
    buf = io.BytesIO()
    ex = Image.Exif()
    ex[0x0112] = orientation
    Image.fromarray(arr).save(buf, "JPEG", exif=ex, quality=95)
    out = check(buf.getvalue(), ImageSpec(max_side=100), pixels=pixels)
    assert (out.pixels is None) == (not pixels)  # the planar path ran when asked
    want = ImageOps.exif_transpose(Image.open(io.BytesIO(buf.getvalue()))).convert("RGB")
    want = np.asarray(want.resize((out.info.width, out.info.height)), dtype=float)
    got = np.asarray(Image.open(io.BytesIO(out.info.jpeg)).convert("RGB"), dtype=float)
    assert got.shape == want.shape
    assert np.abs(got - want).mean() < 12


@pytest.mark.parametrize("kind", ["grey", "cmyk", "progressive", "truncated"])
def test_jpeg_variants_take_a_path_that_works(kind):
    rng = np.random.default_rng(1)
    arr = (rng.random((300, 400, 3)) * 255).astype("uint8")
    buf = io.BytesIO()
    if kind == "grey":
        Image.fromarray(arr).convert("L").save(buf, "JPEG")
    elif kind == "cmyk":
        Image.fromarray(arr).convert("CMYK").save(buf, "JPEG")
    else:
        Image.fromarray(arr).save(buf, "JPEG", progressive=kind == "progressive")
    data = buf.getvalue()
    if kind == "truncated":
        with pytest.raises(ImageReject) as e:
            check(data[: len(data) // 2], ImageSpec(max_side=200))
        assert e.value.reason == "decode_error"
        return
    out = check(data, ImageSpec(max_side=200))
    im = Image.open(io.BytesIO(out.info.jpeg))
    assert im.size == (200, 150) and im.mode == "RGB"
    assert out.pixels.shape == (150, 200, 3) and out.image.size == (200, 150)


@pytest.mark.parametrize("pixels", [True, False])
def test_passkit_writes_baseline_jpegs_even_from_progressive_input(pixels):
    """GPU decoders take baseline JPEGs (nvJPEG's hardware path); both encoders must write them."""
    rng = np.random.default_rng(2)
    buf = io.BytesIO()
    Image.fromarray((rng.random((300, 400, 3)) * 255).astype("uint8")).save(buf, "JPEG", progressive=True)
    assert Image.open(io.BytesIO(buf.getvalue())).info.get("progressive")  # the input is progressive
    out = check(buf.getvalue(), ImageSpec(max_side=200), pixels=pixels).info.jpeg
    im = Image.open(io.BytesIO(out))
    assert not im.info.get("progressive") and not im.info.get("progression")
    assert b"\xff\xc0" in out[: out.index(b"\xff\xda")]  # SOF0 (baseline) before the first scan


def _flat_fraction_numpy(a: np.ndarray, tolerance: int = 12) -> tuple[float, tuple[int, int, int]]:
    """The definition, in plain numpy: share within tolerance of the per-channel median."""
    px = a.reshape(-1, 3).astype(np.int16)
    colour = np.median(px, axis=0).round().astype(np.int16)
    near = (np.abs(px - colour).max(axis=1) <= tolerance).mean()
    return round(float(near), 4), (int(colour[0]), int(colour[1]), int(colour[2]))


def test_flat_fraction_matches_its_numpy_definition() -> None:
    from passkit.filters.quality import flat_fraction

    rng = np.random.default_rng(1)
    for _ in range(300):
        base = rng.integers(0, 256, 3)
        spread = int(rng.choice([0, 3, 10, 40, 128]))
        a = np.clip(base + rng.integers(-spread, spread + 1, (64, 64, 3)), 0, 255).astype(np.uint8)
        assert flat_fraction(a) == _flat_fraction_numpy(a)


def test_thumbnail_is_close_to_one_area_resize() -> None:
    import cv2

    from passkit.images import thumbnail

    rng = np.random.default_rng(2)
    for h, w in [(341, 512), (512, 288), (64, 64), (100, 70), (600, 601)]:
        smooth = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (0, 0), 3)
        want = cv2.resize(smooth, (64, 64), interpolation=cv2.INTER_AREA).astype(int)
        got = thumbnail(smooth, 64)
        assert got.shape == (64, 64, 3)
        assert np.abs(got - want).mean() < 1.0 and np.abs(got - want).max() <= 8


@pytest.mark.parametrize(("w", "h", "want"), [
    (1600, 900, (910, 512)),  # shorter side to 512
    (900, 1600, (512, 910)),
    (1200, 400, (1200, 400)),  # shorter side already under 512: kept, never enlarged
])
def test_fit_shorter_side(w: int, h: int, want: tuple[int, int]) -> None:
    out = check(_jpeg(w, h, exif=False), ImageSpec(max_side=512, fit="shorter"))
    assert (out.info.width, out.info.height) == want
    assert out.pixels.shape[:2] == (want[1], want[0])
    assert Image.open(io.BytesIO(out.info.jpeg)).size == want


def test_fit_default_keeps_the_canonical_spec() -> None:
    """Specs that leave `fit` alone hash as before it existed (work folders resume); "shorter" shows."""
    assert "fit" not in ImageSpec().model_dump(mode="json")
    assert ImageSpec(fit="shorter").model_dump(mode="json")["fit"] == "shorter"
    assert ImageSpec.model_validate(ImageSpec(fit="shorter").model_dump(mode="json")).fit == "shorter"


# ------------------------------------------------------------------ decode memory and hostile formats


def _png(mode: str, size: tuple[int, int], colour=None) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, colour).save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def _png16_rgba(w: int, h: int) -> bytes:
    """A 16-bit RGBA PNG (Pillow writes none): 8 bytes a pixel in the file's rows."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    z = zlib.compressobj(1)
    row = b"\x00" + b"\x40\x00" * (4 * w)
    idat = b"".join(z.compress(row) for _ in range(h)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_decode_budget_is_not_in_the_canonical_spec_by_default() -> None:
    """Specs that leave it alone hash as before it existed (work folders resume)."""
    assert "decode_budget_mb" not in ImageSpec().model_dump(mode="json")
    assert ImageSpec(decode_budget_mb=64).model_dump(mode="json")["decode_budget_mb"] == 64


def test_an_image_over_the_whole_decode_budget_is_rejected() -> None:
    # 3000 x 3000 RGBA: 36 MB stored, about 72 MB at the least (premultiplied copy) > 16 MB
    with pytest.raises(ImageReject) as e:
        check(_png("RGBA", (3000, 3000)), ImageSpec(decode_budget_mb=16))
    assert e.value.reason == "decode_budget"


def test_a_png_too_big_to_convert_is_reduced_right_after_decoding() -> None:
    """Over the budget at full size, within it reduced: the output is the usual one, near enough,
    and transparent pixels still land on white."""
    rng = np.random.default_rng(3)
    arr = np.repeat(np.repeat(rng.integers(0, 256, (40, 40, 4), dtype=np.uint8), 50, 0), 50, 1)  # 2000x2000
    arr[:1000, :1000, 3] = 0  # a transparent quarter
    buf = io.BytesIO()
    Image.fromarray(arr, "RGBA").save(buf, "PNG", compress_level=1)
    usual = check(buf.getvalue(), ImageSpec())
    lean = check(buf.getvalue(), ImageSpec(decode_budget_mb=48))  # 2000^2 * 19 B = 76 MB at full size
    assert (lean.info.width, lean.info.height) == (usual.info.width, usual.info.height) == (512, 512)
    assert np.abs(lean.pixels.astype(int) - usual.pixels.astype(int)).mean() < 4
    assert lean.pixels[:240, :240].min() >= 250  # the transparent quarter is white


def test_a_png16_with_alpha_decodes() -> None:
    data = _png16_rgba(1200, 1000)
    out = check(data, ImageSpec())
    assert (out.info.orig_width, out.info.orig_height) == (1200, 1000)
    # grey 0x4040 at alpha 0x4040 (a quarter) on white: 64 * 64 / 255 + 255 * 191 / 255 = 207
    assert np.abs(out.pixels.astype(int) - 207).max() <= 2


_RSS_SCRIPT = r"""
import io, json, resource, sys, threading
from PIL import Image
from passkit import images
from passkit.config import ImageSpec

spec = ImageSpec(decode_budget_mb=int(sys.argv[1]))
datas = [open(p, "rb").read() for p in sys.argv[2:]]
warm = io.BytesIO()
Image.new("RGBA", (300, 300)).save(warm, "PNG")
images.check(warm.getvalue(), spec)  # lazily loaded libraries count in the baseline, not the growth
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = []
def one(d):
    try:
        images.check(d, spec)
        out.append("ok")
    except images.ImageReject as e:
        out.append(e.reason)
threads = [threading.Thread(target=one, args=(d,)) for d in datas]
for t in threads:
    t.start()
for t in threads:
    t.join()
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"growth_mb": (after - before) / 1024, "out": sorted(out),
                  "peak_mb": images.decode_budget(spec).peak / 2**20}))
"""


def test_concurrent_big_pngs_stay_within_the_decode_budget(tmp_path) -> None:
    """Four 16-megapixel PNGs (RGBA, 16-bit RGBA, palette, grey) decoded by four threads at once:
    about 1 GB together the usual way; with a 200 MB budget they queue and are reduced right after
    decoding, and the process's peak grows by less than the budget."""
    import json
    import os
    import subprocess
    import sys

    from tests.helpers import ROOT

    paths = []
    for name, data in [("rgba", _png("RGBA", (4000, 4000), (10, 200, 30, 128))),
                       ("rgba16", _png16_rgba(4000, 4000)),
                       ("p", _png("P", (4000, 4000), 7)),
                       ("la", _png("LA", (4000, 4000), (90, 200)))]:
        paths.append(tmp_path / f"{name}.png")
        paths[-1].write_bytes(data)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, "200", *map(str, paths)], capture_output=True,
                         text=True, env=env, timeout=300, check=True)
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["out"] == ["ok"] * 4
    assert got["peak_mb"] <= 200
    assert got["growth_mb"] < 200 + 20, got  # measured 140 MB; without the budget 860 MB


def test_only_the_allowed_formats_parsers_see_the_bytes(monkeypatch) -> None:
    """An ICO (or PSD, EPS, ...) is refused by its signature: Pillow's parser for it never runs."""
    from PIL import IcoImagePlugin

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buf, "ICO")

    def boom(self):
        raise AssertionError("the ICO parser ran on downloaded bytes")

    monkeypatch.setattr(IcoImagePlugin.IcoImageFile, "_open", boom)
    with pytest.raises(ImageReject) as e:
        check(buf.getvalue(), ImageSpec())
    assert (e.value.reason, e.value.detail) == ("unsupported_format", "format ICO")


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_truncated_png_is_a_decode_error(cut: float) -> None:
    rng = np.random.default_rng(4)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(buf, "PNG")
    data = buf.getvalue()
    with pytest.raises(ImageReject) as e:
        check(data[: int(len(data) * cut)], ImageSpec())
    assert e.value.reason == "decode_error"


def test_animations_decode_their_first_frame_only() -> None:
    """An APNG of 3000 frames and a GIF of 3000 frames: the check reads frame 0 and returns at
    once, whatever follows."""
    import time

    frames = [Image.new("RGB", (96, 96), (i % 256, 0, 0)) for i in range(3000)]
    for fmt in ("PNG", "GIF"):
        buf = io.BytesIO()
        frames[0].save(buf, fmt, save_all=True, append_images=frames[1:], duration=10)
        t0 = time.monotonic()
        out = check(buf.getvalue(), ImageSpec())
        assert time.monotonic() - t0 < 1.0
        assert out.pixels[0, 0, 0] <= 2  # frame 0 is black


def test_a_gif_frame_bigger_than_its_screen_counts_at_its_own_size() -> None:
    """A 100 x 100 GIF screen whose first frame declares 12000 x 12000: the pixel budget applies
    to the frame, before any pixel is decoded."""
    import struct

    gif = (b"GIF89a" + struct.pack("<HHBBB", 100, 100, 0, 0, 0)
           + b"," + struct.pack("<HHHHB", 0, 0, 12000, 12000, 0) + b"\x02\x02\x44\x01\x00;")
    with pytest.raises(ImageReject) as e:
        check(gif, ImageSpec(max_pixels=50_000_000))
    assert e.value.reason == "too_many_pixels"


def test_a_progressive_jpeg_of_thousands_of_scans_is_refused_before_decoding(monkeypatch) -> None:
    import simplejpeg

    rng = np.random.default_rng(5)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(buf, "JPEG", progressive=True)
    data = buf.getvalue()
    assert check(data, ImageSpec()).info.width == 256  # an ordinary progressive JPEG decodes
    last = data[data.rindex(b"\xff\xda"):-2]  # the last scan, up to the end-of-image marker
    bomb = data[:-2] + last * 3000 + b"\xff\xd9"
    calls = []
    monkeypatch.setattr(simplejpeg, "decode_jpeg", lambda *a, **k: calls.append(1))
    with pytest.raises(ImageReject) as e:
        check(bomb, ImageSpec())
    assert e.value.reason == "decode_error" and "scans" in e.value.detail and not calls

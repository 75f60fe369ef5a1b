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

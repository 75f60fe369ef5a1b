"""The CPU loader's fast augmentation path (passkit.recipes.cpu_augment) against torchvision's
functional ops on the same parameters, its crops against the loader's cropped decode, and the
engine's wiring that picks it."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from passkit.recipes import cpu_augment as ca
from passkit.recipes.augment import two_views
from passkit.recipes.augparams import COL, draw
from passkit.recipes.augspec import view_specs
from passkit.recipes.engine import ReleaseData
from passkit.recipes.multicrop import MultiCropConfig, multi_crop
from passkit.stream import decode
from tests.helpers.releases import jpeg, make_release
from tests.recipes.test_device_augment import _reference, image


def hwc(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.permute(1, 2, 0).numpy())


def test_colour_ops_equal_torchvision_functional() -> None:
    x = image(40, 48, n=1, seed=1)[0]
    for f in (0.6, 1.4):
        for fn, ref in ((ca.brightness, TF.adjust_brightness), (ca.contrast, TF.adjust_contrast),
                        (ca.saturation, TF.adjust_saturation)):
            assert np.allclose(fn(hwc(x), f), hwc(ref(x, f)), atol=1e-5), fn.__name__
    for h in (-0.5, -0.37, -0.1, 0.0, 0.04, 0.1, 0.26, 0.49, 0.5):  # hues past 360 degrees wrap
        assert np.allclose(ca.hue(hwc(x), h), hwc(TF.adjust_hue(x, h)), atol=1e-5), h
    for k, sigma in ((7, 0.1), (7, 0.9), (7, 2.0), (23, 0.1), (23, 0.7), (23, 2.0), (23, 5.0)):
        assert np.allclose(ca.gaussian_blur(hwc(x), k, sigma), hwc(TF.gaussian_blur(x, [k, k], [sigma, sigma])),
                           atol=3e-6), (k, sigma)
    assert np.allclose(ca.grayscale(hwc(x)), hwc(TF.rgb_to_grayscale(x, num_output_channels=3)), atol=1e-6)
    assert np.allclose(ca.solarize(hwc(x), 0.5), hwc(TF.solarize(x, 0.5)), atol=1e-7)


def test_the_blur_leaves_out_only_taps_that_weigh_nothing() -> None:
    """The dropped tail is under a millionth; the taps kept are the reference's, unchanged."""
    import math

    for sigma in (0.1, 0.5, 1.0, 2.0):
        t = np.arange(23) - 11.0
        full = np.exp(-(t**2) / (2 * sigma**2))
        full /= full.sum()
        kept = ca.blur_kernel(23, sigma)
        cut = (23 - len(kept)) // 2
        assert len(kept) % 2 == 1 and np.allclose(kept, full[cut:23 - cut], rtol=1e-6)
        assert 1 - kept.sum() < 1e-6
        assert cut == 11 or full[:cut + 1].sum() >= 1e-6 / 2  # one tap fewer per side would drop too much
    assert len(ca.blur_kernel(23, 0.1)) == 1 and len(ca.blur_kernel(23, 2.0)) == 21
    assert math.isclose(float(ca.blur_kernel(3, 50.0).sum()), 1.0, rel_tol=1e-6)  # nothing to leave out


def test_whole_photometric_chain_equals_torchvision_on_the_same_parameters() -> None:
    spec = view_specs(multi_crop(MultiCropConfig(large_size=32, small_size=16, n_small=1)))[1]  # every step possible
    rng = random.Random(4)
    rows = [draw(spec, 64, 64, rng) for _ in range(48)]
    assert {r[COL["solarize"]] for r in rows} == {0.0, 1.0} and {r[COL["jitter"]] for r in rows} == {0.0, 1.0}
    x = image(32, 32, n=48, seed=5)
    for i, row in enumerate(rows):
        row[COL["flip"]] = 0.0  # the crop flips; here only the colour steps
        got = ca.photometric(hwc(x[i]), row, spec)
        want = hwc(_reference(x[i], torch.tensor(row), spec))
        assert np.allclose(got, want, atol=1e-4), (i, np.abs(got - want).max())


def _view(data: bytes, size: tuple[int, int], row: list[float], spec) -> torch.Tensor:
    """One view as JpegViews makes it, from a fixed parameter row: the crop, then its colour steps."""
    crop = decode.crop_resize_views(data, [ca._box(row)], [(spec.size[1], spec.size[0])], size,
                                    [row[COL["flip"]] > 0.5])[0]
    return ca.colour(crop, row, spec)


def test_a_view_is_the_cropped_decode_then_the_colour_steps() -> None:
    data = jpeg(160, 120, seed=3)
    spec = view_specs(two_views(48))[0]
    row = draw(spec, 160, 120, random.Random(0))
    for k in ("jitter", "gray", "blur", "solarize"):
        row[COL[k]] = 0.0
    box = tuple(row[:4])
    crop = decode.crop_resize(data, box, (48, 48), (160, 120), flip=row[COL["flip"]] > 0.5)
    assert torch.equal(_view(data, (160, 120), row, spec), crop)  # nothing to change: the crop as is
    row[COL["jitter"]], row[COL["blur"]] = 1.0, 1.0
    got = _view(data, (160, 120), row, spec)
    want = hwc(_reference(crop.float() / 255, torch.tensor(row) * torch.tensor(
        [0.0 if f == "flip" else 1.0 for f in COL]), spec)) * 255
    assert got.dtype == torch.uint8 and got.shape == (3, 48, 48)
    assert np.abs(hwc(got).astype(np.float32) - want).max() <= 1.0  # rounding to 8 bits once, at the end


def test_the_views_of_a_sample_share_one_decode(monkeypatch) -> None:
    """JpegViews decodes the part all its views need once (decode.crop_resize_views), then each
    view is that crop through its colour steps."""
    jv = ca.JpegViews(view_specs(two_views(48)))
    data = jpeg(160, 120, seed=3)
    calls = []
    part = decode.decode_part
    monkeypatch.setattr(decode, "decode_part", lambda *a: calls.append(a) or part(*a))
    random.seed(5)
    got = jv(data)
    assert len(calls) == 1
    random.seed(5)
    rows = [draw(s, 160, 120) for s in jv.specs]
    crops = decode.crop_resize_views(data, [tuple(r[:4]) for r in rows], [(48, 48)] * 2, (160, 120),
                                     [r[COL["flip"]] > 0.5 for r in rows])
    want = [ca.colour(c, r, s) for c, r, s in zip(crops, rows, jv.specs, strict=True)]
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))


def test_views_follow_the_recipes_specs_and_the_seed() -> None:
    jv = ca.fast_views(multi_crop(MultiCropConfig(large_size=32, small_size=16, n_small=3)))
    assert isinstance(jv, ca.JpegViews) and jv.wants_jpeg
    data = jpeg(120, 90, seed=1)
    random.seed(7)
    a = jv(data)
    random.seed(7)
    b = jv(data)
    assert [tuple(t.shape) for t in a] == [(3, 32, 32)] * 2 + [(3, 16, 16)] * 3
    assert all(t.dtype == torch.uint8 for t in a) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], a[1])


def test_a_transform_the_spec_reader_cannot_read_is_left_as_it_is() -> None:
    custom = v2.Compose([v2.RandomResizedCrop(32), v2.RandomRotation(10)])
    assert ca.fast_views(custom) is custom
    rrc = decode.RandomResizedCrop(32)
    assert ca.fast_views(rrc) is rrc


def test_release_data_uses_the_fast_path_on_the_cpu_loader(tmp_path: Path) -> None:
    root = make_release(tmp_path / "rel", n=8, shard_max=4)
    data = ReleaseData(root, two_views(32), 4, seed=0, loader_mode="cpu")
    assert isinstance(data.loader.dataset.transform, ca.JpegViews)
    (v1, v2_), _ = next(iter(data.epoch(0)))
    assert v1.shape == v2_.shape == (4, 3, 32, 32) and v1.dtype == torch.uint8
    again = next(iter(ReleaseData(root, two_views(32), 4, seed=0, loader_mode="cpu").epoch(0)))[0]
    assert torch.equal(again[0], v1) and torch.equal(again[1], v2_)


def test_fast_views_is_several_times_faster_than_torchvision_on_pil() -> None:
    """Not a benchmark (benchmarks/train_input.py --cpu-target is): a guard that the fast path
    does not silently fall back to the PIL chain."""
    import time

    data = jpeg(640, 480, seed=2)
    ref, fast = two_views(224), ca.fast_views(two_views(224))

    def rate(fn: object, n: int = 15) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            fn(data)  # type: ignore[operator]
        return n / (time.perf_counter() - t0)

    assert rate(fast) > 2 * rate(lambda d: ref(decode.decode_pil(d)))

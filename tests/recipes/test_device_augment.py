"""The device pipeline against the CPU reference: the specs it reads off each recipe's transform,
its parameter distributions against torchvision's (thousands of draws), its pixels against
torchvision's functional ops on fixed parameters, its determinism through the loader, and the
same batches as the CPU loader's for the same seed. All on
CPU tensors: the code is the same on CUDA."""

from __future__ import annotations

import math
import random
from collections import Counter
from pathlib import Path

import pytest
import torch
import torchvision.transforms as T
from scipy import stats
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from passkit.recipes import device_ops as ops
from passkit.recipes import presets
from passkit.recipes.augparams import COL, FIELDS, EncodedViews, draw
from passkit.recipes.augspec import ViewSpec, view_specs
from passkit.recipes.device_augment import DeviceAugment, decode_batch
from tests.helpers.releases import jpeg, make_release

N = 4000  # draws per distribution test
P_MIN = 1e-4  # a KS test of equal distributions falls below this 1 time in 10,000


def specs(recipe: str, preset: str = "full") -> tuple[ViewSpec, ...]:
    return view_specs(presets.get(preset, recipe).build_recipe().transform())


def image(h: int = 64, w: int = 80, n: int = 1, seed: int = 0) -> torch.Tensor:
    """Smooth colour images with some texture, float [n, 3, h, w] in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    base = torch.stack([xx, yy, (xx + yy) / 2])[None]
    return (0.7 * base + 0.3 * torch.rand((n, 3, h, w), generator=g)).clamp(0, 1)


# ----------------------------------------------------------------------------- specs


def test_specs_are_read_off_each_recipes_reference_transform() -> None:
    moco = specs("moco_v2")
    assert len(moco) == 2 and moco[0] == moco[1]
    m = moco[0]
    assert (m.size, m.scale, m.flip_p, m.jitter_p, m.gray_p, m.blur_p, m.blur_kernel) == \
           ((224, 224), (0.2, 1.0), 0.5, 0.8, 0.2, 0.5, 23)
    assert m.brightness == pytest.approx((0.6, 1.4)) and m.hue == pytest.approx((-0.1, 0.1))
    dino = specs("dino")
    assert len(dino) == 12 and [s.size for s in dino] == [(224, 224)] * 2 + [(96, 96)] * 10
    assert [s.blur_p for s in dino[:3]] == [1.0, 0.1, 0.5] and [s.solarize_p for s in dino[:3]] == [0.0, 0.2, 0.0]
    assert dino[0].saturation == pytest.approx((0.8, 1.2)) and dino[2].scale == (0.05, 0.32)
    mae = specs("mae")
    assert len(mae) == 1 and mae[0].interpolation == "bicubic" and mae[0].jitter_p == 0 and mae[0].flip_p == 0.5
    assert len(specs("swav")) == 8


def test_a_step_the_device_cannot_run_is_refused() -> None:
    with pytest.raises(ValueError, match="RandomRotation"):
        view_specs(v2.Compose([v2.RandomResizedCrop(32), v2.RandomRotation(10)]))
    with pytest.raises(ValueError, match="order"):  # blur before jitter: not the order the device applies
        view_specs(v2.Compose([v2.RandomResizedCrop(32), v2.GaussianBlur(3), v2.ColorJitter(0.4)]))


# ----------------------------------------------------------------------------- distributions


def test_crop_boxes_follow_torchvision_random_resized_crop() -> None:
    spec = specs("moco_v2")[0]
    w, h = 300, 200
    rng = random.Random(0)
    ours = torch.tensor([draw(spec, w, h, rng)[:4] for _ in range(N)])
    torch.manual_seed(0)
    ref_img = torch.zeros(3, h, w)
    ref = []
    for _ in range(N):
        i, j, hh, ww = T.RandomResizedCrop.get_params(ref_img, list(spec.scale), list(spec.ratio))
        ref.append((j, i, j + ww, i + hh))
    theirs = torch.tensor(ref, dtype=torch.float32)

    def features(b: torch.Tensor) -> dict[str, torch.Tensor]:
        bw, bh = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        return {"area": bw * bh / (w * h), "log_ratio": torch.log(bw / bh),
                "cx": (b[:, 0] + b[:, 2]) / 2 / w, "cy": (b[:, 1] + b[:, 3]) / 2 / h}

    fo, ft = features(ours), features(theirs)
    for k in fo:
        assert stats.ks_2samp(fo[k].numpy(), ft[k].numpy()).pvalue > P_MIN, k
    assert ((ours[:, 2] <= w) & (ours[:, 3] <= h) & (ours[:, :2] >= 0).all(1)).all()


def test_jitter_factors_order_and_blur_sigma_follow_torchvision() -> None:
    spec = specs("moco_v2")[0]
    rng = random.Random(1)
    ours = torch.tensor([draw(spec, 100, 100, rng) for _ in range(N)])
    torch.manual_seed(1)
    jitter = v2.ColorJitter(0.4, 0.4, 0.4, 0.1)
    ref = [T.ColorJitter.get_params(jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue)
           for _ in range(N)]
    for k, name in enumerate(("brightness", "contrast", "saturation", "hue")):
        theirs = torch.tensor([r[1 + k] for r in ref])
        assert stats.ks_2samp(ours[:, COL[name]].numpy(), theirs.numpy()).pvalue > P_MIN, name
    # the order: every one of the 24 permutations about equally often, as torch.randperm(4) gives
    perms = Counter(tuple(int(v) for v in row) for row in ours[:, COL["order0"]:COL["order3"] + 1].tolist())
    assert len(perms) == 24
    assert stats.chisquare(list(perms.values())).pvalue > P_MIN
    sigma_ref = torch.empty(N).uniform_(*spec.blur_sigma)  # v2.GaussianBlur's draw
    assert stats.ks_2samp(ours[:, COL["sigma"]].numpy(), sigma_ref.numpy()).pvalue > P_MIN


@pytest.mark.parametrize("recipe", ["moco_v2", "dino", "mae"])
def test_application_probabilities_match_the_reference(recipe: str) -> None:
    rng = random.Random(2)
    for spec in specs(recipe)[:3]:
        rows = torch.tensor([draw(spec, 120, 90, rng) for _ in range(N)])
        for name, p in (("flip", spec.flip_p), ("jitter", spec.jitter_p), ("gray", spec.gray_p),
                        ("blur", spec.blur_p if spec.blur_kernel else 0.0), ("solarize", spec.solarize_p)):
            k = int(rows[:, COL[name]].sum())
            if p in (0.0, 1.0):
                assert k == round(p * N), (recipe, name)
            else:  # within 4.5 standard deviations of a binomial(N, p)
                assert abs(k - p * N) < 4.5 * math.sqrt(N * p * (1 - p)), (recipe, name, k, p)


# ----------------------------------------------------------------------------- pixels on fixed parameters


def test_crop_resize_is_bilinear_sampling_of_the_crop() -> None:
    img = (image(60, 90) * 255).round()
    u8 = img[0].to(torch.uint8)
    boxes = torch.tensor([[10.0, 5.0, 40.0, 35.0], [0.0, 0.0, 90.0, 60.0], [20.0, 10.0, 84.0, 58.0]])
    up = ops.crop_resize([u8], torch.zeros(3, dtype=torch.int64), boxes, (48, 48))
    # upscaling (30 px -> 48): exactly torchvision's bilinear, away from the crop's edge, where
    # roi_align reads the pixels outside the crop that torchvision's clamp does not
    ref = TF.resized_crop(u8.float()[None], 5, 10, 30, 30, [48, 48], antialias=True) / 255
    assert torch.allclose(up[0, :, 1:-1, 1:-1], ref[0, :, 1:-1, 1:-1], atol=1e-4)
    # downscaling: area-averaged, against torchvision's antialias filter: close, not equal
    for k, (i, j, h, w) in ((1, (0, 0, 60, 90)), (2, (10, 20, 48, 64))):
        ref = TF.resized_crop(u8.float()[None], i, j, h, w, [48, 48], antialias=True) / 255
        diff = (up[k] - ref[0]).abs()
        assert diff.mean() < 2.0 / 255 and diff.max() < 24 / 255, (k, diff.mean() * 255, diff.max() * 255)


def test_all_sizes_sample_one_small_batch_of_crop_regions(monkeypatch: pytest.MonkeyPatch) -> None:
    """Large photos cut to small views: each image's region is cropped and box-filtered before
    padding (a float batch of whole photos per size cost a gigabyte per 32 photos), and every
    size samples the same batch. Close to torchvision's antialiased resize all the same."""
    seen: list[torch.Tensor] = []
    real = ops.roi_align

    def spy(batch: torch.Tensor, *args: object, **kw: object) -> torch.Tensor:
        seen.append(batch)
        return real(batch, *args, **kw)

    monkeypatch.setattr(ops, "roi_align", spy)
    imgs = [(image(600, 800, seed=s)[0] * 255).round().to(torch.uint8) for s in (6, 7)]
    boxes = torch.tensor([[100.0, 50.0, 700.0, 550.0], [300.0, 200.0, 620.0, 440.0]] * 2)
    index = torch.tensor([0, 1, 1, 0])
    group = torch.tensor([0, 0, 1, 1])
    big, small = ops.crop_resize_sizes(imgs, index, boxes, group, [(32, 32), (16, 16)])
    assert big.shape == (2, 3, 32, 32) and small.shape == (2, 3, 16, 16)
    assert len(seen) == 2 and seen[0] is seen[1]  # one padded batch for both sizes
    assert seen[0].shape[-2] <= 3 * 32 and seen[0].shape[-1] <= 3 * 32, seen[0].shape
    for got, (k, (left, top, right, bottom)), size in ((big[0], (0, boxes[0]), 32), (big[1], (1, boxes[1]), 32),
                                                        (small[0], (1, boxes[2]), 16), (small[1], (0, boxes[3]), 16)):
        ref = TF.resized_crop(imgs[k].float()[None], int(top), int(left), int(bottom - top), int(right - left),
                              [size, size], antialias=True)[0] / 255
        diff = (got - ref).abs()
        assert diff.mean() < 2.0 / 255 and diff.max() < 24 / 255, (diff.mean() * 255, diff.max() * 255)


def test_per_sample_colour_ops_equal_torchvision_functional() -> None:
    x = image(n=4, seed=3)
    f = torch.tensor([0.6, 0.9, 1.2, 1.4])
    hue = torch.tensor([-0.1, -0.03, 0.05, 0.1])
    for fn, ref in ((ops.brightness, TF.adjust_brightness), (ops.contrast, TF.adjust_contrast),
                    (ops.saturation, TF.adjust_saturation)):
        got = fn(x, f)
        want = torch.stack([ref(x[i], float(f[i])) for i in range(4)])
        assert torch.allclose(got, want, atol=1e-5), fn.__name__
    got = ops.hue(x, hue)
    want = torch.stack([TF.adjust_hue(x[i], float(hue[i])) for i in range(4)])
    assert torch.allclose(got, want, atol=1e-5)
    assert torch.allclose(ops.to_gray(x), TF.rgb_to_grayscale(x, num_output_channels=3), atol=1e-6)
    assert torch.equal(ops.solarize(x, 0.5), TF.solarize(x, 0.5))
    sigma = torch.tensor([0.1, 0.7, 1.3, 2.0])
    got = ops.gaussian_blur(x, 7, sigma)
    want = torch.stack([TF.gaussian_blur(x[i], [7, 7], [float(sigma[i])] * 2) for i in range(4)])
    assert torch.allclose(got, want, atol=1e-5)


def _reference(x: torch.Tensor, row: torch.Tensor, spec: ViewSpec) -> torch.Tensor:
    """One sample through torchvision's functional ops, in the reference's order, on row's parameters."""
    if row[COL["flip"]] > 0.5:
        x = TF.horizontal_flip(x)
    if row[COL["jitter"]] > 0.5:
        fns = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
        for k in range(4):
            op = int(row[COL["order0"] + k])
            x = fns[op](x, float(row[COL["brightness"] + op]))
    if row[COL["gray"]] > 0.5:
        x = TF.rgb_to_grayscale(x, num_output_channels=3)
    if row[COL["blur"]] > 0.5:
        x = TF.gaussian_blur(x, [spec.blur_kernel] * 2, [float(row[COL["sigma"]])] * 2)
    if row[COL["solarize"]] > 0.5:
        x = TF.solarize(x, spec.solarize_threshold / 255)
    return x


def test_whole_photometric_chain_equals_torchvision_on_the_same_parameters() -> None:
    spec = specs("dino")[1]  # jitter, grayscale, blur and solarize all possible
    rng = random.Random(4)
    rows = torch.tensor([draw(spec, 64, 64, rng) for _ in range(64)])
    for name in ("jitter", "gray", "blur", "solarize", "flip"):  # the draws exercise every branch
        assert 0 < rows[:, COL[name]].sum() < 64 or name == "gray", name
    rows[:8, COL["blur"]] = 1.0
    x = image(32, 32, n=64, seed=5)
    aug = DeviceAugment([spec])
    got = aug.photometric(x.clone(), rows, [spec])
    want = torch.stack([_reference(x[i], rows[i], spec) for i in range(64)])
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()


# ----------------------------------------------------------------------------- decode, batches, determinism


def test_decode_batch_equals_pillow() -> None:
    import io

    import numpy as np
    from PIL import Image

    datas = [jpeg(50 + 3 * i, 40 + i, seed=i) for i in range(5)]
    got = decode_batch(datas, "cpu")
    for d, g in zip(datas, got, strict=True):
        want = torch.from_numpy(np.array(Image.open(io.BytesIO(d)).convert("RGB"))).permute(2, 0, 1)
        assert g.shape == want.shape and (g.int() - want.int()).abs().max() <= 2


def _smooth_jpeg(w: int, h: int, seed: int) -> bytes:
    import io

    from PIL import Image

    px = (image(h, w, seed=seed)[0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(px, "RGB").save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_cpu_decode_takes_only_what_the_views_need_and_gives_the_same_views() -> None:
    """On the CPU each JPEG is decoded around its views' crops at reduced DCT scale (a full
    decode was most of a smoke run's time); the views stay within a few levels of those cut
    from the full-size decode."""
    from passkit.recipes.device_augment import decode_crops

    sp = specs("dino", "smoke")  # 32 and 16 px views
    ev = EncodedViews(sp)
    random.seed(0)
    batch = [ev(_smooth_jpeg(640, 480, seed=i)) for i in range(4)]
    params = torch.stack([e.params for e in batch])
    images, frames = decode_crops([e.data for e in batch], params, [s.size for s in sp])
    assert all(t.shape[-2] * t.shape[-1] <= 640 * 480 / 4 for t in images)  # 1/2 scale or less
    aug = DeviceAugment(sp)
    fast = aug.views(images, params, frames)
    full = aug.views(decode_batch([e.data for e in batch], "cpu"), params)
    for a, b in zip(fast, full, strict=True):
        diff = (a - b).abs() * 0.226 * 255  # back to levels (std ~0.226 after normalising)
        assert diff.mean() < 2.0 and diff.max() < 24, (diff.mean(), diff.max())


def test_views_have_the_recipes_shapes_dtype_and_layout() -> None:
    sp = specs("dino", "smoke")
    ev = EncodedViews(sp)
    random.seed(0)
    batch = [ev(jpeg(120 + 10 * i, 90, seed=i)) for i in range(3)]
    assert batch[0].params.shape == (4, len(FIELDS))
    views = DeviceAugment(sp, dtype=torch.bfloat16)(batch)
    assert [tuple(v.shape) for v in views] == [(3, 3, 32, 32)] * 2 + [(3, 3, 16, 16)] * 2
    assert all(v.dtype == torch.bfloat16 and v.is_contiguous(memory_format=torch.channels_last) for v in views)
    assert all(torch.isfinite(v.float()).all() for v in views)
    assert float(views[0].float().min()) > -2.2 and float(views[0].float().max()) < 2.7  # normalised


@pytest.fixture(scope="module")
def small_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_release(tmp_path_factory.mktemp("rel"), n=12, shard_max=5)


def _pass(release: Path, seed: int, epoch: int, workers: int) -> list[torch.Tensor]:
    from passkit.stream import loader

    sp = specs("moco_v2", "smoke")
    dl = loader(release, 4, transform=EncodedViews(sp), shuffle=True, seed=seed, num_workers=workers)
    dl.set_epoch(epoch)
    aug = DeviceAugment(sp)
    return [torch.cat(aug(encoded)) for encoded, _ in dl]


def test_same_seed_epoch_gives_the_same_batches_across_num_workers(small_release: Path) -> None:
    a = _pass(small_release, 0, 1, 0)
    assert len(a) == 3
    b = _pass(small_release, 0, 1, 2)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    c = _pass(small_release, 0, 2, 0)
    d = _pass(small_release, 1, 1, 0)
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[0], d[0])


def _levels(views: torch.Tensor) -> torch.Tensor:
    """Normalised views back to 0-255 levels, to compare with the CPU loader's uint8 views."""
    from passkit.recipes.augment import IMAGENET_MEAN, IMAGENET_STD

    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (views.float() * std + mean) * 255


@pytest.mark.parametrize(("recipe", "preset"), [("moco_v2", "smoke"), ("dino", "full"), ("mae", "full")])
def test_the_same_batches_with_and_without_the_device_path(small_release: Path, recipe: str, preset: str) -> None:
    """Both paths draw every parameter from the same per-batch seeded draws, so a run does not
    change its data when it moves between a GPU and the CPU loader: the same samples in the same
    order, the same crops and colours; the pixels differ only by the two resampling filters and
    the CPU path's 8-bit output (measured: under 1 level on average; another seed: 40-70)."""
    from passkit.recipes.cpu_augment import JpegViews
    from passkit.stream import loader

    sp = specs(recipe, preset)
    aug = DeviceAugment(sp)

    def run(transform: object, seed: int, workers: int) -> list[tuple[list[torch.Tensor], list[str]]]:
        dl = loader(small_release, 4, transform=transform, shuffle=True, seed=seed, num_workers=workers)
        dl.set_epoch(1)
        return [(list(views), [m["key"] for m in metas]) for views, metas in dl]

    device = [(aug(enc), keys) for enc, keys in run(EncodedViews(sp), 0, 0)]
    cpu, other = run(JpegViews(sp), 0, 2), run(JpegViews(sp), 1, 0)
    assert [k for _, k in device] == [k for _, k in cpu]
    same, different = [], []
    for (dv, _), (cv, _), (ov, _) in zip(device, cpu, other, strict=True):
        for d, c, o in zip(dv, cv, ov, strict=True):
            assert d.shape == c.shape
            same.append(float((_levels(d) - c.float()).abs().mean()))
            different.append(float((_levels(d) - o.float()).abs().mean()))
    assert max(same) < 1.5, same
    assert min(different) > 20, different

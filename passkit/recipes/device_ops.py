"""Batched image ops with one parameter per sample, on float [N, 3, H, W] tensors in [0, 1].

torchvision's functional ops take one factor for a whole batch, so a per-sample augmentation
becomes a Python loop over samples, which on a GPU is a few kernel launches per image. These
take a factor per sample and run in a handful of launches per batch, on CPU and CUDA alike.
Each follows torchvision's float formula (transforms.v2.functional), so on fixed parameters
the pixels equal torchvision's (tests/recipes/test_device_augment.py holds them to it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

# ITU-R 601-2 luma, torchvision's rgb_to_grayscale weights
_LUMA = (0.2989, 0.587, 0.114)


def crop_resize(images: Sequence[torch.Tensor], index: torch.Tensor, boxes: torch.Tensor,
                size: tuple[int, int], chunk: int = 32) -> torch.Tensor:
    """Crop box `boxes[i]` (left, top, right, bottom, pixels) of image `images[index[i]]`
    (uint8 [3, H, W], sizes may differ) and resize it to `size` (h, w): float
    [len(boxes), 3, h, w] in [0, 1]. One output size of `crop_resize_sizes`."""
    group = torch.zeros(len(boxes), dtype=torch.int64)
    return crop_resize_sizes(images, index, boxes, group, [size], chunk=chunk)[0]


def crop_resize_sizes(images: Sequence[torch.Tensor], index: torch.Tensor, boxes: torch.Tensor,
                      group: torch.Tensor, sizes: Sequence[tuple[int, int]],
                      frames: torch.Tensor | None = None, chunk: int = 32) -> list[torch.Tensor]:
    """Crop and resize every view of every image, for several output sizes at once.

    Row i is box `boxes[i]` (left, top, right, bottom in full-resolution pixels) of image
    `images[index[i]]` (uint8 [3, H, W], sizes may differ), resized to `sizes[group[i]]` (h, w).
    `frames[b]` = (sx, sy, ox, oy) maps full-resolution pixels to image b's tensor (x * sx - ox),
    for images decoded at reduced scale or cropped (default: the identity). Returns one float
    [rows of that size, 3, h, w] tensor in [0, 1] per size, rows in their order in `boxes`.

    Why this shape: padding whole images into one float batch per size cost a gigabyte per 32
    photos and sampled every pixel of every crop. Per image and output size, only the region
    its boxes cover (plus a pixel, edge pixels replicated as torchvision's resize clamps) is
    taken, still in uint8, and where every box of that size shrinks by f >= 2 along both axes
    it is box-filtered by f first (sizes that come to the same f share one region): a 1600 px
    photo cut to 32 px views becomes a few dozen pixels before anything is padded or sampled.
    The regions are padded into one float batch per `chunk` images, shared by all sizes, and
    each size is one roi_align on it.

    roi_align with aligned=True samples at the same points as bilinear interpolation with
    align_corners=False; with sampling_ratio=-1 it averages ceil(box / out) samples per output
    pixel along each axis, so a downscale is area-averaged rather than aliased (torchvision's
    antialias uses a triangle filter instead: close, not equal)."""
    device = images[0].device
    n = len(images)
    geo = boxes.detach().to("cpu", torch.float64)
    idx = index.detach().to("cpu", torch.int64)
    grp = group.detach().to("cpu", torch.int64)
    if frames is not None:  # full-resolution -> tensor coordinates
        fr = frames.detach().to("cpu", torch.float64)[idx]
        geo = geo * fr[:, [0, 1, 0, 1]] - fr[:, [2, 3, 2, 3]]
    out_hw = torch.tensor(sizes, dtype=torch.float64)[grp]  # [R, 2] (h, w)
    shrink = torch.minimum((geo[:, 2] - geo[:, 0]) / out_hw[:, 1], (geo[:, 3] - geo[:, 1]) / out_hw[:, 0])
    shrink_l, geo_l, grp_l = shrink.tolist(), geo.tolist(), grp.tolist()
    per_image: list[list[int]] = [[] for _ in range(n)]
    for r, b in enumerate(idx.tolist()):
        per_image[b].append(r)
    pos = torch.empty_like(grp)  # each row's place among the rows of its size
    for g in range(len(sizes)):
        sel = (grp == g).nonzero().flatten()
        pos[sel] = torch.arange(len(sel))
    out = [torch.empty((int((grp == g).sum()), 3, *s), dtype=torch.float32, device=device)
           for g, s in enumerate(sizes)]
    for lo in range(0, n, chunk):
        regions: list[torch.Tensor] = []
        rois: list[tuple[float, ...]] = []
        rows: list[int] = []
        for b in range(lo, min(n, lo + chunk)):
            # one region per box-filter factor: the rows of one size share the factor their
            # least-shrunk row allows, and sizes that come to the same factor share a region
            by_size: dict[int, list[int]] = {}
            for r in per_image[b]:
                by_size.setdefault(grp_l[r], []).append(r)
            by_f: dict[int, list[int]] = {}
            for rs in by_size.values():
                by_f.setdefault(max(1, int(min(shrink_l[r] for r in rs))), []).extend(rs)
            for f, rs in by_f.items():
                region, rb = _region(images[b], [geo_l[r] for r in rs], f)
                rois += [(float(len(regions)), *box) for box in rb]
                rows += rs
                regions.append(region)
        if not regions:
            continue
        h = max(int(t.shape[-2]) for t in regions)
        w = max(int(t.shape[-1]) for t in regions)
        batch = torch.zeros((len(regions), 3, h, w), dtype=torch.float32, device=device)
        for i, t in enumerate(regions):
            batch[i, :, : t.shape[-2], : t.shape[-1]] = t
        roi = torch.tensor(rois, dtype=torch.float32, device=device)
        rows_t = torch.tensor(rows, dtype=torch.int64)
        for g, size in enumerate(sizes):
            sel = (grp[rows_t] == g).nonzero().flatten()
            if len(sel):
                out[g][pos[rows_t[sel]].to(device)] = roi_align(
                    batch, roi[sel.to(device)], size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    return [o.div_(255.0) for o in out]


def _region(image: torch.Tensor, boxes: list[list[float]], f: int) -> tuple[torch.Tensor, list[tuple[float, ...]]]:
    """The part of uint8 `image` [3, H, W] that `boxes` (its coordinates) cover, with a margin of
    one (output) pixel for the bilinear taps at the boxes' edges and edge pixels replicated
    beyond the image, box-filtered by `f`: float [3, h, w] and the boxes in its coordinates."""
    h, w = int(image.shape[-2]), int(image.shape[-1])
    left = math.floor(min(b[0] for b in boxes)) - f
    top = math.floor(min(b[1] for b in boxes)) - f
    width = -(-(math.ceil(max(b[2] for b in boxes)) + f - left) // f) * f  # whole blocks of f
    height = -(-(math.ceil(max(b[3] for b in boxes)) + f - top) // f) * f
    xs = torch.arange(left, left + width, device=image.device).clamp_(0, w - 1)
    ys = torch.arange(top, top + height, device=image.device).clamp_(0, h - 1)
    region = image.index_select(-2, ys).index_select(-1, xs).to(torch.float32)
    if f > 1:
        region = F.avg_pool2d(region[None], f)[0]
    return region, [((b[0] - left) / f, (b[1] - top) / f, (b[2] - left) / f, (b[3] - top) / f) for b in boxes]


def _col(v: torch.Tensor) -> torch.Tensor:
    return v.to(torch.float32).view(-1, 1, 1, 1)


def _blend(a: torch.Tensor, b: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    r = _col(ratio)
    return (a * r + b * (1 - r)).clamp_(0, 1)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """Luma [N, 1, H, W]."""
    return x[:, 0:1] * _LUMA[0] + x[:, 1:2] * _LUMA[1] + x[:, 2:3] * _LUMA[2]


def brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (x * _col(f)).clamp_(0, 1)


def contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    mean = grayscale(x).mean(dim=(-3, -2, -1), keepdim=True)
    return _blend(x, mean, f)


def saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return _blend(x, grayscale(x), f)


def _rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(dim=-3)
    maxc, minc = x.amax(dim=-3), x.amin(dim=-3)
    eqc = maxc == minc
    rng = maxc - minc
    ones = torch.ones_like(maxc)
    s = rng / torch.where(eqc, ones, maxc)
    div = torch.where(eqc, ones, rng)
    rc, gc, bc = (maxc - r) / div, (maxc - g) / div, (maxc - b) / div
    is_r = maxc == r
    is_g = (maxc == g) & ~is_r
    is_b = ~is_r & ~is_g
    h = (bc - gc) * is_r + (2.0 + rc - bc) * is_g + (4.0 + gc - rc) * is_b
    h = (h / 6.0 + 1.0).fmod(1.0)
    return torch.stack((h, s, maxc), dim=-3)


def _hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    h, s, v = x.unbind(dim=-3)
    h6 = h * 6
    i = torch.floor(h6)
    f = h6 - i
    i = i.to(torch.int64).remainder(6)
    q = ((1.0 - s * f) * v).clamp(0, 1)
    t = ((1.0 - s * (1.0 - f)) * v).clamp(0, 1)
    p = ((1.0 - s) * v).clamp(0, 1)
    vpqt = torch.stack((v, p, q, t), dim=-3)
    select = torch.tensor([[0, 2, 1, 1, 3, 0], [3, 0, 0, 2, 1, 1], [1, 1, 3, 0, 0, 2]], device=x.device)
    return vpqt.gather(-3, select[:, i].moveaxis(0, -3))


def hue(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Shift the hue by f (a fraction of the circle, in [-0.5, 0.5]) per sample."""
    hsv = _rgb_to_hsv(x)
    h = (hsv[:, 0] + f.to(torch.float32).view(-1, 1, 1)).remainder(1.0)
    return _hsv_to_rgb(torch.stack((h, hsv[:, 1], hsv[:, 2]), dim=-3))


JITTER = (brightness, contrast, saturation, hue)  # torchvision's ColorJitter numbers them so


def to_gray(x: torch.Tensor) -> torch.Tensor:
    return grayscale(x).expand_as(x).contiguous()


def gaussian_blur(x: torch.Tensor, kernel: int, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur, one sigma per sample, reflect padding (torchvision's kernel:
    exp(-t^2 / 2 sigma^2) at integer offsets t, normalised)."""
    n, c, h, w = x.shape
    t = torch.arange(kernel, device=x.device, dtype=torch.float32) - (kernel - 1) / 2
    k = torch.softmax(-(t[None] ** 2) / (2 * sigma.to(torch.float32)[:, None] ** 2), dim=1)  # [N, k]
    k = k.repeat_interleave(c, dim=0)  # one kernel per (sample, channel) plane
    pad = kernel // 2
    y = F.pad(x.reshape(1, n * c, h, w), (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, k.view(n * c, 1, 1, kernel), groups=n * c)
    y = F.conv2d(y, k.view(n * c, 1, kernel, 1), groups=n * c)
    return y.view(n, c, h, w)


def solarize(x: torch.Tensor, threshold: float) -> torch.Tensor:
    """Invert the pixels at or above `threshold` (in [0, 1])."""
    return torch.where(x >= threshold, 1.0 - x, x)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - m) / s

"""Batched image ops with one parameter per sample, on float [N, 3, H, W] tensors in [0, 1].

torchvision's functional ops take one factor for a whole batch, so a per-sample augmentation
becomes a Python loop over samples, which on a GPU is a few kernel launches per image. These
take a factor per sample and run in a handful of launches per batch, on CPU and CUDA alike.
Each follows torchvision's float formula (transforms.v2.functional), so on fixed parameters
the pixels equal torchvision's (tests/recipes/test_device_augment.py holds them to it).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

# ITU-R 601-2 luma, torchvision's rgb_to_grayscale weights
_LUMA = (0.2989, 0.587, 0.114)


def crop_resize(images: Sequence[torch.Tensor], index: torch.Tensor, boxes: torch.Tensor,
                size: tuple[int, int], chunk: int = 32) -> torch.Tensor:
    """Crop box `boxes[i]` (left, top, right, bottom, full-resolution pixels) of image
    `images[index[i]]` (uint8 [3, H, W], sizes may differ) and resize it to `size` (h, w): float
    [len(boxes), 3, h, w] in [0, 1], in one roi_align call per `chunk` images.

    roi_align with aligned=True samples at the same points as bilinear interpolation with
    align_corners=False; with sampling_ratio=-1 it averages ceil(box / out) samples per output
    pixel along each axis, so a downscale is area-averaged rather than aliased (torchvision's
    antialias uses a triangle filter instead: close, not equal). Images are padded to the
    chunk's largest size; a box never reaches into the padding."""
    device = images[0].device
    out = torch.empty((len(boxes), 3, *size), dtype=torch.float32, device=device)
    for lo in range(0, len(images), chunk):
        part = images[lo:lo + chunk]
        h = max(int(t.shape[-2]) for t in part)
        w = max(int(t.shape[-1]) for t in part)
        batch = torch.zeros((len(part), 3, h, w), dtype=torch.float32, device=device)
        for i, t in enumerate(part):
            batch[i, :, : t.shape[-2], : t.shape[-1]] = t
        rows = ((index >= lo) & (index < lo + len(part))).nonzero().flatten()
        if len(rows) == 0:
            continue
        rois = torch.cat([(index[rows] - lo).to(torch.float32)[:, None], boxes[rows].to(torch.float32)], 1)
        out[rows] = roi_align(batch, rois, size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    return out.div_(255.0)


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

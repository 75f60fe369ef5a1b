"""The device pipeline: decode a batch of JPEGs and augment every view of it where the model runs.

    specs = view_specs(recipe.transform())                 # read off the CPU reference
    dl = loader(release, 256, transform=EncodedViews(specs), num_workers=4)  # bytes + parameters
    aug = DeviceAugment(specs, device="cuda", dtype=torch.bfloat16)
    for encoded, metas in dl:
        views = aug(encoded)          # one normalised bf16 channels-last [B, 3, h, w] per view

Why: on a GPU machine the CPU loader, decoding and augmenting each image in Python, feeds the
model a fraction of what it can train on. Here the workers only read tars and draw parameters
(passkit.recipes.augparams); the training process decodes the batch (on CUDA in one
torchvision.io.decode_jpeg call, nvJPEG; on a CPU each JPEG only where its views reach, at
reduced DCT scale), crops and resizes every view of every sample from one padded batch of
per-image regions (one roi_align per size), and applies flip, colour jitter
(per-sample factors and order), grayscale, Gaussian blur (per-sample sigma) and solarize to
the whole batch with per-sample masks. The same code runs on CPU tensors, which is how it is
tested; `prefetch` decodes and augments the next batch on a side CUDA stream while the model
trains on this one.

Differences from the CPU reference, by design: the reference jitters and blurs PIL images,
rounding to 8 bits after each step, and resamples with torchvision's antialias filter (MAE's
crop bicubically); this pipeline stays in float from decode to output and area-averages
bilinear samples. Both paths draw each sample's parameters from the same seeded per-batch
draws, so for one (seed, epoch, rank) a run gets the same samples, crops and colours from this
pipeline and from the CPU loader (passkit.recipes.cpu_augment); their pixels differ by under one
level on average (tests/recipes/test_device_augment.py).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch

from passkit.recipes import device_ops as ops
from passkit.recipes.augment import IMAGENET_MEAN, IMAGENET_STD
from passkit.recipes.augparams import COL, Encoded
from passkit.recipes.augspec import ViewSpec

# torchvision 0.29 marks its decoders deprecated in favour of TorchCodec; they still run (nvJPEG
# batched on CUDA), and TorchCodec is not installed here to move to
warnings.filterwarnings("ignore", message=".*decoding and encoding capabilities of TorchVision",
                        category=DeprecationWarning)


def decode_batch(datas: Sequence[bytes], device: torch.device | str) -> list[torch.Tensor]:
    """JPEG bytes -> uint8 [3, H, W] RGB tensors on `device`, the batch in one decode call
    (nvJPEG batched on CUDA). A batch the batched call refuses is decoded one by one, and what
    torchvision cannot read (CMYK, odd markers) through Pillow, so one odd file never stops training."""
    from torchvision.io import ImageReadMode, decode_jpeg

    tensors = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
    try:
        return list(decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device))
    except RuntimeError:
        out = []
        for t, d in zip(tensors, datas, strict=True):
            try:
                out.append(decode_jpeg(t, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                from passkit.stream.decode import decode_pil, pil_to_chw

                out.append(pil_to_chw(decode_pil(d)).to(device))
        return out


def decode_crops(datas: Sequence[bytes], params: torch.Tensor,
                 sizes: Sequence[tuple[int, int]]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """On the CPU: each JPEG decoded only where its views' boxes reach, at the strongest DCT
    reduction that leaves every view's crop at least its output size (passkit.stream.decode's
    cropped decode), with the frames that map full-resolution boxes onto each result.

    Why: a full-size decode of a 640-1600 px photo cost 7 ms, a multiple of everything else the
    smoke presets' 16-32 px views need; nvJPEG on CUDA has no DCT scaling, so there the whole
    batch is decoded by decode_batch. What libjpeg-turbo cannot decode goes through decode_batch."""
    from passkit.stream import decode

    images: list[torch.Tensor] = []
    frames = torch.zeros((len(datas), 4), dtype=torch.float64)
    for b, d in enumerate(datas):
        p = params[b]
        try:
            w, h = decode.jpeg_size(d)
            k = min(decode.reduction(float(r[2] - r[0]), float(r[3] - r[1]), (sw, sh))
                    for r, (sh, sw) in zip(p.tolist(), sizes, strict=True))
            box = (float(p[:, 0].min()), float(p[:, 1].min()), float(p[:, 2].max()), float(p[:, 3].max()))
            arr, frame = decode.decode_part(d, (w, h), k, box)
            frames[b] = torch.tensor(frame, dtype=torch.float64)
            images.append(torch.from_numpy(arr).permute(2, 0, 1))
        except (ValueError, OSError):
            images.append(decode_batch([d], "cpu")[0])
            frames[b] = torch.tensor((1.0, 1.0, 0.0, 0.0))
    return images, frames


class DeviceAugment:
    """Batches of `Encoded` samples -> one augmented, normalised tensor per view, on `device`."""

    def __init__(self, specs: Sequence[ViewSpec], device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32, channels_last: bool = True,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        self.specs = tuple(specs)
        self.device = torch.device(device)
        self.dtype, self.channels_last = dtype, channels_last
        self.mean, self.std = tuple(mean), tuple(std)
        # views of one output size are cropped and augmented together
        self.groups: dict[tuple[int, int], list[int]] = {}
        for i, s in enumerate(self.specs):
            self.groups.setdefault(s.size, []).append(i)

    def __call__(self, batch: Sequence[Encoded]) -> list[torch.Tensor]:
        if not batch or not isinstance(batch[0], Encoded):
            raise TypeError("DeviceAugment takes a batch of Encoded samples (the loader with EncodedViews)")
        params = torch.stack([e.params for e in batch])  # [B, V, F], on the CPU
        datas = [e.data for e in batch]
        if self.device.type == "cpu":
            images, frames = decode_crops(datas, params, [s.size for s in self.specs])
        else:
            images, frames = decode_batch(datas, self.device), None
        return self.views(images, params.to(self.device, non_blocking=True), frames)

    def views(self, images: Sequence[torch.Tensor], params: torch.Tensor,
              frames: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Decoded images (uint8 [3, H, W] each; `frames` as in ops.crop_resize_sizes where they
        are not the full-resolution images) and their parameters [B, V, F] -> the V views.
        Every view of every size is cropped from one padded batch of the images' regions."""
        b = len(images)
        sizes = list(self.groups)
        ps = [params[:, idx].transpose(0, 1).reshape(-1, params.shape[-1]) for idx in self.groups.values()]
        p_all = torch.cat(ps)  # view-major within each size, sizes one after another
        index = torch.cat([torch.arange(b).repeat(len(idx)) for idx in self.groups.values()])
        group = torch.cat([torch.full((len(idx) * b,), g) for g, idx in enumerate(self.groups.values())])
        crops = ops.crop_resize_sizes(images, index, p_all[:, 0:4], group, sizes, frames)
        out: list[torch.Tensor | None] = [None] * len(self.specs)
        for x, p, idx in zip(crops, ps, self.groups.values(), strict=True):
            x = self.photometric(x, p, [self.specs[i] for i in idx])
            x = ops.normalize(x, self.mean, self.std).to(self.dtype)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            for j, i in enumerate(idx):
                out[i] = x[j * b:(j + 1) * b]
        return [v for v in out if v is not None]

    def photometric(self, x: torch.Tensor, p: torch.Tensor, specs: Sequence[ViewSpec]) -> torch.Tensor:
        """Flip, colour jitter, grayscale, blur, solarize on the rows whose parameters say so.
        Every operation below touches only the rows it applies to (a masked subset)."""
        flip = p[:, COL["flip"]] > 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        jitter = p[:, COL["jitter"]] > 0.5
        order = p[:, COL["order0"]:COL["order3"] + 1].round().to(torch.int64)
        factors = p[:, COL["brightness"]:COL["hue"] + 1]
        for pos in range(4):
            for op, fn in enumerate(ops.JITTER):
                rows = (jitter & (order[:, pos] == op)).nonzero().flatten()
                if len(rows):
                    x[rows] = fn(x[rows], factors[rows, op])
        rows = (p[:, COL["gray"]] > 0.5).nonzero().flatten()
        if len(rows):
            x[rows] = ops.to_gray(x[rows])
        # kernel size and solarize threshold are per view spec; views of one size share them
        kernel = max(s.blur_kernel for s in specs)
        rows = (p[:, COL["blur"]] > 0.5).nonzero().flatten()
        if len(rows) and kernel > 0:
            x[rows] = ops.gaussian_blur(x[rows], kernel, p[rows, COL["sigma"]])
        rows = (p[:, COL["solarize"]] > 0.5).nonzero().flatten()
        if len(rows):
            x[rows] = ops.solarize(x[rows], specs[0].solarize_threshold / 255.0)
        return x


def prefetch(batches: Iterable[Any], fn: Any, device: torch.device) -> Iterator[Any]:
    """fn(batch) for each batch, one batch ahead: on CUDA the next batch is decoded and augmented
    on a side stream while the caller's stream trains on the current one; elsewhere in order."""
    it = iter(batches)
    if device.type != "cuda":
        for item in it:
            yield fn(item)
        return
    stream = torch.cuda.Stream(device)

    pending: list[Any] = []
    for item in it:
        with torch.cuda.stream(stream):
            pending.append(fn(item))
        if len(pending) == 2:
            yield _ready(pending.pop(0), stream)
    if pending:
        yield _ready(pending.pop(0), stream)


def _ready(out: Any, stream: Any) -> Any:
    """Make the caller's stream wait for `stream`'s work on `out`, and keep the memory alive for it."""
    torch.cuda.current_stream().wait_stream(stream)
    for t in _tensors(out):
        t.record_stream(torch.cuda.current_stream())
    return out


def _tensors(x: Any) -> Iterator[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        yield x
    elif isinstance(x, list | tuple):
        for v in x:
            yield from _tensors(v)

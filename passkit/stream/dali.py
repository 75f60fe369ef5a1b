"""The NVIDIA DALI input pipeline (`passkit validate --loader dali`, `pip install 'passkit[dali]'`).

    specs = view_specs(recipe.transform())              # passkit.recipes.augspec: the recipe's own views
    dl = DaliViews("releases/demo-1.0.0", specs, 256, seed=0, device="cuda", dtype=torch.bfloat16)
    for epoch in range(epochs):
        for views, keys in dl.epoch(epoch):             # one normalised [B, 3, h, w] tensor per view
            ...

What it runs: DALI's `fn.readers.webdataset` over the release's shards, with the index file each
shard has beside it (shards/<name>.idx, passkit.shards.wdsindex; a release from before them gets
them derived into a temporary folder, from the tar headers), split by rank and world size (DALI
reader shards, rotating one rank further every pass, as DALI's readers do) and shuffled through a
buffer; JPEGs decoded with device="mixed" (nvJPEG) on a GPU, "cpu" without one (DALI runs
CPU-only pipelines with device_id=None); then each view's augmentation read off the recipe's
transform (augspec.ViewSpec): random resized crop, colour jitter (brightness, contrast around the
image's mean grey level, saturation towards its grey, hue), grayscale, Gaussian blur with a
per-sample sigma, solarize (each applied to the samples its coin flip picks), flip and
normalisation. Out comes what the device pipeline (recipes/device_augment.py) hands the training
loop: per view a normalised [B, 3, h, w] tensor, channels-last, in `dtype` (bf16 on CUDA, float32
on CPU), plus the batch's sample keys.

Randomness: the pipeline for pass `epoch` of rank `rank` is built with a seed drawn from (seed,
epoch, rank), so the same seed gives the same batches, pass by pass, and a resumed run gets the
pass it resumes at. DALI draws its own random numbers, so DALI batches are deterministic per seed
but not identical to the passkit loader's (the order, the crops and the factors all differ).

Differences from the reference, by design: ColorJitter's four steps run in a fixed order
(brightness, contrast, saturation, hue) where torchvision draws one per sample; DALI's hue is a
rotation in YIQ space, torchvision's a shift in HSV; the crop's attempts follow DALI's sampler
(same area and log-ratio ranges). Pixels are float from decode to output, as on the device path.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from passkit.shards.wdsindex import derive_index, index_path, write_index
from passkit.stream.loader import IMAGENET_MEAN, IMAGENET_STD, Release, dist_info, open_release

if TYPE_CHECKING:
    from passkit.recipes.augspec import ViewSpec

DEFAULT_BUFFER = 1000  # samples in DALI's shuffle buffer (its initial_fill)
MAX_THREADS = 8


def dali_installed() -> bool:
    """Whether NVIDIA DALI can be imported here (checked without importing it)."""
    return importlib.util.find_spec("nvidia") is not None and importlib.util.find_spec("nvidia.dali") is not None


def pass_seed(seed: int, epoch: int, rank: int) -> int:
    """The DALI pipeline seed of one pass of one rank: a hash, so nearby runs do not share streams."""
    digest = hashlib.sha256(f"passkit-dali:{seed}:{epoch}:{rank}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def key_of(source_info: str) -> str:
    """The sample key in DALI's source_info of a webdataset member ("<tar>:<offset>:<key>.<ext>")."""
    return source_info.rsplit(":", 1)[-1].partition(".")[0]


def rank_share(n: int, shard: int, world: int) -> int:
    """How many of `n` samples DALI's reader gives reader shard `shard` of `world` (its split)."""
    return n * (shard + 1) // world - n * shard // world


class DaliViews:
    """A local release as batches of augmented views through an NVIDIA DALI pipeline."""

    def __init__(self, release: Release | Path | str, specs: Sequence[ViewSpec], batch_size: int, *,
                 seed: int = 0, rank: int | None = None, world: int | None = None,
                 device: torch.device | str = "cpu", dtype: torch.dtype | None = None, drop_last: bool = True,
                 threads: int | None = None, buffer: int = DEFAULT_BUFFER,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        if not dali_installed():
            raise RuntimeError("NVIDIA DALI is not installed: pip install 'passkit[dali]'")
        self.release = release if isinstance(release, Release) else open_release(release)
        if self.release.remote:
            raise ValueError(f"{self.release.location}: DALI reads shards from local files; download the "
                             "release first (or use --loader device, which streams it)")
        if rank is None or world is None:
            rank, world = dist_info()
        self.specs, self.batch_size, self.seed = tuple(specs), batch_size, seed
        self.rank, self.world = rank, world
        self.device = torch.device(device)
        self.dtype = dtype or (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        self.drop_last, self.buffer = drop_last, buffer
        # the CPU's share of one rank (torchrun starts LOCAL_WORLD_SIZE of them on this machine)
        local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        self.threads = threads or max(1, min(MAX_THREADS, len(os.sched_getaffinity(0)) // local))
        self.mean = [255.0 * m for m in mean]
        self.std = [255.0 * s for s in std]
        self._scratch: Path | None = None
        self.paths = [str(p) for p in self.release.shards]
        self.index_paths = self._index_files()
        self._epoch = 0

    # -- what the engine asks
    @property
    def num_samples(self) -> int:
        return self.release.num_samples

    def set_epoch(self, epoch: int) -> None:
        self._epoch = epoch

    def __iter__(self) -> Iterator[tuple[list[torch.Tensor], list[str]]]:
        return self.epoch(self._epoch)

    def batches(self, epoch: int) -> int:
        """Batches this rank yields in pass `epoch`: with drop_last the same on every rank (the
        smallest rank share's full batches), else every sample of its share once."""
        n = self.num_samples
        if self.drop_last:
            return (n // self.world) // self.batch_size
        return math.ceil(rank_share(n, self._shard(epoch), self.world) / self.batch_size)

    def _shard(self, epoch: int) -> int:
        return (self.rank + epoch) % self.world

    # -- the index files
    def _index_files(self) -> list[str]:
        """The shards' index files: the release's own where it lists them, else derived here."""
        files = self.release.manifest.get("files") or {}
        root = self.release.root
        out = []
        for ref in self.release.refs:
            rel = index_path(ref.rel)
            if rel in files and (root / rel).is_file():
                out.append(str(root / rel))
                continue
            if self._scratch is None:
                self._scratch = Path(tempfile.mkdtemp(prefix="passkit-dali-index-"))
            dest = self._scratch / Path(rel).name
            write_index(dest, derive_index(root / ref.rel))
            out.append(str(dest))
        return out

    def close(self) -> None:
        if getattr(self, "_scratch", None) is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def __del__(self) -> None:
        self.close()

    # -- the pipeline
    def pipeline(self, epoch: int) -> Any:
        """The DALI pipeline of pass `epoch` on this rank (built, not started)."""
        from nvidia.dali import fn, pipeline_def, types

        gpu = self.device.type == "cuda"
        device_id = (self.device.index or 0) if gpu else None

        @pipeline_def(batch_size=self.batch_size, num_threads=self.threads, device_id=device_id,
                      seed=pass_seed(self.seed, epoch, self.rank), prefetch_queue_depth=2)
        def views() -> Any:
            jpg = fn.readers.webdataset(
                paths=self.paths, index_paths=self.index_paths, ext=["jpg"], missing_component_behavior="error",
                num_shards=self.world, shard_id=self._shard(epoch), random_shuffle=True,
                initial_fill=max(1, min(self.buffer, self.num_samples)), pad_last_batch=True, name="reader")
            info = fn.get_property(jpg, key="source_info")
            image = fn.decoders.image(jpg, device="mixed" if gpu else "cpu", output_type=types.RGB)
            return (*(self._view(image, s, gpu) for s in self.specs), info)

        pipe = views()
        pipe.build()
        return pipe

    def _view(self, image: Any, spec: ViewSpec, gpu: bool) -> Any:
        """One view's graph: crop, colour steps, flip and normalisation (float HWC out)."""
        import nvidia.dali.math as dmath
        from nvidia.dali import fn, types

        def coin(p: float) -> Any:  # 1.0 for the samples a step applies to, else 0.0 (a CPU node)
            return fn.cast(fn.random.coin_flip(probability=p), dtype=types.FLOAT)

        def on_device(node: Any) -> Any:  # per-sample scalars join the images' arithmetic on their device
            return node.gpu() if gpu else node

        def mix(a: Any, b: Any, w: Any) -> Any:  # w * a + (1 - w) * b, w per sample
            return a * w + b * (1.0 - w)

        interp = types.INTERP_CUBIC if spec.interpolation == "bicubic" else types.INTERP_LINEAR
        x = fn.random_resized_crop(image, size=list(spec.size), random_area=list(spec.scale),
                                   random_aspect_ratio=list(spec.ratio), num_attempts=10, interp_type=interp,
                                   antialias=True)
        x = fn.cast(x, dtype=types.FLOAT)

        def gray(v: Any) -> Any:  # ITU-R 601 luma, as torchvision's rgb_to_grayscale
            return v[:, :, 0] * 0.299 + v[:, :, 1] * 0.587 + v[:, :, 2] * 0.114

        if spec.jitter_p > 0:
            on = coin(spec.jitter_p)

            def factor(rng: tuple[float, float] | None, neutral: float) -> Any:
                return None if rng is None else on_device(mix(fn.random.uniform(range=list(rng)), neutral, on))

            b, c, s = factor(spec.brightness, 1.0), factor(spec.contrast, 1.0), factor(spec.saturation, 1.0)
            if b is not None:
                x = dmath.clamp(x * b, 0.0, 255.0)
            if c is not None:  # blend with the image's mean grey level, as torchvision's adjust_contrast
                x = dmath.clamp(mix(x, fn.reductions.mean(gray(x)), c), 0.0, 255.0)
            if s is not None:  # blend with its grey image
                x = dmath.clamp(mix(x, fn.expand_dims(gray(x), axes=[2], new_axis_names="C"), s), 0.0, 255.0)
            if spec.hue is not None:  # torchvision's hue offset is a fraction of the colour circle
                x = dmath.clamp(fn.hue(x, hue=mix(fn.random.uniform(range=list(spec.hue)), 0.0, on) * 360.0),
                                0.0, 255.0)
        if spec.gray_p > 0:
            x = mix(fn.expand_dims(gray(x), axes=[2], new_axis_names="C"), x, on_device(coin(spec.gray_p)))
        if spec.blur_p > 0 and spec.blur_kernel > 0:
            sigma = fn.random.uniform(range=list(spec.blur_sigma))
            x = mix(fn.gaussian_blur(x, window_size=spec.blur_kernel, sigma=sigma), x, on_device(coin(spec.blur_p)))
        if spec.solarize_p > 0:  # invert the pixels at or above the threshold, as torchvision's solarize
            hit = fn.cast(x >= spec.solarize_threshold, dtype=types.FLOAT) * on_device(coin(spec.solarize_p))
            x = x + hit * (255.0 - 2.0 * x)
        mirror = fn.random.coin_flip(probability=spec.flip_p) if spec.flip_p > 0 else 0
        return fn.crop_mirror_normalize(x, dtype=types.FLOAT, output_layout="HWC", mean=self.mean, std=self.std,
                                        mirror=mirror)

    # -- batches
    def epoch(self, epoch: int) -> Iterator[tuple[list[torch.Tensor], list[str]]]:
        """Pass `epoch`: (views, keys) batches. A pipeline per pass: its seed and reader shard are
        the pass's, whatever ran before (and a pass never mixes with the next one's samples)."""
        n = self.batches(epoch)
        if n == 0:
            return
        pipe = self.pipeline(epoch)
        share = rank_share(self.num_samples, self._shard(epoch), self.world)
        removed = self.release.removed
        for i in range(n):
            out = pipe.run()
            keep = self.batch_size
            if not self.drop_last and i == n - 1 and share % self.batch_size:
                keep = share % self.batch_size  # the rest of the last batch is DALI's padding
            keys = [key_of(bytes(out[-1].at(j)).decode("utf-8", "replace")) for j in range(keep)]
            views = [self._tensor(t)[:keep] for t in out[:-1]]
            if removed and any(k in removed for k in keys):  # a removal still in its shard: left out
                rows = torch.tensor([k not in removed for k in keys])
                views = [v[rows.to(v.device)] for v in views]
                keys = [k for k in keys if k not in removed]
            yield views, keys

    def _tensor(self, batch: Any) -> torch.Tensor:
        """A DALI batch of HWC float views -> a [B, 3, h, w] channels-last tensor in self.dtype."""
        from nvidia.dali.plugin.pytorch import feed_ndarray

        dense = batch.as_tensor()
        out = torch.empty(dense.shape(), dtype=torch.float32, device=self.device)
        stream = torch.cuda.current_stream(self.device) if self.device.type == "cuda" else None
        feed_ndarray(dense, out, cuda_stream=stream)
        return out.permute(0, 3, 1, 2).to(self.dtype)  # NHWC memory read as NCHW: channels-last

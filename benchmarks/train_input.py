"""Is validation input-bound? Images/s of the input pipeline, the model step and both together.

    .venv/bin/python benchmarks/train_input.py                      # --quick: tiny models on the CPU
    .venv/bin/python benchmarks/train_input.py --full               # on a GPU: MoCo v2 ResNet-50 bf16
                                                                    #   batch 256, DINO ViT-S/16 multi-crop
    .venv/bin/python benchmarks/train_input.py --cpu-target         # the CPU loader against the cores

For each recipe (moco_v2, then dino with its multi-crop) and each input pipeline (the CPU loader:
workers decode and augment; the device pipeline: workers hand over JPEG bytes and parameters, the
training process decodes and augments batches where the model runs; DALI, where nvidia-dali is
installed: its reader, decoder and augmentations, mixed decode on CUDA, a CPU-only pipeline on a
CPU), images/s (samples, not views) of
  (a) the input pipeline alone (batches taken, the device's work waited for),
  (b) the model step alone (forward, backward, optimizer) on synthetic views already on the device,
  (c) end to end: the engine's loop, input and step together.
Each figure is the median of `--runs` runs, each timed after `--warmup` batches. The data is the
loader benchmark's synthesized photos (benchmarks/loader_vs_webdataset.py: 640-1600 px JPEGs
written as a passkit release, kept between runs). The last line is
`end-to-end / model-only (moco_v2): X.XX`, the CPU loader's on a CPU, the device pipeline's on CUDA.

--cpu-target measures the issue's CPU loader target instead: the loader with the MoCo v2 two-view
augmentation (2 workers) against the number of cores times one core's rate, measured in the same
run, single-threaded, at (i) decoding and cropping the two views and nothing else, each view
with its own cropped decode (the headline denominator), (i') the same crops from one decode of
their union, as the transform does them (a second ratio line, the stricter one), and (ii) the
whole two-view transform; and the torchvision-on-PIL reference transform's one-core rate. It
also prints where the whole transform's time goes, stage by stage (CPU time of one thread).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402
from loader_vs_webdataset import cpu_model, load_average, make_release  # noqa: E402


@dataclass(frozen=True)
class Setup:
    recipe: str
    preset: str  # passkit.recipes.presets name whose recipe config is used
    batch: int
    overrides: dict[str, Any]


def setups(full: bool) -> list[Setup]:
    """--full: the issue's GPU configurations; --quick: tiny models that run in seconds on a CPU
    (the same code paths, numbers that only compare with each other)."""
    from passkit.recipes.multicrop import MultiCropConfig

    if full:
        return [Setup("moco_v2", "full", 256, {"arch": "resnet50", "image_size": 224, "queue": 65536}),
                Setup("dino", "full", 128, {})]
    return [Setup("moco_v2", "smoke", 32, {"arch": "resnet18", "image_size": 64, "queue": 1024}),
            Setup("dino", "smoke", 16, {"crops": MultiCropConfig(large_size=64, small_size=32, n_small=2)})]


def build(setup: Setup) -> Any:
    from passkit.recipes import presets

    p = presets.get(setup.preset, setup.recipe)
    for k, v in setup.overrides.items():
        setattr(p.config, k, v)
    return p, p.build_recipe()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _views_of(batch: Any) -> list[torch.Tensor]:
    views = batch[0]
    return [views] if isinstance(views, torch.Tensor) else list(views)


def _timed(batches: Iterator[Any], n: int, warmup: int, device: torch.device,
           step: Callable[[list[torch.Tensor]], None] | None) -> float:
    """Samples/s over n batches after `warmup` batches (the device's work included)."""
    t0, seen = 0.0, 0
    for i in range(warmup + n):
        if i == warmup:
            _sync(device)
            t0 = time.perf_counter()
        views = _views_of(next(batches))
        if step is not None:
            step(views)
        elif device.type == "cuda":
            views[-1].sum().item()  # wait for the batch, as the step would
        if i >= warmup:
            seen += views[0].shape[0]
    _sync(device)
    return seen / (time.perf_counter() - t0)


def _endless(data: Any) -> Iterator[Any]:
    epoch = 0
    while True:
        yield from data.epoch(epoch)
        epoch += 1


class Step:
    """One training step as the engine runs it (normalise uint8 views, autocast, backward, optimizer)."""

    def __init__(self, preset: Any, recipe: Any, device: torch.device, amp: torch.dtype | None):
        from passkit.recipes.optim import build_optimizer

        self.recipe, self.device, self.amp = recipe, device, amp
        self.model = recipe.build_model().to(device).to(memory_format=torch.channels_last)
        self.opt = build_optimizer(self.model, preset.optim)
        self.n = 0

    def __call__(self, views: list[torch.Tensor]) -> None:
        from contextlib import nullcontext

        from passkit.recipes.augment import normalize

        views = [v if v.is_floating_point() else normalize(v.to(self.device, non_blocking=True)) for v in views]
        ctx = torch.autocast(self.device.type, dtype=self.amp) if self.amp else nullcontext()
        with ctx:
            out = self.recipe.training_step(self.model, views, self.n)
        self.opt.zero_grad(set_to_none=True)
        out.loss.backward()
        self.opt.step()
        self.recipe.after_step(self.model, self.n, 10**6)
        self.n += 1


def synthetic_views(specs: Any, batch: int, device: torch.device, dtype: torch.dtype) -> list[torch.Tensor]:
    return [torch.randn((batch, 3, *s.size), device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
            for s in specs]


def bench_recipe(setup: Setup, root: Path, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    from passkit.recipes.augspec import view_specs
    from passkit.recipes.engine import ReleaseData

    preset, recipe = build(setup)
    amp = torch.bfloat16 if device.type == "cuda" else None
    specs = view_specs(recipe.transform())
    res: dict[str, list[float]] = {}
    step = Step(preset, recipe, device, amp)
    fixed = synthetic_views(specs, setup.batch, device, amp or torch.float32)
    model_only = iter(lambda: (fixed, None), None)
    for _ in range(args.runs):
        res.setdefault("model only", []).append(_timed(model_only, args.batches, args.warmup, device, step))
        print(f"    model only: {res['model only'][-1]:.1f} img/s", flush=True)
        for mode in pipelines():
            data = ReleaseData(root, recipe.transform(), setup.batch, seed=0, num_workers=args.workers,
                               loader_mode=mode)
            data.bind(device, amp or torch.float32)
            for what, fn in (("input only", None), ("end to end", step)):
                t0 = time.perf_counter()
                r = _timed(_endless(data), args.batches, args.warmup, device, fn)
                res.setdefault(f"{mode}: {what}", []).append(r)
                print(f"    {mode}: {what}: {r:.1f} img/s ({time.perf_counter() - t0:.1f} s with start-up; "
                      f"load {load_average():.2f})", flush=True)
    out = {k: statistics.median(v) for k, v in res.items()}
    for k, v in res.items():
        print(f"  {setup.recipe:8s} {k:22s} {out[k]:8.1f} img/s  runs: {', '.join(f'{x:.1f}' for x in v)}", flush=True)
    return out


def dali_status() -> str:
    from passkit.stream.dali import dali_installed

    if not dali_installed():
        return "DALI: skipped (nvidia-dali not installed: pip install 'passkit[dali]')"
    import nvidia.dali

    return f"DALI: measured (nvidia-dali {nvidia.dali.__version__}; mixed decode on CUDA, a CPU-only pipeline on a CPU)"


def pipelines() -> tuple[str, ...]:
    """The input pipelines measured: the CPU loader, the device pipeline, and DALI where installed."""
    from passkit.stream.dali import dali_installed

    return ("cpu", "device", *(("dali",) if dali_installed() else ()))


# ----------------------------------------------------------------------------- the CPU loader target


def one_core_rate(datas: list[bytes], fn: Callable[[bytes], Any], seconds: float) -> float:
    """Images/s of fn on this thread (one core), repeated over `datas` for at least `seconds`."""
    random.seed(0)
    n, t0 = 0, time.perf_counter()
    while True:
        for d in datas:
            fn(d)
        n += len(datas)
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return n / dt


def stage_times(datas: list[bytes], transform: Callable[[bytes], Any], passes: int) -> dict[str, float]:
    """CPU ms per image (this thread's time) of each stage of cpu_augment.JpegViews over `datas`:
    each stage's function is wrapped for the measurement only. Each jitter op is counted over all
    images, so it is weighted by how often it applies; "colour steps" includes them all."""
    from contextlib import ExitStack
    from unittest import mock

    from passkit.recipes import cpu_augment as ca
    from passkit.stream import decode

    spent: dict[str, float] = {}

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def run(*a: Any, **k: Any) -> Any:
            t0 = time.thread_time()
            try:
                return fn(*a, **k)
            finally:
                spent[name] = spent.get(name, 0.0) + time.thread_time() - t0
        return run

    stages = [(decode, "decode_part", "decode (one per sample)"), (decode, "resample", "resample the views"),
              (ca, "colour", "colour + float in, uint8 out, planar"), (ca, "photometric", "colour steps"),
              (ca, "grayscale", "  grayscale"), (ca, "gaussian_blur", "  blur"), (ca, "solarize", "  solarize")]
    with ExitStack() as stack:
        for module, attr, name in stages:
            stack.enter_context(mock.patch.object(module, attr, timed(name, getattr(module, attr))))
        stack.enter_context(mock.patch.object(ca, "JITTER", tuple(timed(f"  {f.__name__}", f) for f in ca.JITTER)))
        random.seed(0)
        t0 = time.thread_time()
        for _ in range(passes):
            for d in datas:
                transform(d)
        spent["whole transform"] = time.thread_time() - t0
    order = [name for _, _, name in stages[:4]] + [f"  {f.__name__}" for f in ca.JITTER] + \
        [name for _, _, name in stages[4:]] + ["whole transform"]
    return {k: spent.get(k, 0.0) / (passes * len(datas)) * 1e3 for k in order}


def cpu_target(root: Path, args: argparse.Namespace) -> float:
    """The loader with MoCo v2's two views (2 workers) / (cores x one core's decode-and-crop rate)."""
    import cv2

    from passkit.recipes.augment import two_views
    from passkit.recipes.augparams import COL, draw
    from passkit.recipes.augspec import view_specs
    from passkit.recipes.cpu_augment import JpegViews
    from passkit.stream import decode, loader

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    reference = two_views(224)
    specs = view_specs(reference)
    fast = JpegViews(specs)
    with tarfile.open(next(iter(sorted((root / "shards").glob("*.tar"))))) as tf:
        datas = [tf.extractfile(m).read() for m in tf.getmembers() if m.name.endswith(".jpg")][:200]  # type: ignore[union-attr]

    def crops_only(d: bytes) -> None:  # the decoding work a two-view sample needs, nothing else
        w, h = decode.jpeg_size(d)
        for s in specs:
            p = draw(s, w, h)
            decode.crop_resize(d, tuple(p[:4]), (s.size[1], s.size[0]), (w, h), p[COL["flip"]] > 0.5)

    def union_crops(d: bytes) -> None:  # the same crops from one decode of their union, as JpegViews does
        w, h = decode.jpeg_size(d)
        rows = [draw(s, w, h) for s in specs]
        decode.crop_resize_views(d, [tuple(p[:4]) for p in rows], [(s.size[1], s.size[0]) for s in specs], (w, h),
                                 [p[COL["flip"]] > 0.5 for p in rows])

    rows: dict[str, list[float]] = {}
    for run in range(args.runs):
        print(f"run {run + 1}/{args.runs}: load {load_average():.2f}", flush=True)
        rows.setdefault("one core: decode+crop 2 views", []).append(one_core_rate(datas, crops_only, args.seconds))
        rows.setdefault("one core: decode union once + crop 2 views", []).append(
            one_core_rate(datas, union_crops, args.seconds))
        rows.setdefault("one core: JpegViews (whole aug)", []).append(one_core_rate(datas, fast, args.seconds))
        rows.setdefault("one core: torchvision on PIL", []).append(
            one_core_rate(datas[:40], lambda d: reference(decode.decode_pil(d)), args.seconds))
        for name, tf_ in (("loader: JpegViews", fast), ("loader: torchvision on PIL", reference)):
            dl = loader(root, args.cpu_batch, transform=tf_, shuffle=True, seed=run, num_workers=cores)
            n = 0
            for i, ((v1, _v2), _meta) in enumerate(dl):
                if i == args.warmup:
                    t0, n = time.perf_counter(), 0
                n += v1.shape[0]
                if name.endswith("PIL") and i >= args.warmup + 4:
                    break  # the slow path: a few batches are enough for its rate
            rows.setdefault(name, []).append(n / (time.perf_counter() - t0))
    med = {k: statistics.median(v) for k, v in rows.items()}
    print(f"JpegViews per image, CPU ms on one thread (5 passes over {len(datas)} photos; load {load_average():.2f}):")
    for k, v in stage_times(datas, fast, 5).items():
        print(f"  {k:40s} {v:6.3f}")
    print(f"CPU: {cpu_model()}; {cores} cores; decoder {decode.backend()}; batch {args.cpu_batch}; "
          f"load average now {load_average():.2f}")
    for k, v in rows.items():
        print(f"  {k:42s} {med[k]:7.1f} img/s  runs: {', '.join(f'{x:.1f}' for x in v)}")
    target = med["loader: JpegViews"] / (cores * med["one core: decode+crop 2 views"])
    print(f"loader / (cores x one core's whole-aug rate): "
          f"{med['loader: JpegViews'] / (cores * med['one core: JpegViews (whole aug)']):.2f} (parallel efficiency)")
    print(f"JpegViews / torchvision-on-PIL, loader: {med['loader: JpegViews'] / med['loader: torchvision on PIL']:.2f}")
    print(f"CPU loader (MoCo v2 two views) / (cores x one core's decode-union-once-and-crop rate): "
          f"{med['loader: JpegViews'] / (cores * med['one core: decode union once + crop 2 views']):.2f}")
    print(f"CPU loader (MoCo v2 two views) / (cores x one core's decode-and-crop rate): {target:.2f}")
    return target


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="tiny models and batches for a CPU (default)")
    size.add_argument("--full", action="store_true", help="the issue's sizes, for a GPU")
    ap.add_argument("--cpu-target", action="store_true", help="the CPU loader against cores x one core's rate")
    ap.add_argument("--recipes", default="moco_v2,dino")
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--shard-size", type=int, default=500)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--batches", type=int, default=0, help="timed batches per run (default: 4 quick, 20 full)")
    ap.add_argument("--warmup", type=int, default=0, help="untimed batches first (default: 1 quick, 5 full)")
    ap.add_argument("--workers", type=int, default=0, help="loader workers (default: the CPUs this process may use)")
    ap.add_argument("--cpu-batch", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=3.0, help="--cpu-target: seconds per one-core rate")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "passkit-bench")
    args = ap.parse_args(argv)
    args.batches = args.batches or (20 if args.full else 4)
    args.warmup = args.warmup or (5 if args.full else 1)
    args.workers = args.workers or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2)
    root = make_release(args.data, args.images, args.shard_size)
    print(f"release {root}; CPU: {cpu_model()}; load average {load_average():.2f}", flush=True)
    if args.cpu_target:
        cpu_target(root, args)
        return
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        print(f"device: {torch.cuda.get_device_name(device)}, bf16 autocast", flush=True)
    else:
        print(f"device: CPU ({torch.get_num_threads()} torch threads), fp32", flush=True)
    wanted = args.recipes.split(",")
    results = {}
    for setup in setups(args.full):
        if setup.recipe in wanted:
            print(f"{setup.recipe}: batch {setup.batch}, {args.workers} workers, {args.runs} runs of "
                  f"{args.batches} batches after {args.warmup}", flush=True)
            results[setup.recipe] = bench_recipe(setup, root, args, device)
    print(dali_status())
    print(f"load average at the end {load_average():.2f}")
    mode = "device" if device.type == "cuda" else "cpu"
    for name, r in results.items():
        for m in pipelines():
            print(f"end-to-end / model-only ({name}, {m} pipeline): {r[f'{m}: end to end'] / r['model only']:.2f}")
    if "moco_v2" in results:
        r = results["moco_v2"]
        print(f"end-to-end / model-only (moco_v2): {r[f'{mode}: end to end'] / r['model only']:.2f}")


if __name__ == "__main__":
    main()

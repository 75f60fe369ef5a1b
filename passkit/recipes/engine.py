"""The training engine: any `Recipe` on a release (passkit.stream) or an in-memory image tensor.

    from passkit.recipes.engine import Trainer, TrainConfig, ReleaseData
    from passkit.recipes.moco import MoCoV2, MoCoConfig
    recipe = MoCoV2(MoCoConfig(arch="resnet18", small_stem=True, image_size=64, queue=4096))
    data = ReleaseData("releases/demo-1.0.0", recipe.transform(), batch_size=64)
    result = Trainer(recipe, data, TrainConfig(steps=1000, out_dir=Path("work/run"))).fit()

What it does: device placement and AMP (bf16 autocast on CUDA, off on CPU unless asked), DDP when
started by torchrun (WORLD_SIZE > 1: process group, DistributedDataParallel, rank-0-only logging
and checkpoints), the optimizer from passkit.recipes.optim (32- or 8-bit), a per-step cosine
learning-rate schedule with linear warmup, gradient clipping, atomic checkpoints with resume,
rich progress, metrics to `metrics.jsonl` and similarity histograms to `similarity.jsonl`.

Training is counted in steps, and the data is an endless sequence of passes ("epochs", each with
its own shuffle seed): every rank runs exactly `steps` steps, which keeps DDP in lockstep. For a
release, passkit.stream plans samples, not shards: each rank gets an equal share of every pass
(balance="pad" repeats a few samples), so ranks also see the same number of batches per pass.
Augmentation randomness comes from the loader, seeded per batch from (seed, pass, rank, batch
number), so it does not depend on `num_workers` nor on the engine's RNG; the engine seeds torch,
numpy and random with seed + rank for what the recipe draws (initialisation, MoCo's key
shuffles, MAE's masks). Resume restores model, optimizer, schedule, that RNG and the pass counter,
and continues at the start of the next pass: the loader could resume mid-pass (its state_dict),
but the checkpoint does not record its position, so the rest of the interrupted pass is skipped.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from passkit.atomic import atomic_path
from passkit.recipes.augment import normalize
from passkit.recipes.evaluate import rankme, similarity_histogram
from passkit.recipes.optim import OptimConfig, build_optimizer, state_report
from passkit.recipes.recipe import Recipe, StepOutput, unwrap

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
SIMILARITY = "similarity.jsonl"


class EngineError(RuntimeError):
    pass


# ----------------------------------------------------------------------------- data


class DataSource(Protocol):
    """Batches of views for one pass over the data: each item is (list of uint8 view tensors, extra)."""

    batch_size: int

    def epoch(self, epoch: int) -> Iterable[tuple[Sequence[torch.Tensor], Any]]: ...


class ReleaseData:
    """A release folder through passkit.stream.loader, with the recipe's multi-view transform.

    loader="cpu": workers decode and augment (uint8 views; the engine normalises on the device).
    A recipe transform the spec reader understands runs as cpu_augment.JpegViews (one reduced-scale
    decode of the part a sample's views cover, the photometric steps in OpenCV: about 7x the images/s
    of torchvision on PIL on one core), with the device pipeline's parameter draws; any other
    transform as given.
    loader="device": workers only read tars and draw each view's parameters; the training
    process decodes and augments whole batches on the training device
    (passkit.recipes.device_augment), one batch ahead on CUDA, and hands over normalised views.
    loader="dali": an NVIDIA DALI pipeline (passkit.stream.dali.DaliViews: its reader, decoder and
    augmentations, on the training device or, without a GPU, on the CPU) hands over normalised
    views and the batch's keys; it is built when the Trainer binds the device.
    genview: a passkit.stream.pairs.GenViewPairing: one view of a sample drawn from its generated
    variation (CPU path only: each view needs its own decoded image).
    """

    def __init__(self, release_dir: Path | str, transform: Callable[[Any], Any], batch_size: int,
                 *, seed: int = 0, num_workers: int = 0, shuffle: bool = True, drop_last: bool = True,
                 loader_mode: str = "cpu", genview: Any = None):
        from passkit.stream import loader

        if loader_mode not in ("cpu", "device", "dali"):
            raise EngineError(f"loader_mode must be cpu, device or dali, not {loader_mode!r}")
        if genview is not None and loader_mode != "cpu":
            raise EngineError("GenView pairing runs on the cpu input path only (each view needs its own "
                              "decoded image); use loader_mode='cpu'")
        self.batch_size, self.loader_mode = batch_size, loader_mode
        self.augment: Any = None
        if loader_mode == "dali":
            self._dali_setup(release_dir, transform, batch_size, seed, drop_last)
            return
        if loader_mode == "device":
            from passkit.recipes.augparams import EncodedViews
            from passkit.recipes.augspec import view_specs

            self.specs = view_specs(transform)  # ValueError for a step the device cannot run
            transform = EncodedViews(self.specs)
        elif genview is None:
            from passkit.recipes.cpu_augment import fast_views

            transform = fast_views(transform)
        # GenView pairing keeps the recipe's per-view torchvision transforms: each view is made from
        # its own image (the original or its variation), which the fused JPEG views cannot do
        options = dict(transform=transform, shuffle=shuffle, seed=seed, num_workers=num_workers,
                       drop_last=drop_last, pin_memory=torch.cuda.is_available())
        if genview is not None:
            from passkit.stream.pairs import paired_loader

            self.loader = paired_loader(release_dir, genview, batch_size, **options)
        else:
            self.loader = loader(release_dir, batch_size, **options)
        n = self.loader.num_samples
        if drop_last and n < batch_size:
            raise EngineError(
                f"{release_dir} holds {n} samples, fewer than one batch of {batch_size}: "
                f"lower the batch size (or use a preset made for tiny releases, e.g. --preset smoke)"
            )

    def _dali_setup(self, release_dir: Path | str, transform: Any, batch_size: int, seed: int,
                    drop_last: bool) -> None:
        """--loader dali: the views' settings and the release now (errors before any work), the
        DALI pipeline once the Trainer binds a device."""
        from passkit.recipes.augspec import view_specs
        from passkit.stream import open_release

        self.specs = view_specs(transform)  # ValueError for a step DALI's graph does not have
        self.release = open_release(release_dir)
        if self.release.remote:
            raise EngineError(f"{release_dir}: DALI reads shards from local files; download the release "
                              "first, or use --loader device or cpu, which stream it")
        self.seed, self.drop_last = seed, drop_last
        self.loader: Any = None
        n = self.release.num_samples
        if drop_last and n < batch_size:
            raise EngineError(f"{release_dir} holds {n} samples, fewer than one batch of {batch_size}: "
                              f"lower the batch size (or use a preset made for tiny releases, e.g. --preset smoke)")

    @property
    def num_samples(self) -> int:
        return self.release.num_samples if self.loader_mode == "dali" else self.loader.num_samples

    def bind(self, device: torch.device, dtype: torch.dtype) -> None:
        """Where the views go and in which dtype (the Trainer calls this once it has a device)."""
        if self.loader_mode == "dali":
            from passkit.stream.dali import DaliViews

            self.loader = DaliViews(self.release, self.specs, self.batch_size, seed=self.seed, device=device,
                                    dtype=dtype, drop_last=self.drop_last)
        if self.loader_mode == "device":
            from passkit.recipes.device_augment import DeviceAugment

            self.augment = DeviceAugment(self.specs, device=device, dtype=dtype)

    def epoch(self, epoch: int) -> Iterable[tuple[Sequence[torch.Tensor], Any]]:
        if self.loader_mode == "dali":  # (views, keys) batches, the views normalised on the device
            if self.loader is None:
                self.bind(torch.device("cpu"), torch.float32)
            return self.loader.epoch(epoch)
        self.loader.set_epoch(epoch)
        if self.loader_mode == "cpu":
            return self.loader
        if self.augment is None:
            self.bind(torch.device("cpu"), torch.float32)
        from passkit.recipes.device_augment import prefetch

        aug = self.augment
        return prefetch(self.loader, lambda b: (aug(b[0]), b[1]), aug.device)


class _TensorViews(Dataset):
    def __init__(self, images: torch.Tensor, transform: Callable[[Any], Any]):
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        return self.transform(self.images[i]), i


class TensorData:
    """uint8 images [N,3,H,W] in memory (the synthetic set), with the recipe's transform."""

    def __init__(self, images: torch.Tensor, transform: Callable[[Any], Any], batch_size: int,
                 *, seed: int = 0, num_workers: int = 0):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise EngineError("TensorData wants uint8 images shaped [N, 3, H, W]")
        self.batch_size, self.seed, self.num_workers = batch_size, seed, num_workers
        self.ds = _TensorViews(images, transform)
        self.num_samples = len(images)

    def epoch(self, epoch: int) -> Iterable[tuple[Sequence[torch.Tensor], Any]]:
        g = torch.Generator().manual_seed(self.seed * 100003 + epoch)
        return DataLoader(self.ds, batch_size=self.batch_size, shuffle=True, generator=g, drop_last=True,
                          num_workers=self.num_workers, persistent_workers=False)


# ----------------------------------------------------------------------------- config and result


@dataclass(slots=True)
class TrainConfig:
    steps: int = 1000
    optim: OptimConfig = field(default_factory=OptimConfig)
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0  # cosine floor as a fraction of the base lr
    amp: str = "auto"  # auto: bf16 on CUDA, fp32 on CPU; "bf16" or "off" to force
    device: str = "auto"
    seed: int = 0
    grad_clip: float | None = None
    log_every: int = 10
    hist_points: int = 5  # similarity histograms recorded at this many points over training
    checkpoint_every: int = 0  # steps; 0: only at the end
    out_dir: Path | None = None  # checkpoint, metrics.jsonl, similarity.jsonl
    resume: bool = True
    progress: bool = True
    deterministic: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["out_dir"] = str(self.out_dir) if self.out_dir else None
        return d


@dataclass(slots=True)
class TrainResult:
    model: nn.Module  # unwrapped, on the training device
    steps: int
    seconds: float  # wall time of this run (not of earlier, resumed runs)
    images_per_s: float  # samples (not views) per second, all ranks together
    history: list[dict[str, Any]]  # logged metrics, one dict per log step
    histograms: list[dict[str, Any]]  # similarity histograms over training
    resumed_from: int | None
    optimizer_state: dict[str, Any]  # state_report(...).to_dict()
    device: str

    def final(self, key: str = "loss", frac: float = 0.1) -> float:
        """Mean of a logged metric over the last `frac` of the log (at least one entry)."""
        vals = [h[key] for h in self.history if key in h]
        if not vals:
            return float("nan")
        n = max(1, int(len(vals) * frac))
        return float(np.mean(vals[-n:]))


# ----------------------------------------------------------------------------- helpers


def lr_factor(step: int, total: int, warmup: int, min_ratio: float = 0.0) -> float:
    """Linear warmup to 1 over `warmup` steps, then cosine to `min_ratio` at `total`."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass(slots=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def is_distributed() -> bool:
    """Whether this process is one rank of several in an initialised process group: the test the
    recipes make before gathering keys, reducing Sinkhorn sums or averaging DINO's centre."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def setup_distributed(device: str) -> DistInfo:
    """Join the process group torchrun describes (WORLD_SIZE > 1); no-op otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and device != "cpu"
        if use_cuda:
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return DistInfo(rank, world, local)


def pick_device(device: str, info: DistInfo) -> torch.device:
    if device == "auto":
        return torch.device(f"cuda:{info.local_rank}" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and info.world > 1:
        return torch.device(f"cuda:{info.local_rank}")
    return torch.device(device)


def _to_float(v: Any) -> float:
    return float(v.detach().float().item()) if torch.is_tensor(v) else float(v)


def _atomic_save(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


# ----------------------------------------------------------------------------- the trainer


class Trainer:
    def __init__(self, recipe: Recipe, data: DataSource, cfg: TrainConfig,
                 on_log: Callable[[dict[str, Any]], None] | None = None):
        if not isinstance(recipe, Recipe):
            raise EngineError(f"{type(recipe).__name__} does not implement passkit.recipes.recipe.Recipe")
        if cfg.steps < 1:
            raise EngineError(f"steps must be >= 1, got {cfg.steps}")
        self.recipe, self.data, self.cfg, self.on_log = recipe, data, cfg, on_log
        self.dist = setup_distributed(cfg.device)
        self.device = pick_device(cfg.device, self.dist)
        amp = cfg.amp
        if amp not in ("auto", "bf16", "off"):
            raise EngineError(f"amp must be auto, bf16 or off, not {amp!r}")
        self.amp_dtype = torch.bfloat16 if (amp == "bf16" or (amp == "auto" and self.device.type == "cuda")) else None

    # -- checkpoint
    def _ckpt_path(self) -> Path | None:
        return self.cfg.out_dir / CHECKPOINT if self.cfg.out_dir else None

    def save(self, model: nn.Module, opt: torch.optim.Optimizer, step: int, epoch: int,
             history: list[dict[str, Any]], hists: list[dict[str, Any]]) -> None:
        path = self._ckpt_path()
        if path is None or not self.dist.main:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_save({
            "step": step, "epoch": epoch, "recipe": self.recipe.describe(), "train": self.cfg.to_dict(),
            "model": unwrap(model).state_dict(), "optimizer": opt.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
            "history": history, "histograms": hists,
        }, path)

    def _load(self, model: nn.Module, opt: torch.optim.Optimizer) -> dict[str, Any] | None:
        path = self._ckpt_path()
        if path is None or not self.cfg.resume or not path.is_file():
            return None
        ck = torch.load(path, map_location=self.device, weights_only=False)
        if ck.get("recipe", {}).get("recipe") != self.recipe.describe().get("recipe"):
            raise EngineError(f"{path} was written by recipe {ck.get('recipe', {}).get('recipe')!r}, not "
                              f"{self.recipe.name!r}: use another out_dir or resume=False")
        unwrap(model).load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        rng = ck["rng"]
        torch.set_rng_state(rng["torch"].cpu())
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        if rng.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([t.cpu() for t in rng["cuda"]])
        return ck

    # -- batches
    def _batches(self, start_epoch: int) -> Iterator[tuple[int, Sequence[torch.Tensor]]]:
        epoch = start_epoch
        while True:
            n = 0
            for views, _extra in self.data.epoch(epoch):
                if isinstance(views, torch.Tensor):
                    views = [views]
                n += 1
                yield epoch, views
            if n == 0:
                raise EngineError(
                    f"rank {self.dist.rank} got no full batch in pass {epoch}: the data holds fewer samples "
                    f"(per rank, under DDP) than one batch of {self.data.batch_size} needs"
                )
            epoch += 1

    def fit(self) -> TrainResult:
        cfg, recipe = self.cfg, self.recipe
        seed_everything(cfg.seed + self.dist.rank)
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        model = recipe.build_model().to(self.device)
        bind = getattr(self.data, "bind", None)
        if bind is not None:
            bind(self.device, self.amp_dtype or torch.float32)
        inner = model
        if self.dist.world > 1:
            model = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        opt = build_optimizer(inner, OptimConfig(**{**asdict(cfg.optim)}))
        for g in opt.param_groups:
            g["base_lr"] = g["lr"]

        history: list[dict[str, Any]] = []
        hists: list[dict[str, Any]] = []
        start, epoch, resumed = 0, 0, None
        ck = self._load(model, opt)
        if ck is not None:
            start, epoch, resumed = int(ck["step"]), int(ck["epoch"]) + 1, int(ck["step"])
            history, hists = list(ck.get("history", [])), list(ck.get("histograms", []))
        self._rewrite_logs(history, hists)

        hist_at = {round(i * (cfg.steps - 1) / max(1, cfg.hist_points - 1)) for i in range(cfg.hist_points)}
        batches = self._batches(epoch)
        model.train()
        t0 = time.perf_counter()
        seen = 0
        last_t, last_seen = t0, 0
        progress = self._progress(start)
        out: StepOutput | None = None
        step = start
        try:
            for step in range(start, cfg.steps):
                epoch, views = next(batches)
                f = lr_factor(step, cfg.steps, cfg.warmup_steps, cfg.min_lr_ratio)
                for g in opt.param_groups:
                    g["lr"] = g["base_lr"] * f
                # the device pipeline hands over views already normalised on the device
                views = [v if v.is_floating_point() else normalize(v.to(self.device, non_blocking=True))
                         for v in views]
                ctx = torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype else nullcontext()
                with ctx:
                    out = recipe.training_step(model, views, step)
                if not torch.isfinite(out.loss):
                    raise EngineError(f"loss is {out.loss.item()} at step {step}: lower the learning rate "
                                      f"(now {opt.param_groups[0]['lr']:.3g}) or enable warmup")
                opt.zero_grad(set_to_none=True)
                out.loss.backward()
                if cfg.grad_clip:
                    nn.utils.clip_grad_norm_(inner.parameters(), cfg.grad_clip)
                opt.step()
                recipe.after_step(inner, step, cfg.steps)
                seen += views[0].shape[0] * self.dist.world
                done = step + 1
                if step in hist_at and out.pos_sim is not None and out.neg_sim is not None:
                    h = {"step": done, **similarity_histogram(out.pos_sim, out.neg_sim)}
                    hists.append(h)
                    self._append(SIMILARITY, h)
                if done % cfg.log_every == 0 or done == cfg.steps:
                    now = time.perf_counter()
                    row = {"step": done, "epoch": epoch, "loss": _to_float(out.loss),
                           "lr": opt.param_groups[0]["lr"],
                           "images_per_s": (seen - last_seen) / max(now - last_t, 1e-9)}
                    row.update({k: _to_float(v) for k, v in out.metrics.items()})
                    if out.embeddings is not None and out.embeddings.shape[0] > 1:
                        row["rankme"] = rankme(out.embeddings.float())
                    last_t, last_seen = now, seen
                    history.append(row)
                    self._append(METRICS, row)
                    if self.on_log and self.dist.main:
                        self.on_log(row)
                    if progress:
                        progress[0].update(progress[1], completed=done,
                                           stats=f"loss {row['loss']:.3f} · {row['images_per_s']:.0f} img/s")
                if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.steps:
                    self.save(model, opt, done, epoch, history, hists)
            final_step = cfg.steps
            self.save(model, opt, final_step, epoch, history, hists)
        finally:
            if progress:
                progress[0].stop()
        seconds = time.perf_counter() - t0
        return TrainResult(
            model=inner, steps=cfg.steps, seconds=seconds, images_per_s=seen / max(seconds, 1e-9),
            history=history, histograms=hists, resumed_from=resumed,
            optimizer_state=state_report(opt).to_dict(), device=str(self.device),
        )

    # -- logs
    def _append(self, name: str, row: dict[str, Any]) -> None:
        if self.cfg.out_dir is None or not self.dist.main:
            return
        with open(self.cfg.out_dir / name, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")

    def _rewrite_logs(self, history: list[dict[str, Any]], hists: list[dict[str, Any]]) -> None:
        """Start metrics files that agree with the checkpoint (a crash may have logged further)."""
        if self.cfg.out_dir is None or not self.dist.main:
            return
        self.cfg.out_dir.mkdir(parents=True, exist_ok=True)
        for name, rows in ((METRICS, history), (SIMILARITY, hists)):
            (self.cfg.out_dir / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

    def _progress(self, start: int) -> Any:
        if not self.cfg.progress or not self.dist.main:
            return None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        p = Progress(TextColumn(f"[bold blue]{self.recipe.name}"), BarColumn(), MofNCompleteColumn(),
                     TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), console=Console(stderr=True))
        p.start()
        return p, p.add_task("train", total=self.cfg.steps, completed=start, stats="")

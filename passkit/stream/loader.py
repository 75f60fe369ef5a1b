"""Training loader: a release's WebDataset shards as batches of (images, metadata).

    from passkit.stream import loader
    dl = loader("releases/demo-1.0.0", batch_size=64, shuffle=True, seed=0, num_workers=4)
    for epoch in range(epochs):
        dl.set_epoch(epoch)              # a new, reproducible order every epoch
        for images, metas in dl:         # images: uint8 tensor [B, 3, 224, 224]; metas: list of dicts
            ...

Images and batching. The default transform resizes the shorter side to `image_size` (224) and
center-crops to a square, then converts to a uint8 CHW tensor (torchvision.transforms.v2), so
images of any size stack into one batch tensor. Pass `image_size=None` for native sizes (stacking
then only works if all images in a batch share a size, or with `batch_size=None`), or pass your own
`transform` (PIL RGB image in; a tensor, or a list/tuple of tensors for multi-crop recipes, out).
Each transform output must have the same shape within a batch. `metas` is the list of the samples'
`<key>.json` dicts (title, creator, licence, attribution, ...), so attribution travels with data.

Removals listed in the manifest (takedowns issued after publication) are skipped at read time.

Order and determinism. Without `shuffle` samples come in shard order (sorted by key). With
`shuffle`, the shard order is permuted and a sample shuffle buffer is drawn from RNGs seeded by
(seed, epoch, rank, worker): the same seed and epoch give the same order, and `set_epoch` changes
it. Workers get whole shards (webdataset.split_by_worker); under torch.distributed, ranks get
whole shards too (webdataset.split_by_node) -- not yet balanced, so ranks may see different sample
counts. Balanced DDP splitting, mid-epoch resume and fast decode build on `ReleaseDataset`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset

DEFAULT_IMAGE_SIZE = 224
DEFAULT_BUFFER = 1000


@dataclass(frozen=True, slots=True)
class Release:
    """What a reader needs from a release: where the shards are and which keys are removed."""

    root: Path
    manifest: dict[str, Any]
    shards: tuple[Path, ...]  # absolute paths, in manifest order
    shard_samples: tuple[int, ...]  # samples per shard, from the manifest
    removed: frozenset[str]

    @property
    def name(self) -> str:
        return str(self.manifest.get("name", ""))

    @property
    def num_samples(self) -> int:
        """Samples in the shards per the manifest (removed keys still in the shards included)."""
        return sum(self.shard_samples)

    @property
    def urls(self) -> list[str]:
        return [str(p) for p in self.shards]


def open_release(release_dir: Path | str) -> Release:
    """Read manifest.json of a release folder; raises FileNotFoundError / ValueError clearly."""
    root = Path(release_dir).resolve()
    path = root / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{root}: no manifest.json; is this a release folder?")
    m = json.loads(path.read_text(encoding="utf-8"))
    shards, counts = [], []
    for s in m.get("shards") or []:
        rel = s["path"]
        p = (root / rel).resolve()
        if not p.is_relative_to(root) or not rel.startswith("shards/"):
            raise ValueError(f"{path}: shard path {rel!r} leaves the release folder")
        shards.append(p)
        counts.append(int(s.get("samples", 0)))
    if not shards:
        raise ValueError(f"{path}: the release lists no shards")
    removed = frozenset(r["key"] for r in m.get("removals") or [])
    return Release(root, m, tuple(shards), tuple(counts), removed)


# ----------------------------------------------------------------------------- transforms, collate


def default_transform(image_size: int | None = DEFAULT_IMAGE_SIZE) -> Callable[[Any], torch.Tensor]:
    """PIL RGB -> uint8 [3, S, S]: shorter side resized to S, center crop (S=None: native size)."""
    from torchvision.transforms import v2

    steps: list[Any] = []
    if image_size is not None:
        steps += [v2.Resize(image_size, antialias=True), v2.CenterCrop(image_size)]
    steps.append(v2.PILToTensor())
    return v2.Compose(steps)


def _stack(items: Sequence[Any]) -> Any:
    first = items[0]
    if isinstance(first, torch.Tensor):
        shapes = {tuple(t.shape) for t in items}
        if len(shapes) > 1:
            raise ValueError(
                f"cannot batch images of different shapes {sorted(shapes)}; use image_size=... "
                "or a transform that gives same-size tensors, or batch_size=None"
            )
        return torch.stack(list(items))
    if isinstance(first, list | tuple):  # multi-crop: one stacked tensor per view
        return [_stack([it[i] for it in items]) for i in range(len(first))]
    return list(items)


def collate(samples: Sequence[tuple[Any, dict[str, Any]]]) -> tuple[Any, list[dict[str, Any]]]:
    """(images stacked into one tensor -- or one per view --, metadata as a list of dicts)."""
    images = [s[0] for s in samples]
    metas = [s[1] for s in samples]
    return _stack(images), metas


# ----------------------------------------------------------------------------- dataset


def _rng(*parts: object) -> random.Random:
    return random.Random(":".join(map(str, parts)))  # str seeds hash deterministically (sha512)


class ReleaseDataset(IterableDataset):
    """An iterable over a release: (image, meta) samples, or (images, metas) batches.

    The webdataset pipeline is built in `__iter__`, inside each DataLoader worker, from the
    dataset's state (seed, epoch), so the order is a pure function of (seed, epoch, rank, worker).
    """

    def __init__(
        self,
        release: Release,
        *,
        batch_size: int | None = None,
        transform: Callable[[Any], Any] | None = None,
        image_size: int | None = DEFAULT_IMAGE_SIZE,
        shuffle: bool = False,
        seed: int = 0,
        buffer_size: int = DEFAULT_BUFFER,
        drop_last: bool = False,
        apply_removals: bool = True,
        split_by_node: bool = True,
        handler: Callable[[Exception], bool] = wds.reraise_exception,
    ):
        super().__init__()
        self.release = release
        self.batch_size = batch_size
        self.transform = transform if transform is not None else default_transform(image_size)
        self.shuffle = shuffle
        self.seed = seed
        self.buffer_size = buffer_size
        self.drop_last = drop_last
        self.removed = release.removed if apply_removals else frozenset()
        self.split_by_node = split_by_node
        self.handler = handler
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _keep(self, sample: dict[str, Any]) -> bool:
        return sample["__key__"] not in self.removed

    def _to_pair(self, sample: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        return self.transform(sample["jpg"]), sample["json"]

    def pipeline(self) -> wds.WebDataset:
        rank, _, worker, _ = wds.utils.pytorch_worker_info()
        urls = self.release.urls
        if self.shuffle:
            _rng("shards", self.seed, self.epoch).shuffle(urls)  # same on every rank and worker
        ds = wds.WebDataset(
            urls,
            shardshuffle=False,  # shard order is ours (seeded by seed and epoch), see above
            nodesplitter=wds.split_by_node if self.split_by_node else wds.single_node_only,
            workersplitter=wds.split_by_worker,
            empty_check=False,  # more workers than shards leaves some workers empty
            handler=self.handler,
        )
        if self.removed:
            ds = ds.select(self._keep)
        if self.shuffle and self.buffer_size > 1:
            rng = _rng("samples", self.seed, self.epoch, rank, worker)
            ds = ds.shuffle(self.buffer_size, initial=min(self.buffer_size, 100), rng=rng)
        ds = ds.decode("pilrgb", handler=self.handler).map(self._to_pair, handler=self.handler)
        if self.batch_size:
            ds = ds.batched(self.batch_size, collation_fn=collate, partial=not self.drop_last)
        return ds

    def __iter__(self):
        return iter(self.pipeline())


class ReleaseLoader(DataLoader):
    """A DataLoader over a ReleaseDataset (batching happens in the dataset, in the workers)."""

    dataset: ReleaseDataset

    def set_epoch(self, epoch: int) -> None:
        """Reseed the shuffle for an epoch; call before iterating (workers are not persistent)."""
        self.dataset.set_epoch(epoch)

    @property
    def release(self) -> Release:
        return self.dataset.release

    @property
    def num_samples(self) -> int:
        """Samples the manifest lists; exact for a valid release (removed keys are not in its shards),
        an upper bound when removals were issued after the shards were written."""
        return self.release.num_samples


def loader(
    release_dir: Path | str,
    batch_size: int | None,
    transform: Callable[[Any], Any] | None = None,
    shuffle: bool = False,
    seed: int = 0,
    num_workers: int = 0,
    *,
    image_size: int | None = DEFAULT_IMAGE_SIZE,
    buffer_size: int = DEFAULT_BUFFER,
    drop_last: bool = False,
    apply_removals: bool = True,
    pin_memory: bool = False,
    prefetch_factor: int | None = None,
    handler: Callable[[Exception], bool] = wds.reraise_exception,
) -> ReleaseLoader:
    """A DataLoader yielding (images, metas) batches from a release folder.

    batch_size: samples per batch (None: unbatched (image, meta) pairs); the last batch is partial
        unless drop_last. transform: PIL RGB image -> tensor(s); default: `default_transform(image_size)`
        (shorter side to 224, center crop, uint8 CHW). shuffle/seed: see the module doc; call
        `set_epoch(e)` for a new order each epoch. handler: webdataset exception handler (e.g.
        wds.warn_and_continue to skip undecodable samples; the default raises).
    """
    release = open_release(release_dir)
    ds = ReleaseDataset(
        release,
        batch_size=batch_size,
        transform=transform,
        image_size=image_size,
        shuffle=shuffle,
        seed=seed,
        buffer_size=buffer_size,
        drop_last=drop_last,
        apply_removals=apply_removals,
        handler=handler,
    )
    kw: dict[str, Any] = {}
    if num_workers > 0 and prefetch_factor is not None:
        kw["prefetch_factor"] = prefetch_factor
    return ReleaseLoader(ds, batch_size=None, num_workers=num_workers, pin_memory=pin_memory, **kw)

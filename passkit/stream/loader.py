"""Training loader: a release as batches of (uint8 images, metadata), rank-balanced and resumable.

    from passkit.stream import loader, decode
    dl = loader("releases/demo-1.0.0", batch_size=256, shuffle=True, seed=0, num_workers=8,
                transform=decode.RandomResizedCrop(224))     # fast: crop first, reduced-scale decode
    dl.load_state_dict(saved)                                 # optional: resume mid-epoch, exactly
    for epoch in range(start_epoch, epochs):
        dl.set_epoch(epoch)                                   # a new, reproducible order every epoch
        for images, metas in dl:                              # uint8 [B, 3, 224, 224], list of dicts
            x = passkit.stream.normalize(images, device="cuda")   # float, normalised on the device
            ...
            saved = dl.state_dict()                           # a few numbers: epoch and position

Why it is built this way (the usual shard-loader failures it avoids):

- **Samples, not shards, are planned.** The plan (passkit.stream.plan) numbers every sample of the
  release -- from index.parquet (key + shard per sample; the shard headers are scanned instead when
  it is missing or disagrees with the manifest), minus the manifest's removals -- and deals them out:
  shard order permuted and a shuffle buffer simulated on the ids, all from (seed, epoch). Ranks get
  contiguous, equal-length stretches (`balance="pad"` repeats a few samples, `"drop"` leaves the
  tail out), so every rank has the same number of batches whatever the shard sizes, and DDP never
  hangs on a rank that ran out.
- **Reads by byte offset.** A worker opens a shard once, reads its tar headers (checked like
  passkit.shards.reader: flat regular members only), and then `pread`s exactly the members of the
  samples it was given. No worker reads a sample it does not yield, so workers can share shards and
  batches can be split among them freely: worker w yields batches w, w+W, ..., which is the order
  the DataLoader returns them in -- the output does not depend on num_workers.
- **Exact resume.** `state_dict()` is {epoch, position (batches yielded), plan parameters};
  after `load_state_dict`, the next pass yields exactly the batches the interrupted pass had not
  yielded, in the same order and with the same augmentation randomness: torch, random and numpy
  are seeded per batch from (seed, epoch, rank, batch number) inside the workers (with num_workers=0
  the caller's RNG state is saved and restored around each batch).
- **Fast first batch.** Nothing is scanned up front but index.parquet; a worker touches only the
  shards of its first batch before yielding it. Workers are forked from a fork server that
  imports torch once per process (`worker_context`; started when the loader is made, so it
  loads while the caller sets up): spawned workers each imported it again, every pass, which was
  most of a 2.6-3.8 s first batch; now 0.35-0.4 s, the first pass of a process 1.8 s.
- **Shards stay open** (their tar headers parsed) for as long as the shuffle buffer can hold a
  sample back (`open_shards`), so late samples do not reopen and rescan their shard.
- **Fast decode.** JPEG transforms (passkit.stream.decode: RandomResizedCrop, ResizeCenterCrop,
  ToTensor, Views) get the encoded bytes, choose the crop from the header and decode at reduced DCT
  scale; the default transform is ResizeCenterCrop(image_size). Any other transform gets a decoded
  PIL RGB image (full-resolution decode), as in the first version of this loader.
- **Remote shards.** The release may be a URL (http(s) or anything fsspec opens); shards are read
  through a local cache (`cache_dir`) or, without one, fetched into worker memory. See storage.py.
- **Integrity.** Removals are applied at read time. `verify=True` checks every shard's sha256
  against the manifest once before the first batch; downloaded shards are always checked.

Images and batching: transforms must give same-shape tensors within a batch (or a list/tuple of
tensors per sample for multi-view recipes; each view is stacked separately). `batch_size=None`
yields single (image, meta) pairs. `metas` are the samples' `<key>.json` dicts (title, creator,
licence, attribution, ...), so attribution travels with the data.

Options travel as one `LoaderConfig` record: `loader(...)` builds it from its keyword arguments,
and `ReleaseLoader.from_config(release, config)` takes one directly.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import random
import sys
import sysconfig
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch.utils.data import DataLoader, IterableDataset, default_collate, get_worker_info

from passkit.stream import decode
from passkit.stream.plan import Balance, RankPlan, rank_plan, rng_for
from passkit.stream.storage import (
    ShardIntegrityError,
    ShardPool,
    ShardRef,
    fetch_to_cache,
    is_remote,
    join,
    local_path,
    read_bytes,
    verify_file,
)

DEFAULT_IMAGE_SIZE = 224
DEFAULT_BUFFER = 1000
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SampleError(ValueError):
    """One sample could not be read or decoded: names the sample and its shard, keeps the
    decoder's own error as __cause__, and says how to find every such sample."""


def reraise_exception(exn: Exception) -> bool:
    """Default error handler: raise. A handler that returns True skips the failed sample instead."""
    raise exn


# ----------------------------------------------------------------------------- release


@dataclass(frozen=True, slots=True)
class Release:
    """What a reader needs from a release: where the shards are and which keys are removed."""

    location: str  # release folder path, or URL
    manifest: dict[str, Any]
    refs: tuple[ShardRef, ...]  # in manifest order
    shard_samples: tuple[int, ...]  # samples per shard, from the manifest
    removed: frozenset[str]

    @property
    def remote(self) -> bool:
        return is_remote(self.location)

    @property
    def root(self) -> Path:
        """The local release folder (a remote release has none)."""
        if self.remote:
            raise ValueError(f"{self.location} is a remote release; it has no local folder")
        return local_path(self.location)

    @property
    def name(self) -> str:
        return str(self.manifest.get("name", ""))

    @property
    def num_samples(self) -> int:
        """Samples in the shards per the manifest (removed keys still in the shards included)."""
        return sum(self.shard_samples)

    @property
    def shards(self) -> tuple[Path | str, ...]:
        """Shard locations: absolute paths for a local release, URLs for a remote one."""
        return tuple(r.location if self.remote else Path(r.location) for r in self.refs)

    @property
    def urls(self) -> list[str]:
        return [r.location for r in self.refs]

    def file(self, rel: str) -> str:
        return join(self.location, rel)


def open_release(release_dir: Path | str) -> Release:
    """Read manifest.json of a release folder or URL; raises FileNotFoundError / ValueError clearly."""
    loc = str(release_dir).rstrip("/")
    if not is_remote(loc):
        root = local_path(loc).resolve()
        loc = str(root)
        if not (root / "manifest.json").is_file():
            raise FileNotFoundError(f"{root}: no manifest.json; is this a release folder?")
    path = join(loc, "manifest.json")
    try:
        m = json.loads(read_bytes(path).decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read the manifest ({e})") from e
    refs, counts = [], []
    for s in m.get("shards") or []:
        rel = str(s["path"])
        parts = rel.split("/")
        if not rel.startswith("shards/") or ".." in parts or "\\" in rel or len(parts) != 2:
            raise ValueError(f"{path}: shard path {rel!r} leaves the release folder")
        refs.append(ShardRef(join(loc, rel), rel, s.get("sha256"), s.get("bytes")))
        counts.append(int(s.get("samples", 0)))
    if not refs:
        raise ValueError(f"{path}: the release lists no shards")
    removed = frozenset(r["key"] for r in m.get("removals") or [])
    return Release(loc, m, tuple(refs), tuple(counts), removed)


# ----------------------------------------------------------------------------- the sample catalog


_MASK = (1 << 64) - 1
_BASE = 0x9E3779B97F4A7C15  # odd: its powers mod 2**64 never vanish
_LEN = 0xD6E8FEB86659FD93


def _mix(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def key_hash(key: str) -> int:
    """A 64-bit hash of a key (signed), equal to `key_hashes` of the same key.

    It only checks that a shard's tar and the index agree on which sample sits where, within one
    process tree (it is never stored), so it is chosen to be computable for millions of keys at
    once with numpy: a polynomial over the UTF-8 bytes, the length, and splitmix64's finaliser.
    """
    h, power = 0, 1
    data = key.encode()
    for b in data:
        h = (h + (b + 1) * power) & _MASK
        power = (power * _BASE) & _MASK
    z = _mix(h ^ ((len(data) * _LEN) & _MASK))
    return z - (1 << 64) if z >= 1 << 63 else z


def key_hashes(keys: pa.Array | pa.ChunkedArray, rows: int = 1 << 14) -> np.ndarray:
    """`key_hash` of every key of an Arrow string array, as int64, `rows` keys at a time."""
    arr = keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys
    if arr.null_count:
        raise ValueError("keys must not be null")
    out = np.empty(len(arr), dtype=np.uint64)
    off_type = np.int64 if pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type) else np.int32
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=off_type, count=len(arr) + 1, offset=arr.offset * off_type().itemsize)
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    with np.errstate(over="ignore"):
        for lo in range(0, len(arr), rows):
            off = offsets[lo : lo + rows + 1].astype(np.int64)
            lens = np.diff(off)
            total = int(off[-1] - off[0])
            width = int(lens.max()) if len(lens) else 0
            powers = np.ones(max(width, 1), dtype=np.uint64)
            if width > 1:
                powers[1:] = np.cumprod(np.full(width - 1, _BASE, dtype=np.uint64), dtype=np.uint64)
            pos = np.arange(total, dtype=np.int64) - np.repeat(off[:-1] - off[0], lens)
            terms = (data[off[0] : off[-1]].astype(np.uint64) + np.uint64(1)) * powers[pos]
            h = np.zeros(len(lens), dtype=np.uint64)
            nonempty = lens > 0
            if total:
                h[nonempty] = np.add.reduceat(terms, (off[:-1] - off[0])[nonempty], dtype=np.uint64)
            z = h ^ (lens.astype(np.uint64) * np.uint64(_LEN))
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            out[lo : lo + len(lens)] = z ^ (z >> np.uint64(31))
    return out.view(np.int64)


@dataclass(frozen=True)
class Catalog:
    """Every readable sample, numbered in release order: shard index, position in the shard's tar,
    and a hash of its key (checked against the tar when read). Plain arrays: cheap to send to workers."""

    shard: np.ndarray  # int32
    ordinal: np.ndarray  # int32, position among the shard's samples (removed ones included)
    keyhash: np.ndarray  # int64
    shard_counts: tuple[int, ...]  # readable samples per shard (after removals)
    source: str = "index.parquet"

    def __len__(self) -> int:
        return len(self.shard)


def _read_index(release: Release) -> pa.Table | None:
    """key and shard columns of index.parquet, after checking its sha256 against the manifest.

    A local file is hashed and parsed through one open file, not read into memory whole (a PASS
    index is hundreds of MB); a remote one is fetched whole, as before.
    """
    import pyarrow.parquet as pq

    rel = "index.parquet"
    want = ((release.manifest.get("files") or {}).get(rel) or {}).get("sha256")
    loc = release.file(rel)
    opts = {"read_dictionary": ["shard"], "pre_buffer": False, "buffer_size": 1 << 20}
    try:
        if is_remote(loc):
            raw = read_bytes(loc)
            if want and hashlib.sha256(raw).hexdigest() != want:
                return _mismatch(loc)
            return pq.ParquetFile(io.BytesIO(raw), **opts).read(columns=["key", "shard"])
        with open(local_path(loc), "rb") as f:
            if want:
                h = hashlib.sha256()
                while chunk := f.read(1 << 20):
                    h.update(chunk)
                if h.hexdigest() != want:
                    return _mismatch(loc)
                f.seek(0)
            return pq.ParquetFile(f, **opts).read(columns=["key", "shard"])
    except (OSError, FileNotFoundError):
        return None


def _mismatch(loc: str) -> None:
    warnings.warn(f"{loc} does not match its manifest sha256; scanning shard headers instead", stacklevel=4)
    return None


def _shard_numbers(column: pa.ChunkedArray, rels: list[str]) -> np.ndarray:
    """Per row: the position of its shard among `rels`, -1 for a shard the manifest does not list."""
    want = pa.array(rels, pa.string())
    parts = []
    for chunk in column.chunks:
        if pa.types.is_dictionary(chunk.type):  # a few thousand names looked up, not millions of rows
            table = pc.fill_null(pc.index_in(chunk.dictionary.cast(pa.string()), value_set=want), -1)
            idx = pc.take(table, pc.fill_null(chunk.indices, 0))
            idx = pc.if_else(pc.is_valid(chunk.indices), idx, -1)
        else:
            idx = pc.fill_null(pc.index_in(chunk.cast(pa.string()), value_set=want), -1)
        parts.append(np.asarray(idx, dtype=np.int64))
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def _keys_from_index(release: Release) -> tuple[pa.Array, np.ndarray] | None:
    """(keys, shard of each) in release order -- shards in manifest order, keys sorted within a
    shard (the format) -- from index.parquet; None when it is missing or disagrees with the manifest.

    Columnar: at PASS scale (millions of keys) a Python list per shard took most of the start-up.
    """
    table = _read_index(release)
    if table is None:
        return None
    if table.column("key").null_count:
        warnings.warn(f"{release.file('index.parquet')} has rows without a key; scanning shard headers "
                      "instead (run `passkit audit` on this release)", stacklevel=3)
        return None
    rels: dict[str, int] = {}
    for ref in release.refs:
        rels.setdefault(ref.rel, len(rels))
    shard = _shard_numbers(table.column("shard"), list(rels))
    keys = table.column("key").combine_chunks()
    keep = shard >= 0
    if not keep.all():
        keys, shard = keys.filter(pa.array(keep)), shard[keep]
    if not _in_order(shard, keys):
        t = pa.table({"shard": shard, "key": keys})
        order = pc.sort_indices(t, [("shard", "ascending"), ("key", "ascending")])
        keys, shard = keys.take(order), shard[np.asarray(order)]
    counts = np.bincount(shard, minlength=len(rels))
    for ref, n in zip(release.refs, release.shard_samples, strict=True):
        if counts[rels[ref.rel]] != n:
            warnings.warn(
                f"index.parquet lists {counts[rels[ref.rel]]} samples for {ref.rel}, the manifest {n}; scanning "
                "shard headers instead (run `passkit audit` on this release)", stacklevel=3)
            return None
    if len(rels) == len(release.refs):  # each shard listed once: the sorted rows are the release order
        return keys, shard
    # a shard the manifest lists twice is read twice, as listed
    starts = np.cumsum(counts) - counts
    rows = np.concatenate([np.arange(starts[rels[r.rel]], starts[rels[r.rel]] + counts[rels[r.rel]])
                           for r in release.refs])
    return keys.take(pa.array(rows)), np.repeat(np.arange(len(release.refs)), release.shard_samples)


def _in_order(shard: np.ndarray, keys: pa.Array) -> bool:
    """Rows already grouped by shard in manifest order, keys ascending within a shard (Arrow
    compares UTF-8 bytes: Python's str order)."""
    if len(shard) < 2:
        return True
    step = np.diff(shard)
    if (step < 0).any():
        return False
    same = step == 0
    if not same.any():
        return True
    le = np.asarray(pc.less_equal(keys.slice(0, len(keys) - 1), keys.slice(1)), dtype=bool)
    return bool(le[same].all())


def _keys_from_headers(release: Release, pool: ShardPool) -> tuple[pa.Array, np.ndarray]:
    keys: list[str] = []
    counts = []
    for ref in release.refs:
        ks = pool.get(ref).sample_keys
        keys += ks
        counts.append(len(ks))
    pool.close()
    return pa.array(keys, pa.string()), np.repeat(np.arange(len(release.refs)), counts)


def build_catalog(release: Release, pool: ShardPool, apply_removals: bool = True) -> Catalog:
    """The catalog from index.parquet (or the shard headers when it is missing or inconsistent)."""
    found = _keys_from_index(release)
    source = "index.parquet"
    if found is None:
        found, source = _keys_from_headers(release, pool), "shard headers"
    keys, shard = found
    nref = len(release.refs)
    per_ref = np.bincount(shard, minlength=nref)
    ordinal = np.arange(len(shard), dtype=np.int64) - np.repeat(np.cumsum(per_ref) - per_ref, per_ref)
    removed = release.removed if apply_removals else frozenset()
    if removed and len(keys):
        gone = pa.array(sorted(k for k in removed if isinstance(k, str)), pa.string())
        keep = ~np.asarray(pc.is_in(keys, value_set=gone), dtype=bool)
        keys, shard, ordinal = keys.filter(pa.array(keep)), shard[keep], ordinal[keep]
    counts = np.bincount(shard, minlength=nref)
    return Catalog(shard.astype(np.int32), ordinal.astype(np.int32), key_hashes(keys),
                   tuple(int(c) for c in counts), source)


def open_shards(shard_counts: Sequence[int], buffer_size: int) -> int:
    """How many shards a worker keeps open (their member tables parsed): enough that the samples
    a shuffle buffer holds back rarely find their shard closed and scanned again.

    Every sample waits in a buffer of B samples for a geometric time of mean B, so the last of N
    samples leaves about B ln N samples after it came in, and a worker reads from the shards of
    that many samples at once. With the former fixed 8, a buffer of 1000 over shards of 500
    samples opened each shard 3-5 times a pass, and scanning a shard's tar headers again costs
    as much as decoding 15 of its images. The member tables held stay about B ln N samples' worth
    whatever the shard size; the count is capped for the file descriptors.
    """
    sizes = [c for c in shard_counts if c > 0]
    if buffer_size < 2 or not sizes:
        return 8
    n = sum(sizes)
    span = min(buffer_size, n) * math.log(n) / (n / len(sizes))
    return int(min(256, max(8, math.ceil(span) + 4)))


# ----------------------------------------------------------------------------- transforms, collate


def default_transform(image_size: int | None = DEFAULT_IMAGE_SIZE) -> decode.JpegTransform:
    """JPEG -> uint8 [3, S, S]: shorter side resized to S, center crop, decoded at reduced DCT scale
    (S=None: native size). Also accepts PIL images."""
    return decode.ToTensor() if image_size is None else decode.ResizeCenterCrop(image_size)


def _stack(items: Sequence[Any]) -> Any:
    first = items[0]
    if isinstance(first, torch.Tensor):
        shapes = {tuple(t.shape) for t in items}
        if len(shapes) > 1:
            raise ValueError(
                f"cannot batch images of different shapes {sorted(shapes)}; use image_size=... "
                "or a transform that gives same-size tensors, or batch_size=None"
            )
        # default_collate stacks into shared memory inside a worker, which the batch is moved to
        # anyway to reach the main process: one copy of the pixels fewer than torch.stack.
        return default_collate(list(items))
    if isinstance(first, list | tuple):  # multi-crop: one stacked tensor per view
        return [_stack([it[i] for it in items]) for i in range(len(first))]
    return list(items)


def collate(samples: Sequence[tuple[Any, dict[str, Any]]]) -> tuple[Any, list[dict[str, Any]]]:
    """(images stacked into one tensor -- or one per view --, metadata as a list of dicts)."""
    images = [s[0] for s in samples]
    metas = [s[1] for s in samples]
    return _stack(images), metas


def _as_is(item: Any) -> Any:
    """The DataLoader's per-item hook: batches are complete when they leave the dataset (this skips
    default_convert walking every metadata dict)."""
    return item


def normalize(images: torch.Tensor, device: torch.device | str | None = None,
              mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 [B,3,H,W] -> normalised float on `device`: move the 4x smaller uint8, convert there."""
    x = images.to(device, non_blocking=True) if device is not None else images
    m = torch.tensor(mean, device=x.device, dtype=dtype).view(1, -1, 1, 1) * 255
    s = torch.tensor(std, device=x.device, dtype=dtype).view(1, -1, 1, 1) * 255
    return (x.to(dtype) - m) / s


# ----------------------------------------------------------------------------- options


@dataclass(frozen=True, slots=True)
class LoaderConfig:
    """Every option of a release loader, in one record that is passed through, not re-listed.

    `loader(...)` builds it from its keyword arguments (what each means is in its docstring);
    ReleaseDataset reads the options that choose, read and transform samples, ReleaseLoader the
    DataLoader ones (num_workers, pin_memory, prefetch_factor, multiprocessing_context).
    """

    batch_size: int | None = None
    transform: Callable[[Any], Any] | None = None
    shuffle: bool = False
    seed: int = 0
    num_workers: int = 0
    image_size: int | None = DEFAULT_IMAGE_SIZE
    buffer_size: int = DEFAULT_BUFFER
    drop_last: bool = False
    apply_removals: bool = True
    split_by_node: bool = True
    pin_memory: bool = False
    prefetch_factor: int | None = None
    handler: Callable[[Exception], bool] = reraise_exception
    balance: Balance = "pad"
    rank: int | None = None
    world_size: int | None = None
    cache_dir: Path | str | None = None
    verify: bool = False
    seed_augment: bool = True
    multiprocessing_context: Any = None

    def check(self) -> None:
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size}: use a positive number, or None for single samples")
        if self.balance not in ("pad", "drop"):
            raise ValueError(f"balance={self.balance!r}: use 'pad' (repeat samples) or 'drop' (leave the tail out)")

    def dataloader_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of the DataLoader around the dataset."""
        kw: dict[str, Any] = {"num_workers": self.num_workers, "pin_memory": self.pin_memory}
        if self.num_workers > 0:
            if self.prefetch_factor is not None:
                kw["prefetch_factor"] = self.prefetch_factor
            ctx = self.multiprocessing_context
            kw["multiprocessing_context"] = worker_context(self.transform) if ctx is None else ctx
        return kw


# What a worker needs that is slow to import (torch alone takes 1.5-2 s of CPU here); passkit's
# own modules take tens of milliseconds on top.
_PRELOAD = ("torch", "numpy", "cv2", "pyarrow.compute", "PIL.Image", "simplejpeg")


def _installed(module: str) -> bool:
    """Whether `module` is loaded here from this interpreter's own library folders.

    Only such modules are preloaded by the fork server: it is a fresh interpreter, which on
    Python 3.11 does not get this process's sys.path before preloading, so a module this process
    took from elsewhere (passkit from a checkout on sys.path, say) could be another file there.
    Workers import the rest themselves, after multiprocessing gives them this sys.path.
    """
    path = getattr(sys.modules.get(module), "__file__", None)
    if not path:
        return False
    paths = sysconfig.get_paths()
    roots = {os.path.realpath(paths[k]) for k in ("purelib", "platlib", "stdlib", "platstdlib") if k in paths}
    real = os.path.realpath(path)
    return any(real.startswith(root + os.sep) for root in roots)


def worker_context(transform: Any = None) -> Any:
    """Where DataLoader workers come from: a fork server's context, its server started now (it
    imports torch while the caller goes on), or "spawn" where there is no fork server.

    Forked workers inherit whatever locks the parent's threads held (OpenMP pools of earlier torch
    ops, HTTP servers, Ray) and can hang forever, so workers are never forked from this process.
    Spawned ones are safe, but each imports torch again: 1.5-2 s of CPU per worker per pass here,
    most of the time to the first batch. The fork server is a fresh interpreter that imports it
    once and forks the workers of every later pass, which then start in milliseconds. A process
    has one fork server (passkit's executors use it too): whoever starts it chooses its preloads.
    """
    import multiprocessing
    from multiprocessing import forkserver

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return "spawn"
    ctx = multiprocessing.get_context("forkserver")
    wanted = [*_PRELOAD, getattr(type(transform), "__module__", "") if transform is not None else ""]
    ctx.set_forkserver_preload([m for m in dict.fromkeys(wanted) if m and _installed(m)])
    forkserver.ensure_running()
    return ctx


_OPTIONS = frozenset(f.name for f in fields(LoaderConfig))


# ----------------------------------------------------------------------------- dataset


def dist_info() -> tuple[int, int]:
    """(rank, world_size): torch.distributed when initialised, else torchrun's RANK/WORLD_SIZE, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


@contextlib.contextmanager
def _seeded(seed: int, restore: bool) -> Iterator[None]:
    """Seed torch, random and numpy for one batch; restore the caller's state when `restore`."""
    saved = (torch.random.get_rng_state(), random.getstate(), np.random.get_state()) if restore else None
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % (2**32))
    try:
        yield
    finally:
        if saved is not None:
            torch.random.set_rng_state(saved[0])
            random.setstate(saved[1])
            np.random.set_state(saved[2])


@dataclass
class _Pass:
    """What one pass over the data needs, set in the main process before workers start."""

    plan: RankPlan
    epoch: int
    rank: int
    start: int  # batches of the plan already yielded (resume)


class ReleaseDataset(IterableDataset):
    """An iterable over a release: (image, meta) samples, or (images, metas) batches.

    The pass's plan is made by `prepare(...)` (ReleaseLoader does it in the main process before
    forking workers); iterating without it prepares a pass for the current epoch from position 0.
    Options come as a LoaderConfig, keyword arguments overriding its fields
    (`ReleaseDataset(release, batch_size=4, shuffle=True)` needs no record); they read as
    attributes too (`ds.seed` is `ds.config.seed`), except `transform`, the one in use.
    """

    def __init__(self, release: Release, config: LoaderConfig | None = None, /, **options: Any):
        super().__init__()
        cfg = replace(config or LoaderConfig(), **options)
        cfg.check()
        self.config = cfg
        self.release = release
        self.transform = cfg.transform if cfg.transform is not None else default_transform(cfg.image_size)
        self.wants_jpeg = bool(getattr(self.transform, "wants_jpeg", False))
        self.removed = release.removed if cfg.apply_removals else frozenset()
        self.pool = ShardPool(cfg.cache_dir)
        self.catalog = build_catalog(release, self.pool, cfg.apply_removals)
        self.pool.max_open = open_shards(self.catalog.shard_counts, cfg.buffer_size if cfg.shuffle else 0)
        self.epoch = 0
        self._pass: _Pass | None = None
        self._verified = False

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails: the options, read where they always were
        # (ds.seed, ds.batch_size, ...). Through __dict__, so an instance being unpickled in a
        # worker, which has no `config` yet, gets an AttributeError rather than a recursion.
        cfg = self.__dict__.get("config")
        if cfg is not None and name in _OPTIONS:
            return getattr(cfg, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # -- plan

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def placement(self) -> tuple[int, int]:
        """(rank, world_size) this dataset reads for."""
        if not self.config.split_by_node:
            return 0, 1
        r, w = dist_info()
        rank = self.config.rank if self.config.rank is not None else r
        world = self.config.world_size if self.config.world_size is not None else w
        return rank, world

    def plan(self, epoch: int | None = None) -> RankPlan:
        rank, world = self.placement()
        c = self.config
        return rank_plan(self.catalog.shard_counts, rank=rank, world_size=world, batch_size=c.batch_size,
                         seed=c.seed, epoch=self.epoch if epoch is None else epoch, shuffle=c.shuffle,
                         buffer_size=c.buffer_size, balance=c.balance, drop_last=c.drop_last)

    def __len__(self) -> int:
        """Batches (samples when batch_size is None) this rank yields per epoch."""
        n, (_, world) = len(self.catalog), self.placement()
        per = math.ceil(n / world) if self.config.balance == "pad" else n // world
        bs = self.config.batch_size or 1
        return per // bs if self.config.drop_last else math.ceil(per / bs)

    def prepare(self, start: int = 0) -> _Pass:
        """Plan the pass for the current epoch, skipping `start` batches; verify shards if asked."""
        if self.config.verify and not self._verified:
            self.verify_shards()
        plan = self.plan()
        if not 0 <= start <= len(plan):
            raise ValueError(f"resume position {start} is outside this epoch's {len(plan)} batches")
        self._pass = _Pass(plan, self.epoch, self.placement()[0], start)
        return self._pass

    def verify_shards(self) -> None:
        """sha256 and size of every shard against the manifest (remote ones via the cache, if any)."""
        for ref in self.release.refs:
            if not is_remote(ref.location):
                verify_file(local_path(ref.location), ref.sha256, ref.bytes)
            elif self.pool.cache_dir is not None:
                path = fetch_to_cache(ref.location, self.pool.cache_dir, ref.sha256, ref.bytes)
                verify_file(path, ref.sha256, ref.bytes)
            # remote without a cache: checked as each worker fetches it (ShardPool.get)
        self._verified = True

    # -- reading

    def read(self, sid: int) -> tuple[bytes, dict[str, Any]]:
        """(jpg bytes, meta) of global sample id `sid`."""
        c = self.catalog
        ref = self.release.refs[int(c.shard[sid])]
        shard = self.pool.get(ref)
        keys = shard.sample_keys
        ordinal = int(c.ordinal[sid])
        key = keys[ordinal] if ordinal < len(keys) else None
        if key is None or key_hash(key) != int(c.keyhash[sid]):
            raise ShardIntegrityError(
                f"{ref.location}: sample {ordinal} is {key!r}, not the key {self.catalog.source} lists; "
                "the shard and the index disagree (run `passkit audit` on the release)"
            )
        group = shard.members[key]
        if "json" not in group:
            raise ShardIntegrityError(f"{ref.location}: sample {key!r} has no .json member")
        meta = json.loads(shard.read(group["json"]))
        return shard.read(group["jpg"]), meta

    def sample(self, sid: int) -> tuple[Any, dict[str, Any]]:
        data, meta = self.read(sid)
        try:
            image = data if self.wants_jpeg else decode.decode_pil(data)
            return self.transform(image), meta
        except Exception as e:
            ref = self.release.refs[int(self.catalog.shard[sid])]
            raise SampleError(f"sample {meta.get('key')!r} in {ref.location} could not be decoded or transformed "
                              f"({type(e).__name__}: {e}); `passkit audit {self.release.location}` checks "
                              "every image of the release") from e

    def _batch_seed(self, p: _Pass, batch_no: int) -> int:
        return int(rng_for("augment", self.config.seed, p.epoch, p.rank, batch_no).integers(0, 2**63 - 1))

    def __iter__(self) -> Iterator[Any]:
        p = self._pass if self._pass is not None else self.prepare()
        self._pass = None  # one pass per prepare
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        if info is not None:
            import cv2

            cv2.setNumThreads(1)  # like torch in DataLoader workers: the workers are the parallelism
        remaining = p.plan.batches[p.start :]
        try:
            for i in range(wid, len(remaining), nw):
                batch_no = p.start + i
                ctx = _seeded(self._batch_seed(p, batch_no), restore=info is None) if self.config.seed_augment \
                    else contextlib.nullcontext()
                with ctx:
                    samples = []
                    for sid in remaining[i].tolist():
                        try:
                            samples.append(self.sample(sid))
                        except Exception as e:
                            if not self.config.handler(e):
                                raise
                if not samples:
                    raise RuntimeError(f"every sample of batch {batch_no} failed; see the handler's warnings")
                yield collate(samples) if self.config.batch_size else samples[0]
        finally:
            if info is None:
                self.pool.close()


class ReleaseLoader(DataLoader):
    """A DataLoader over a ReleaseDataset (batches are built in the workers), with epoch and resume state."""

    dataset: ReleaseDataset

    def __init__(self, dataset: ReleaseDataset, **kw: Any):
        # Its own generator: the DataLoader draws worker base seeds from it, not from the caller's RNG.
        kw.setdefault("generator", torch.Generator().manual_seed(dataset.config.seed))
        super().__init__(dataset, batch_size=None, **kw)
        self._epoch_state = 0
        self._position = 0
        self._resume_at = 0

    @classmethod
    def from_config(cls, release: Release, config: LoaderConfig) -> ReleaseLoader:
        """The loader `loader(...)` returns, from an opened release and the options record."""
        return cls(ReleaseDataset(release, config), collate_fn=_as_is, **config.dataloader_kwargs())

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch of the next pass (its own reproducible order). Setting another epoch than
        the one a loaded state was in starts that epoch from its beginning."""
        epoch = int(epoch)
        if epoch != self.dataset.epoch:
            self._resume_at = 0
            self._position = 0
        self.dataset.set_epoch(epoch)

    @property
    def epoch(self) -> int:
        return self.dataset.epoch

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        start, self._resume_at = self._resume_at, 0
        self.dataset.prepare(start)
        self._position = start
        for item in super().__iter__():
            self._position += 1
            yield item

    def state_dict(self) -> dict[str, Any]:
        """Where the current (or last) pass is: load it into a loader built with the same arguments."""
        ds, c = self.dataset, self.dataset.config
        rank, world = ds.placement()
        return {
            "epoch": ds.epoch,
            "position": self._position,
            "batches": len(ds),
            "seed": c.seed,
            "shuffle": c.shuffle,
            "buffer_size": c.buffer_size,
            "batch_size": c.batch_size,
            "drop_last": c.drop_last,
            "balance": c.balance,
            "world_size": world,
            "rank": rank,
            "samples": len(ds.catalog),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: the next pass continues `state["epoch"]` right after `state["position"]` batches."""
        mine = self.state_dict()
        keys = ("seed", "shuffle", "buffer_size", "batch_size", "drop_last", "balance", "world_size", "rank",
                "samples")
        diff = {k: (state.get(k), mine[k]) for k in keys if k in state and state[k] != mine[k]}
        if diff:
            raise ValueError(
                "cannot resume: the saved loader state was made with different "
                + ", ".join(f"{k}={a!r} (now {b!r})" for k, (a, b) in diff.items())
                + "; build the loader with the same arguments, world size and release"
            )
        self.dataset.set_epoch(int(state["epoch"]))
        self._position = self._resume_at = int(state["position"])

    @property
    def release(self) -> Release:
        return self.dataset.release

    @property
    def num_samples(self) -> int:
        """Samples the manifest lists; exact for a valid release (removed keys are not in its shards),
        an upper bound when removals were issued after the shards were written."""
        return self.release.num_samples

    @property
    def samples_per_epoch(self) -> int:
        """Readable samples (removals applied), over all ranks, before padding or dropping."""
        return len(self.dataset.catalog)


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
    handler: Callable[[Exception], bool] = reraise_exception,
    balance: Balance = "pad",
    rank: int | None = None,
    world_size: int | None = None,
    cache_dir: Path | str | None = None,
    verify: bool = False,
    seed_augment: bool = True,
    multiprocessing_context: Any = None,
) -> ReleaseLoader:
    """A DataLoader yielding (images, metas) batches from a release folder or URL (see the module doc).

    batch_size: samples per batch (None: single (image, meta) pairs); the last batch is partial
        unless drop_last. transform: a passkit.stream.decode JPEG transform (fast), or any callable
        taking a PIL RGB image; default `default_transform(image_size)` (shorter side to 224, center
        crop, uint8 CHW). shuffle/seed/buffer_size: the epoch order, see passkit.stream.plan; call
        `set_epoch(e)` for each epoch. balance: "pad" or "drop", how ranks get equal counts.
        rank/world_size: override torch.distributed / torchrun's env. cache_dir: local copy of remote
        shards. verify: check shard sha256s before the first batch. handler: called with a sample's
        exception; return True to skip the sample (e.g. webdataset.warn_and_continue), the default raises.
    """
    # Every argument but the location is a LoaderConfig field: the record is built from them by
    # name (an argument added here without its field fails on the first call).
    options = {k: v for k, v in locals().items() if k != "release_dir"}
    return ReleaseLoader.from_config(open_release(release_dir), LoaderConfig(**options))

"""Hugging Face `datasets` view of a release (optional dependency: `pip install passkit[hf]`).

    from passkit.stream.hf import dataset
    ds = dataset("releases/demo-1.0.0")                  # datasets.Dataset (Arrow cache on disk)
    ds = dataset("releases/demo-1.0.0", streaming=True)  # datasets.IterableDataset, reads the tars
    ds[0]["image"], ds[0]["license"], ds[0]["attribution"]

Columns: `image` (datasets.Image, the JPEG bytes exactly as in the shard, decoded to PIL on
access), then every field of the samples' `<key>.json` as a top-level column (key, title, creator,
creator_url, source_url, landing_url, provider, license, license_name, license_url, attribution,
modification, ..., width, height), with `scores` as a `datasets.Json` column (a dict per sample,
whatever the detectors). Keys in the manifest's removals are skipped.

Implementation notes (datasets 5.x):
- it uses the packaged "webdataset" builder on the local shard paths; nothing touches the network,
  and HF_HUB_OFFLINE / HF_DATASETS_OFFLINE are not needed (a release URL is first downloaded into
  `shard_cache` by passkit itself, checksums checked);
- features are given explicitly: the builder would otherwise infer them from the first 5 samples
  of the first shard, where a field that happens to be null (or a detector missing from `scores`)
  breaks later shards;
- the json struct is flattened without ever handing a decoded PIL image back to datasets, which
  would re-encode every JPEG (lossy) through datasets.Image.encode_example: Arrow `flatten` when not
  streaming; when streaming, a batched map over undecoded images, then `cast` to the final features
  (a map given `features=` counts as already decoded, and its images would stay {bytes, path}
  dicts); Arrow-formatted streaming maps are avoided too, since they type each example on its own and
  fail on a field that is null in one sample and a string in the next;
- non-streaming loads write an Arrow cache (default ~/.cache/huggingface/datasets; `cache_dir`
  moves it); streaming writes nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from passkit.shards import iter_samples
from passkit.stream.loader import Release, open_release
from passkit.stream.storage import fetch_to_cache, local_path

# The <key>.json fields (passkit.records.Sample.meta()) and their Arrow types.
STRING_FIELDS = (
    "key",
    "title",
    "creator",
    "creator_url",
    "source_url",
    "landing_url",
    "provider",
    "license",
    "license_name",
    "license_url",
    "attribution",
    "modification",
    "source",
    "source_id",
    "query",
    "sha256",
    "source_sha256",
    "phash",
    "text_changes",  # only in samples whose text the licence gate changed
)
INT_FIELDS = ("width", "height", "orig_width", "orig_height", "bytes")
JSON_FIELDS = ("scores",)
IMAGE_COLUMN = "image"


def _datasets() -> Any:
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("passkit.stream.hf needs Hugging Face datasets: pip install 'passkit[hf]'") from e
    return datasets


def _value_feature(v: Any) -> Any:
    datasets = _datasets()
    if isinstance(v, bool):
        return datasets.Value("bool")
    if isinstance(v, int):
        return datasets.Value("int64")
    if isinstance(v, float):
        return datasets.Value("float64")
    if isinstance(v, dict | list):
        return datasets.Json()
    return datasets.Value("string")


def local_shards(release: Release, shard_cache: Path | str | None = None) -> list[Path]:
    """Local paths of the release's shards; a remote release's shards are downloaded into
    `shard_cache` (sha256-checked, reused on the next call)."""
    if not release.remote:
        return [local_path(u) for u in release.urls]
    if shard_cache is None:
        raise ValueError(
            f"{release.location} is a remote release: pass shard_cache=<folder> to download its shards "
            "(or use passkit.stream.loader, which can also read them without a cache)"
        )
    return [fetch_to_cache(r.location, Path(shard_cache), r.sha256, r.bytes) for r in release.refs]


def meta_features(release: Release, shards: list[Path] | None = None) -> dict[str, Any]:
    """datasets features of the json struct: the known fields, plus any other field the first
    sample has (typed from its value), in the first sample's field order."""
    datasets = _datasets()
    first: dict[str, Any] = {}
    for _, group in iter_samples((shards or local_shards(release))[0]):
        first = json.loads(group["json"]) if "json" in group else {}
        break
    known: dict[str, Any] = {f: datasets.Value("string") for f in STRING_FIELDS}
    known |= {f: datasets.Value("int64") for f in INT_FIELDS}
    known |= {f: datasets.Json() for f in JSON_FIELDS}
    names = list(first) + [f for f in known if f not in first]
    return {f: known[f] if f in known else _value_feature(first[f]) for f in names}


def dataset(
    release_dir: Path | str,
    streaming: bool = False,
    *,
    cache_dir: Path | str | None = None,
    apply_removals: bool = True,
    split: str = "train",
    shard_cache: Path | str | None = None,
) -> Any:
    """The release as a `datasets.Dataset` (or `IterableDataset` when streaming); see the module doc.

    `release_dir` may be a URL (http(s) or fsspec); its shards are then downloaded into `shard_cache`.
    """
    datasets = _datasets()
    release = open_release(release_dir)
    shards = local_shards(release, shard_cache)
    meta = meta_features(release, shards)
    raw = datasets.Features(
        {
            "jpg": datasets.Image(),
            "json": meta,
            "__key__": datasets.Value("string"),
            "__url__": datasets.Value("string"),
        }
    )
    ds = datasets.load_dataset(
        "webdataset",
        data_files={split: [str(p) for p in shards]},
        split=split,
        streaming=streaming,
        features=raw,
        cache_dir=str(cache_dir) if cache_dir is not None else None,
    )
    removed = sorted(release.removed) if apply_removals else []
    if streaming:
        # Python-level batched map on undecoded images (the JPEG bytes pass through untouched),
        # left untyped and then cast: a map given `features=` is treated as already decoded, so
        # its Image column would come out as {bytes, path} dicts (datasets 5.2).
        out = datasets.Features({IMAGE_COLUMN: datasets.Image(), **meta})
        return (
            ds.cast_column("jpg", datasets.Image(decode=False))
            .map(
                _flatten_batch,
                batched=True,
                fn_kwargs={"fields": list(meta), "removed": frozenset(removed)},
                remove_columns=list(raw),
            )
            .cast(out)
        )
    ds = ds.flatten().remove_columns(["__key__", "__url__"])
    ds = ds.rename_columns({"jpg": IMAGE_COLUMN, **{f"json.{f}": f for f in meta}})
    if removed:
        drop = set(removed)
        ds = ds.filter(lambda key: key not in drop, input_columns="key")
    return ds


def _flatten_batch(
    batch: dict[str, list[Any]], fields: list[str], removed: frozenset[str]
) -> dict[str, list[Any]]:
    """{jpg, json{...}, __key__, __url__} -> {image, <json fields>}, removed keys dropped."""
    keep = [i for i, k in enumerate(batch["__key__"]) if k not in removed]
    out: dict[str, list[Any]] = {IMAGE_COLUMN: [batch["jpg"][i] for i in keep]}
    for f in fields:
        out[f] = [(batch["json"][i] or {}).get(f) for i in keep]
    return out

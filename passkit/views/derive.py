"""`passkit views generate`: a derived release of generated variations, one per source sample.

    passkit views generate releases/demo-1.0.0 --model models/stable-diffusion-2-1-unclip --device cuda

writes releases/demo-genview-1.0.0, a normal passkit release (shards and their DALI index files,
index, rejected list, manifest, attribution files, card, report, croissant.json; `passkit audit`
checks it like any other) in which

- each sample is a variation of one source sample, made by Stable unCLIP img2img at the noise level
  its foreground ratio picks (passkit.views.foreground), with a seed derived from the run's seed and
  its source key, and keyed `<source key>-gv` (same order as the source);
- its `<key>.json` keeps the source's full attribution (title, creator, source, licence, credit line:
  CC BY attaches to the work, and a variation is an adaptation of it), says in `modification` that it
  is an AI-generated variation (CC BY requires changes to be indicated), and records under `genview`
  the source key, release and image sha256, the model, noise level, foreground ratio and seed;
- every variation passes the people filter of the source's manifest again before it is released (a
  generator can draw people the source did not show); the rest go to rejected.parquet.

It streams: the source is read one shard at a time, a batch of `batch_size` images in memory. The
principal direction is fitted first on up to `fit_images` images (one more pass over the first
shards). Each source shard's output (its tar, index rows and rejected rows) lands in a work folder
beside the release, rejected rows last as the shard's "done" marker, so a rerun with the same settings
skips finished shards; the release is then assembled from them with the builder's own writers
(tables.RowGroupWriter, documents.write_all, manifest.write).
"""

from __future__ import annotations

import io
import json
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from passkit.atomic import atomic_path
from passkit.config import ImageSpec
from passkit.images import ImageReject, check
from passkit.licenses import spdx_of
from passkit.parquetio import open_parquet
from passkit.release import documents, manifest
from passkit.release.shardwrite import shard_path
from passkit.release.tables import (
    INDEX_COLUMNS,
    INDEX_FILE,
    INDEX_SCHEMA,
    REJECTED_FILE,
    REJECTED_SCHEMA,
    RowGroupWriter,
)
from passkit.shards import iter_samples, sha256_file
from passkit.shards.wdsindex import derive_index, index_path, write_index
from passkit.shards.writer import write_tar
from passkit.views import unclip
from passkit.views.foreground import Principal, fit_tokens, noise_level

KEY_SUFFIX = "-gv"  # '-' keeps keys dot-free, and appending it keeps the source's key order
INFO_FILE = "genview.json"  # the run's settings and the principal direction, listed in the manifest
FIT_IMAGES = 1024
BATCH = 8


class GenViewError(ValueError):
    """The request cannot be carried out (target exists, source unreadable, a resumed run's settings differ)."""


@dataclass(slots=True)
class GenViewResult:
    path: Path
    generated: int = 0
    rejected: int = 0
    shards: int = 0
    resumed_shards: int = 0
    levels: Counter[int] = field(default_factory=Counter)
    seconds: float = 0.0


def modification_note(model: str, source_note: str) -> str:
    """The same for every sample of the release, so the documents' headers can state it once."""
    return (f"AI-generated variation of the original work, made with the image-variation model {model} "
            f"(Stable unCLIP img2img) from passkit's copy, which was {source_note}")


def _decoded(jpg: bytes) -> Image.Image:
    with Image.open(io.BytesIO(jpg)) as im:
        return im.convert("RGB")


def _batches(path: Path, size: int) -> Iterator[list[tuple[str, bytes, dict[str, Any]]]]:
    """(key, jpg, meta) of a shard's samples, `size` at a time."""
    batch: list[tuple[str, bytes, dict[str, Any]]] = []
    for key, group in iter_samples(path):
        batch.append((key, group["jpg"], json.loads(group["json"])))
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def fit_principal(pipe: Any, src: Path, shards: list[dict[str, Any]], images: int, batch_size: int) -> Principal:
    """The first principal direction of the encoder's patch tokens over the first `images` samples."""
    batches = (b for entry in shards for b in _batches(src / entry["path"], batch_size))
    got = fit_tokens(batches, lambda b: unclip.patch_tokens(pipe, [_decoded(jpg) for _, jpg, _ in b]), images)
    if got is None:
        raise GenViewError(f"{src} has no samples to generate from")
    return got[0]


@dataclass(slots=True)
class _Run:
    """What one shard's generation needs, gathered once."""

    pipe: Any
    people: Any
    principal: Principal
    spec: ImageSpec
    model: dict[str, Any]
    note: str
    source_release: str
    seed: int
    steps: int
    batch_size: int


def _rejected_row(meta: dict[str, Any], key: str, verdict: str, scores: dict[str, float], sha: str) -> dict[str, Any]:
    detail = ("a detector found a person or face in the generated variation" if verdict == "person"
              else "a score in a detector's review band on the generated variation; not released")
    return {"key": key, "source": meta.get("source"), "source_id": meta.get("source_id"), "query": meta.get("query"),
            "url": meta.get("source_url"), "stage": "people", "reason": "people" if verdict == "person" else "review",
            "detail": detail, "transient": False, "scores": sorted(scores.items()), "title": meta.get("title"),
            "creator": meta.get("creator"), "landing_url": meta.get("landing_url"), "license_raw": meta.get("license"),
            "license": meta.get("license"), "sha256": sha}


def _shard(run: _Run, src_tar: Path, out_tar: Path, rel: str, result: GenViewResult,
           on_image: Callable[[int], None]) -> tuple[pa.Table, pa.Table]:
    """Generate one source shard's variations into `out_tar`; (index rows, rejected rows)."""
    index: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    last = ""

    def members() -> Iterator[tuple[str, bytes]]:
        nonlocal last
        for batch in _batches(src_tar, run.batch_size):
            images = [_decoded(jpg) for _, jpg, _ in batch]
            ratios = run.principal.ratio(unclip.patch_tokens(run.pipe, images)).tolist()
            levels = [noise_level(min(max(r, 0.0), 1.0)) for r in ratios]
            seeds = [unclip.sample_seed(run.seed, key) for key, _, _ in batch]
            made = unclip.vary(run.pipe, images, levels, seeds, run.steps)
            checked = []
            for im in made:
                buf = io.BytesIO()
                im.save(buf, "PNG")
                try:
                    checked.append(check(buf.getvalue(), run.spec))
                except ImageReject as e:  # the model's own output: a failure here is a bug to see, not a sample to drop
                    raise GenViewError(f"a generated image failed the image check: {e}") from None
            verdicts = run.people.score([c.image for c in checked])
            for (key, _jpg, meta), c, ratio, level, s, v in zip(batch, checked, ratios, levels, seeds, verdicts,
                                                               strict=True):
                new_key = key + KEY_SUFFIX
                if new_key <= last:
                    raise GenViewError(f"source keys are out of order at {key}: audit the source release first")
                last = new_key
                info = c.info
                result.levels[level] += 1
                scores = {k: round(float(x), 6) for k, x in sorted(v.scores.items())}
                if v.verdict != "clear":
                    rejected.append(_rejected_row(meta, new_key, v.verdict, scores, info.sha256))
                    result.rejected += 1
                    continue
                out = {**meta, "key": new_key, "sha256": info.sha256, "source_sha256": info.source_sha256,
                       "phash": info.phash, "width": info.width, "height": info.height,
                       "orig_width": info.orig_width, "orig_height": info.orig_height, "bytes": len(info.jpeg),
                       "modification": run.note, "scores": scores,
                       "genview": {"source_key": key, "source_release": run.source_release,
                                   "source_sha256": meta.get("sha256"), "model": run.model["name"],
                                   "model_fingerprint": run.model["fingerprint"], "noise_level": level,
                                   "foreground_ratio": round(float(ratio), 6), "seed": s, "steps": run.steps}}
                row = {c: out.get(c) for c in INDEX_COLUMNS}
                row.update(shard=rel, scores=sorted(scores.items()), license_spdx=spdx_of(out.get("license")))
                index.append(row)
                result.generated += 1
                yield f"{new_key}.jpg", info.jpeg
                yield f"{new_key}.json", json.dumps(out, sort_keys=True, ensure_ascii=False).encode("utf-8")
            on_image(len(batch))

    write_tar(out_tar, members())
    return (pa.Table.from_pylist(index, schema=INDEX_SCHEMA),
            pa.Table.from_pylist(rejected, schema=REJECTED_SCHEMA))


def _settings(old_sha: str, model: dict[str, Any], seed: int, steps: int, fit_images: int) -> dict[str, Any]:
    return {"source_manifest_sha256": old_sha, "model": model, "seed": seed, "steps": steps, "fit_images": fit_images}


def generate_views(
    release_dir: Path,
    model_dir: Path,
    *,
    device: str = "cpu",
    version: str | None = None,
    out_dir: Path | None = None,
    seed: int = 0,
    steps: int = unclip.STEPS,
    batch_size: int = BATCH,
    fit_images: int = FIT_IMAGES,
    people: Any = None,
    models_dir: str | None = None,
    created: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> GenViewResult:
    """Write `<name>-genview-<version>` beside `release_dir` (or at `out_dir`); see the module docstring.

    `people` is a PeopleFilter-like object (`score(images)`, `describe()`); by default the source
    manifest's detectors are built from `models_dir` (PASSKIT_MODELS). `on_progress(done, total)`
    counts source images."""
    from passkit.release.build import _created

    t0 = time.monotonic()
    src = Path(release_dir)
    old = manifest.load(src)
    errors = manifest.validation_errors(old)
    if errors:
        raise GenViewError(f"{src}/manifest.json fails its schema; run `passkit audit {src}` first: {errors[0]}")
    name = f"{old['name']}-genview"
    version = version or old["version"]
    dst = Path(out_dir) if out_dir else src.with_name(f"{name}-{version}")
    if dst.exists():
        raise GenViewError(f"{dst} already exists; choose another --version or remove it")
    if people is None:
        from passkit.audit.rescan import RescanError, people_filter

        try:
            people = people_filter(old["detectors"], models_dir)
        except RescanError as e:
            raise GenViewError(f"the people filter cannot be rebuilt for the variations: {e}") from None
    old_sha = sha256_file(src / "manifest.json")
    pipe = unclip.load_pipeline(Path(model_dir), device)
    model = unclip.describe(pipe, Path(model_dir))
    work = dst.with_name(f".{dst.name}.work")
    work.mkdir(parents=True, exist_ok=True)
    settings = _settings(old_sha, model, seed, steps, fit_images)
    info_path = work / INFO_FILE
    if info_path.is_file():
        info = json.loads(info_path.read_text(encoding="utf-8"))
        if info["settings"] != settings:
            raise GenViewError(f"{work} holds a run with other settings ({info['settings']}); remove it to start over")
        principal = Principal(torch.tensor(info["principal"]["mean"]), torch.tensor(info["principal"]["direction"]))
    else:
        principal = fit_principal(pipe, src, old["shards"], fit_images, batch_size)
        info = {"settings": settings, "principal": {"images": min(fit_images, old["counts"]["kept"]),
                                                     "mean": principal.mean.tolist(),
                                                     "direction": principal.direction.tolist()}}
        with atomic_path(info_path) as tmp:
            tmp.write_text(json.dumps(info, sort_keys=True) + "\n", encoding="utf-8")

    src_image = old.get("image") or {}
    spec = ImageSpec(min_side=1, max_side=int(src_image.get("max_side", 512)), fit=src_image.get("fit", "longer"),
                     jpeg_quality=int(src_image.get("jpeg_quality", 90)))
    source_note = src_image.get("modification") or "resized, re-encoded and stripped of metadata"
    run = _Run(pipe, people, principal, spec, model, modification_note(model["name"], source_note),
               old["release"], seed, steps, batch_size)
    result = GenViewResult(dst)
    total = int(old["counts"]["kept"])
    done = 0

    def progressed(n: int) -> None:
        nonlocal done
        done += n
        if on_progress:
            on_progress(done, total)

    outputs: list[tuple[str, Path, Path, Path]] = []
    for i, entry in enumerate(old["shards"]):
        rel = shard_path(name, i)
        tar, idx, rej = (work / f"shard-{i:06d}{ext}" for ext in (".tar", ".index.parquet", ".rejected.parquet"))
        outputs.append((rel, tar, idx, rej))
        if rej.is_file():  # finished by an earlier run with these settings
            result.resumed_shards += 1
            progressed(int(entry["samples"]))
            continue
        with atomic_path(tar) as tmp_tar:
            index_rows, rejected_rows = _shard(run, src / entry["path"], tmp_tar, rel, result, progressed)
        with atomic_path(idx) as tmp:
            pq.write_table(index_rows, tmp)
        with atomic_path(rej) as tmp:
            pq.write_table(rejected_rows, tmp)

    _assemble(dst, old, old_sha, name, version, created or _created(), outputs, info, people, run.note, result)
    shutil.rmtree(work)
    result.seconds = time.monotonic() - t0
    return result


def _assemble(dst: Path, old: dict[str, Any], old_sha: str, name: str, version: str, created: str,
              outputs: list[tuple[str, Path, Path, Path]], info: dict[str, Any], people: Any, note: str,
              result: GenViewResult) -> None:
    """The release from the finished shards, with the builder's writers; appears whole or not at all."""
    kept = rejected = 0
    with atomic_path(dst) as tmp:
        (tmp / "shards").mkdir(parents=True)
        shards: list[dict[str, Any]] = []
        shard_indexes: list[str] = []
        with RowGroupWriter(tmp / INDEX_FILE, INDEX_SCHEMA) as index, \
                RowGroupWriter(tmp / REJECTED_FILE, REJECTED_SCHEMA) as rej_out:
            for rel, tar, idx, rej in outputs:
                rows = open_parquet(idx).read()
                rej_rows = open_parquet(rej).read()
                rej_out.write(rej_rows)
                rejected += rej_rows.num_rows
                if rows.num_rows == 0:  # every variation of the shard was rejected: no empty shard
                    continue
                index.write(rows)
                kept += rows.num_rows
                shutil.copyfile(tar, tmp / rel)
                # the index DALI's reader needs, as every release has beside its shards
                write_index(tmp / index_path(rel), derive_index(tmp / rel))
                shard_indexes.append(index_path(rel))
                shards.append({"path": rel, "sha256": sha256_file(tmp / rel), "bytes": (tmp / rel).stat().st_size,
                               "samples": rows.num_rows})
        (tmp / INFO_FILE).write_text(json.dumps(info, sort_keys=True) + "\n", encoding="utf-8")

        m = json.loads(json.dumps(old))
        for gone in ("previous", "curation", "review"):  # they describe how the source was made
            m.pop(gone, None)
        m.update(name=name, version=version, release=f"{name}-{version}", created=created, removals=[],
                 validation=[], shards=shards, files={}, detectors=people.describe())
        m["description"] = (f"Generated views of {old['release']}: one AI-generated variation of each of its images "
                            f"(GenView), each credited to the original work and marked as modified.")
        m["source"] = {"kind": "genview", "release": old["release"], "manifest_sha256": old_sha,
                       "model": info["settings"]["model"], "seed": info["settings"]["seed"],
                       "steps": info["settings"]["steps"], "principal_images": info["principal"]["images"],
                       "principal_file": INFO_FILE, "source": old.get("source") or {}}
        m.setdefault("image", {})["modification"] = note
        by_reason = Counter(r for r in open_parquet(tmp / REJECTED_FILE).read(columns=["reason"]).column(0).to_pylist())
        m["counts"] = {"candidates": kept + rejected, "kept": kept, "rejected": rejected,
                       "by_stage": {"people": rejected} if rejected else {}, "by_reason": dict(sorted(by_reason.items()))}
        written = documents.write_all(tmp, m, tmp / INDEX_FILE, tmp / REJECTED_FILE)
        m["files"] = documents.file_entries(tmp, [INDEX_FILE, REJECTED_FILE, INFO_FILE, *shard_indexes, *written])
        manifest.write(tmp / "manifest.json", m)
    result.shards, result.generated, result.rejected = len(shards), kept, rejected

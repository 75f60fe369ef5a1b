"""Test helper: write a small, valid release in exactly the documented release format.

The release builder (passkit/release/) produces the same layout; this factory lets the audit and
stream tests run without it, fast and without a network:

    releases/<name>-<version>/
      manifest.json  shards/<name>-000000.tar ...  index.parquet  rejected.parquet
      ATTRIBUTION.md  attribution.csv

Every sample is a real JPEG made with Pillow (fresh pixels, no metadata) plus its `<key>.json`
(passkit.records.Sample.meta() fields, sorted keys), under CC BY 2.0, CC BY 4.0 and CC0 licences
with attribution sentences from passkit.licenses.attribution_sentence.

Helpers for tampering tests: `load_manifest`, `save_manifest`, `read_shard`, `rewrite_shard`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from passkit import licenses
from passkit.records import make_key
from passkit.shards import iter_samples, sha256_file, write_tar
from passkit.shards.wdsindex import format_index, index_path, write_index

SOURCE = "factory"
MODIFICATION = "resized to at most 512 px on the longer side, re-encoded as JPEG, metadata removed"
LICENSE_CYCLE = ("cc-by-2.0", "cc-by-4.0", "cc0-1.0")
SIZES = ((64, 48), (48, 64), (56, 56), (72, 40))

INDEX_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("shard", pa.string()),
        ("sha256", pa.string()),
        ("phash", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("bytes", pa.int64()),
        ("title", pa.string()),
        ("creator", pa.string()),
        ("creator_url", pa.string()),
        ("landing_url", pa.string()),
        ("source_url", pa.string()),
        ("provider", pa.string()),
        ("license", pa.string()),
        ("license_name", pa.string()),
        ("license_url", pa.string()),
        ("attribution", pa.string()),
        ("modification", pa.string()),
        ("source", pa.string()),
        ("source_id", pa.string()),
        ("query", pa.string()),
        ("scores", pa.map_(pa.string(), pa.float64())),
    ]
)

REJECTED_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("source", pa.string()),
        ("source_id", pa.string()),
        ("url", pa.string()),
        ("stage", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("scores", pa.map_(pa.string(), pa.float64())),
        ("title", pa.string()),
        ("creator", pa.string()),
        ("license", pa.string()),
        ("landing_url", pa.string()),
    ]
)

INDEX_COLUMNS = [f.name for f in INDEX_SCHEMA if f.name not in ("key", "shard")]


def jpeg(width: int, height: int, seed: int) -> bytes:
    """A real, metadata-free JPEG: a seeded colour gradient with some noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = rng.integers(0, 256, size=3)
    px = np.stack([(x * 3 + base[0]) % 256, (y * 3 + base[1]) % 256, ((x + y) + base[2]) % 256], axis=-1)
    px = (px + rng.integers(0, 16, size=px.shape)).clip(0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(px, "RGB").save(buf, "JPEG", quality=85)
    return buf.getvalue()


def sample_key(i: int) -> str:
    return make_key(SOURCE, f"{i:05d}")


def sample_meta(i: int, data: bytes, width: int, height: int, license_id: str) -> dict[str, Any]:
    lic = licenses.by_id(license_id)
    title = f"Test image {i}"
    creator = f"Photographer {i % 4}"
    landing = f"https://example.org/photos/{i}"
    return {
        "key": sample_key(i),
        "title": title,
        "creator": creator,
        "creator_url": None if i % 3 == 1 else f"https://example.org/people/{i % 4}",  # optional field
        "source_url": f"https://example.org/images/{i}.jpg",
        "landing_url": landing,
        "provider": "example",
        "license": lic.id,
        "license_name": lic.name,
        "license_url": lic.url,
        "attribution": licenses.attribution_sentence(lic, title, creator, landing),
        "modification": MODIFICATION,
        "source": SOURCE,
        "source_id": f"{i:05d}",
        "query": "test",
        "sha256": hashlib.sha256(data).hexdigest(),
        "source_sha256": hashlib.sha256(b"source" + data).hexdigest(),
        "phash": f"{(i * 0x9E3779B97F4A7C15) & (2**64 - 1):016x}",
        "width": width,
        "height": height,
        "orig_width": width * 4,
        "orig_height": height * 4,
        "bytes": len(data),
        "scores": {"mtcnn": round(0.01 * (i % 7), 4), "yolox": round(0.02 * (i % 5), 4)},
    }


def json_bytes(meta: dict[str, Any]) -> bytes:
    return json.dumps(meta, sort_keys=True, ensure_ascii=False).encode("utf-8")


def _file_entry(path: Path) -> dict[str, Any]:
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def make_release(
    dir: Path,
    n: int = 12,
    shard_max: int = 5,
    *,
    name: str = "test",
    version: str = "1.0.0",
    policy: str = "by-or-public-domain",
    license_ids: Sequence[str] = LICENSE_CYCLE,
    removals: Sequence[tuple[str, str]] = (),
    n_rejected: int = 3,
    wds_index: bool = False,
) -> Path:
    """Write `<dir>/<name>-<version>/` and return its path.

    `wds_index`: write each shard's DALI index file (shards/<name>.idx) and list it, as releases
    built since index files do; off by default, so a tampering test's findings are about one thing
    (a release without them is still valid: the audit only warns).

    `removals` are (key, reason) pairs recorded in the manifest only; a valid release does not
    contain those keys, so pass keys that are not among the samples unless a test wants them present.
    """
    root = Path(dir) / f"{name}-{version}"
    (root / "shards").mkdir(parents=True, exist_ok=True)

    samples: list[tuple[str, bytes, dict[str, Any]]] = []
    for i in range(n):
        w, h = SIZES[i % len(SIZES)]
        data = jpeg(w, h, seed=i)
        meta = sample_meta(i, data, w, h, license_ids[i % len(license_ids)])
        samples.append((meta["key"], data, meta))
    samples.sort(key=lambda s: s[0])  # sorted by key within and across shards

    shard_entries: list[dict[str, Any]] = []
    index_files: dict[str, dict[str, Any]] = {}
    rows: list[dict[str, Any]] = []
    for s, start in enumerate(range(0, n, shard_max)):
        chunk = samples[start : start + shard_max]
        rel = f"shards/{name}-{s:06d}.tar"
        members: list[tuple[str, bytes]] = []
        for key, data, meta in chunk:
            members += [(f"{key}.jpg", data), (f"{key}.json", json_bytes(meta))]
            rows.append({"key": key, "shard": rel, **{c: meta[c] for c in INDEX_COLUMNS}})
        layout: list[tuple[str, int, int]] = []
        info = write_tar(root / rel, members, layout)
        if wds_index:
            index_files[index_path(rel)] = write_index(root / index_path(rel), format_index(layout))
        shard_entries.append({"path": rel, "sha256": info.sha256, "bytes": info.bytes, "samples": len(chunk)})

    for r in rows:
        r["scores"] = list(r["scores"].items())
    pq.write_table(pa.Table.from_pylist(rows, schema=INDEX_SCHEMA), root / "index.parquet")

    rejected = [
        {
            "key": make_key(SOURCE, f"rejected-{j}"),
            "source": SOURCE,
            "source_id": f"rejected-{j}",
            "url": f"https://example.org/images/rejected-{j}.jpg",
            "stage": "people",
            "reason": "people",
            "detail": "face detected",
            "scores": [("mtcnn", 0.99)],
            "title": f"Rejected {j}",
            "creator": "Someone",
            "license": "cc-by-2.0",
            "landing_url": f"https://example.org/photos/rejected-{j}",
        }
        for j in range(n_rejected)
    ]
    pq.write_table(pa.Table.from_pylist(rejected, schema=REJECTED_SCHEMA), root / "rejected.parquet")

    lines = [f"# Attribution for {name} {version}", ""]
    lines += [f"- `{key}`: {meta['attribution']}" for key, _, meta in samples]
    (root / "ATTRIBUTION.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with open(root / "attribution.csv", "w", newline="", encoding="utf-8") as f:
        wr = csv.writer(f)
        cols = ["key", "title", "creator", "landing_url", "license", "license_url", "attribution"]
        wr.writerow(cols)
        for _, _, meta in samples:
            wr.writerow([meta[c] for c in cols])

    files = {
        p: _file_entry(root / p)
        for p in ("index.parquet", "rejected.parquet", "ATTRIBUTION.md", "attribution.csv")
    } | index_files
    pol = licenses.policy(policy)
    manifest = {
        "schema_version": 1,
        "name": name,
        "version": version,
        "release": f"{name}-{version}",
        "created": "2024-01-01T00:00:00Z",
        "passkit_version": "0.1.0",
        "description": "a small release written by tests/helpers/releases.py",
        "spec_hash": hashlib.sha256(f"{name}-{version}".encode()).hexdigest(),
        "policy": pol.describe(),
        "detectors": [
            {"name": "mtcnn", "threshold": 0.9, "weights": "facenet-pytorch", "sha256": None},
            {"name": "yolox", "threshold": 0.5, "weights": "yolox_nano.onnx", "sha256": "0" * 64},
        ],
        "counts": {
            "candidates": n + n_rejected,
            "kept": n,
            "rejected": n_rejected,
            "by_stage": {"people": n_rejected},
            "by_reason": {"people": n_rejected},
        },
        "shards": shard_entries,
        "files": files,
        "removals": [{"key": k, "reason": r} for k, r in removals],
        "validation": [],
    }
    save_manifest(root, manifest)
    return root


# ----------------------------------------------------------------------------- tampering helpers


def load_manifest(root: Path) -> dict[str, Any]:
    return json.loads((Path(root) / "manifest.json").read_text(encoding="utf-8"))


def save_manifest(root: Path, manifest: dict[str, Any]) -> None:
    text = json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    (Path(root) / "manifest.json").write_text(text, encoding="utf-8")


def read_shard(path: Path) -> list[tuple[str, dict[str, bytes]]]:
    return list(iter_samples(Path(path)))


def rewrite_shard(
    path: Path,
    edit: Callable[[list[tuple[str, dict[str, bytes]]]], list[tuple[str, dict[str, bytes]]]],
) -> None:
    """Rewrite a shard with write_tar after `edit` changes its samples; the manifest is left alone."""
    samples = edit(read_shard(path))
    members = [(f"{key}.{ext}", data) for key, group in samples for ext, data in sorted(group.items())]
    write_tar(Path(path), members)


def update_shard_in_manifest(root: Path, rel: str, *, samples: int | None = None) -> None:
    """What an attacker who also edits the manifest does: new sha256 and size for one shard."""
    m = load_manifest(root)
    for s in m["shards"]:
        if s["path"] == rel:
            s["sha256"] = sha256_file(Path(root) / rel)
            s["bytes"] = (Path(root) / rel).stat().st_size
            if samples is not None:
                s["samples"] = samples
    save_manifest(root, m)

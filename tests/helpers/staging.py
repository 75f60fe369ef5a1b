"""Synthetic releases built by the real release builder: images made here, staged as work units
exactly as passkit.pipeline writes them (staging tar + Parquet ledger), then
passkit.release.build.build_release. No network, no detectors, a second or two a release."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageFilter

from passkit import images, licenses
from passkit.config import PipelineSpec, parse_spec
from passkit.ledger import DETECTORS_META, LEDGER_SCHEMA, unit_paths
from passkit.records import Candidate, Sample
from passkit.release.build import build_release
from passkit.shards import write_tar

DETECTORS = [{"name": "mtcnn", "threshold": 0.9, "weights": "facenet-pytorch==2.6.0", "sha256": None}]
LICENSE_URLS = {
    "cc-by-2.0": "https://creativecommons.org/licenses/by/2.0/",
    "cc-by-4.0": "https://creativecommons.org/licenses/by/4.0/",
    "cc0-1.0": "https://creativecommons.org/publicdomain/zero/1.0/",
}


def texture(seed: int, size: tuple[int, int] = (160, 120)) -> Image.Image:
    """A photo-like image whose pHash is far from every other seed's (smoothed noise + gradient)."""
    rng = np.random.default_rng(seed)
    w, h = size
    small = rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
    im = Image.fromarray(small, "RGB").resize((w, h), Image.Resampling.BICUBIC)
    noise = rng.integers(-20, 20, size=(h, w, 3))
    return Image.fromarray((np.asarray(im, dtype=np.int16) + noise).clip(0, 255).astype(np.uint8), "RGB")


def near_copy(img: Image.Image) -> Image.Image:
    """The same picture, slightly blurred, brightened and resized: a re-upload."""
    out = img.filter(ImageFilter.GaussianBlur(0.8)).resize((img.width - 8, img.height - 6))
    arr = np.asarray(out, dtype=np.int16) + 6
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8), "RGB")


def flat(colour: tuple[int, int, int], noise: int = 2, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = np.full((120, 160, 3), colour, dtype=np.int16) + rng.integers(-noise, noise + 1, size=(120, 160, 3))
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8), "RGB")


def png_bytes(img: Image.Image) -> bytes:
    import io

    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@dataclass
class Item:
    source_id: str
    image: Image.Image | None  # None: rejected before fetching (licence)
    creator: str = "Ann Example"
    license: str = "cc-by-4.0"
    title: str | None = None
    people: float | None = None  # a score >= 0.9 makes the unit reject it as "people"
    extra: dict[str, Any] = field(default_factory=dict)


def _candidate(it: Item, url_base: str = "https://example.org") -> Candidate:
    return Candidate(
        source="test", source_id=it.source_id, url=f"{url_base}/img/{it.source_id}.png",
        license_url=LICENSE_URLS.get(it.license, "https://creativecommons.org/licenses/by-nc/2.0/"),
        title=it.title or f"Picture {it.source_id}", creator=it.creator,
        creator_url=f"https://example.org/people/{it.creator.replace(' ', '_')}",
        landing_url=f"{url_base}/photos/{it.source_id}", provider="example", query="test",
    )


def write_units(units_dir: Path, items: list[Item], spec: PipelineSpec, unit_size: int = 4,
                url_base: str = "https://example.org", old_ledger: bool = False) -> list[int]:
    """Staging units as passkit.pipeline.UnitRunner writes them (tar of kept samples + ledger of all);
    `old_ledger`: as a passkit before the flat_fraction column wrote them."""
    units_dir.mkdir(parents=True, exist_ok=True)
    pol = spec.license.build()
    mod = images.modification_note(spec.image)
    indices = []
    for u, lo in enumerate(range(0, len(items), unit_size)):
        rows, samples = [], []
        for seq, it in enumerate(items[lo : lo + unit_size]):
            c = _candidate(it, url_base)
            g = licenses.gate(c, pol)
            row: dict[str, Any] = {f.name: None for f in LEDGER_SCHEMA}
            row.update(unit=u, seq=seq, key=c.key, source=c.source, source_id=c.source_id, query=c.query, url=c.url,
                       title=c.title, creator=c.creator, creator_url=c.creator_url, landing_url=c.landing_url,
                       provider=c.provider, license_url=c.license_url, transient=False, scores=[])
            if isinstance(g, tuple):
                row.update(status="rejected", stage="license", reason=g[0], detail=g[1])
                rows.append(row)
                continue
            ci = images.check(png_bytes(it.image), spec.image)
            scores = {"mtcnn": it.people or 0.0}
            row.update(license=g.license, license_name=g.license_name, attribution=g.sentence,
                       sha256=ci.info.sha256, source_sha256=ci.info.source_sha256, phash=ci.info.phash,
                       width=ci.info.width, height=ci.info.height, orig_width=ci.info.orig_width,
                       orig_height=ci.info.orig_height, bytes=len(ci.info.jpeg), scores=sorted(scores.items()),
                       flat_fraction=ci.info.flat_fraction, flat_colour=list(ci.info.flat_colour or ()))
            if (it.people or 0) >= 0.9:
                row.update(status="rejected", stage="people", reason="people", detail="fired: mtcnn")
            else:
                row.update(status="kept")
                samples.append(Sample(c.key, c, g, ci.info, mod, scores))
            rows.append(row)
        samples.sort(key=lambda s: s.key)
        tar, ledger = unit_paths(units_dir, u)
        members = []
        for s in samples:
            members += [(f"{s.key}.jpg", s.image.jpeg),
                        (f"{s.key}.json", json.dumps(s.meta(), sort_keys=True, ensure_ascii=False).encode())]
        write_tar(tar, members)
        table = pa.Table.from_pylist(rows, schema=LEDGER_SCHEMA)
        if old_ledger:
            table = table.drop_columns(["flat_fraction", "flat_colour"])
        table = table.replace_schema_metadata(
            {DETECTORS_META: json.dumps({"detectors": DETECTORS, "skipped": []}).encode()})
        pq.write_table(table, ledger)
        indices.append(u)
    return indices


def make_spec(**release: Any) -> PipelineSpec:
    return parse_spec({
        "name": "syn", "version": "1.0.0", "description": "synthetic release for tests",
        "source": {"kind": "demo"}, "license": {"policy": "by-or-public-domain"},
        "image": {"max_side": 128, "min_side": 16}, "release": {"shard_max_samples": 3, **release},
    })


def staged_release(tmp: Path, items: list[Item], name: str = "r", url_base: str = "https://example.org",
                   old_ledger: bool = False, **release: Any) -> Path:
    spec = make_spec(**release)
    units = tmp / f"units-{name}"
    idx = write_units(units, items, spec, url_base=url_base, old_ledger=old_ledger)
    out = tmp / "releases" / name / spec.release_name
    build_release(spec, units, idx, out, {"kind": "test"}, base=tmp)
    return out


def basic_items(n: int = 8) -> list[Item]:
    creators = ["Ann Example", "Bo Sample", "Cy Tester"]
    lic = ["cc-by-4.0", "cc-by-2.0", "cc0-1.0"]
    return [Item(f"s{i:02d}", texture(i), creators[i % 3], lic[i % 3]) for i in range(n)]


def outcomes(release: Path) -> dict[str, tuple[str, str | None, str | None]]:
    out = {r["source_id"]: ("kept", None, None) for r in pq.read_table(release / "index.parquet").to_pylist()}
    for r in pq.read_table(release / "rejected.parquet").to_pylist():
        out[r["source_id"]] = (r["stage"], r["reason"], r["detail"])
    return out

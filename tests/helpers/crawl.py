"""Helpers for the crawler tests: deterministic images, a list source, small specs, release comparison.

The pipeline spec only knows registered source kinds, so tests swap the opener of the "demo" kind
for a `ListSource` that yields the candidates they built (monkeypatch restores it afterwards).
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from passkit.config import PipelineSpec, parse_spec
from passkit.records import Candidate


def jpeg(seed: int, size: tuple[int, int] = (160, 120)) -> bytes:
    """A deterministic, people-free JPEG: a random 5x5 colour grid, smoothly enlarged, plus noise.

    Different seeds give different coarse structure, so perceptual hashes differ and the release's
    near-duplicate removal keeps them all.
    """
    rng = np.random.default_rng(seed)
    grid = Image.fromarray(rng.integers(0, 256, (5, 5, 3), dtype=np.uint8), "RGB")
    img = np.asarray(grid.resize(size, Image.Resampling.BICUBIC)).astype(np.int16)
    img = np.clip(img + rng.integers(-10, 11, img.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img, "RGB").save(buf, "JPEG", quality=90)
    return buf.getvalue()


def candidate(sid: str, url: str) -> Candidate:
    return Candidate(
        source="demo", source_id=sid, url=url, license="by", license_version="4.0",
        license_url="https://creativecommons.org/licenses/by/4.0/", title=f"Picture {sid}",
        creator="Test Creator", landing_url=f"https://example.org/works/{sid}", provider="test",
    )


class ListSource:
    """A source over a fixed list of candidates (what a URL list source does, minus the file)."""

    name = "demo"

    def __init__(self, candidates: list[Candidate]):
        self._candidates = candidates

    def candidates(self) -> Iterator[Candidate]:
        yield from self._candidates

    def describe(self) -> dict[str, Any]:
        return {"kind": "demo", "test_list": True}


def list_opener(candidates: list[Candidate]):
    @contextlib.contextmanager
    def opener(_spec: Any) -> Iterator[ListSource]:
        yield ListSource(candidates)

    return opener


def spec(name: str = "crawl", unit_size: int = 4, workers: int = 1, **fetch: Any) -> PipelineSpec:
    """A fast spec: people filter off, loopback allowlisted, short timeouts, quick backoff."""
    f = {"threads": 8, "retries": 1, "backoff": 0.05, "connect_timeout": 2, "read_timeout": 2,
         "total_timeout": 3, "allow_private": ["127.0.0.1"], "per_host_rate": 0, **fetch}
    return parse_spec({
        "name": name, "version": "1.0.0", "source": {"kind": "demo"},
        "license": {"policy": "cc-by"}, "fetch": f, "image": {"max_side": 128, "min_side": 16},
        "people": {"enabled": False}, "work": {"unit_size": unit_size, "workers": workers},
        "release": {"shard_max_samples": 5},
    })


def release_files(release: Path) -> dict[str, bytes]:
    """Every file of a release by relative path, for byte-for-byte comparison."""
    return {str(p.relative_to(release)): p.read_bytes() for p in sorted(release.rglob("*")) if p.is_file()}


def write_candidates(path: Path, candidates: list[Candidate]) -> None:
    path.write_text(json.dumps([{"sid": c.source_id, "url": c.url} for c in candidates]))

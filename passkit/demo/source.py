"""The demo catalog as a source: a DemoCatalog served for the life of the source, searched through
its Openverse-format API like any Openverse source. The spec and its registry line live in
passkit.sources.demo.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from typing import Any

import requests

from passkit.demo.catalog import CATALOG, CATALOG_VERSION
from passkit.demo.server import DemoCatalog
from passkit.records import Candidate
from passkit.sources.demo import DemoSourceSpec
from passkit.sources.openverse_format import iter_search, result_to_candidate

# Builds serve the catalog on this fixed port (see build_port); DemoCatalog() alone takes a free one.
DEMO_PORT = 28731


class DemoSource:
    """Candidates from a running DemoCatalog, found through its Openverse-format search."""

    name = "demo"

    def __init__(self, spec: DemoSourceSpec, catalog: DemoCatalog) -> None:
        self.spec = spec
        self.catalog = catalog

    @property
    def base_url(self) -> str:
        return self.catalog.base_url

    def candidates(self) -> Iterator[Candidate]:
        seen: set[str] = set()
        with requests.Session() as session:
            for query in self.spec.queries:
                for result in iter_search(session, self.base_url, query, self.spec.page_size):
                    cand = result_to_candidate(result, self.name, query)
                    if cand.source_id not in seen:
                        seen.add(cand.source_id)
                        yield cand

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "demo",
            "catalog_version": CATALOG_VERSION,
            "queries": list(self.spec.queries),
            "page_size": self.spec.page_size,
            "base_url": self.base_url,
            "entries": len(CATALOG),
        }


def build_port(spec: DemoSourceSpec | None = None) -> int:
    """The port a build serves the catalog on: spec.port (if the spec grows one), $PASSKIT_DEMO_PORT, or
    DEMO_PORT. Image URLs carry the port, and the URLs are part of each unit's fingerprint and of every
    sample's metadata, so a fixed port is what lets a rerun resume and rebuild byte-identical shards."""
    port = getattr(spec, "port", None)
    if port is None:
        env = os.environ.get("PASSKIT_DEMO_PORT", "").strip()
        try:
            port = int(env) if env else DEMO_PORT
        except ValueError:
            raise ValueError(f"PASSKIT_DEMO_PORT must be a port number, got {env!r}") from None
    if not 0 <= int(port) <= 65535:
        raise ValueError(f"demo catalog port out of range: {port}")
    return int(port)


@contextlib.contextmanager
def open_demo(spec: DemoSourceSpec) -> Iterator[DemoSource]:
    port = build_port(spec)
    catalog = DemoCatalog(port=port)
    try:
        catalog.start()
    except OSError as e:
        if port == 0:
            raise
        warnings.warn(
            f"demo catalog: port {port} is taken ({e.strerror}); serving on a free port instead, so this "
            "build's image URLs differ from other builds' (no resume across runs, shards not byte-identical)",
            RuntimeWarning,
            stacklevel=3,
        )
        catalog = DemoCatalog(port=0).start()
    try:
        yield DemoSource(spec, catalog)
    finally:
        catalog.stop()

"""The demo source's registry entry: its spec, and where its opener lives.

The catalog itself (photos, the Openverse-format server, the source) is the `passkit.demo` package;
it imports numpy and requests, so it is loaded only when a demo source is opened.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from passkit.specbase import SpecModel


class DemoSourceSpec(SpecModel):
    """The embedded catalog: sample photos from installed packages, served on 127.0.0.1."""

    kind: Literal["demo"] = "demo"
    queries: list[str] = Field(default_factory=lambda: ["*"])
    page_size: int = Field(20, ge=1, le=500)
    port: int | None = Field(
        None, ge=0, le=65535,
        description="catalog port; None: $PASSKIT_DEMO_PORT or 28731, 0: any free port. Image URLs carry "
        "the port, so a fixed one lets a rerun resume and rebuild byte-identical shards",
    )


SPEC = DemoSourceSpec
OPENER = "passkit.demo.source:open_demo"

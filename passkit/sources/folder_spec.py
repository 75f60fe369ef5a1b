"""The folder source's spec: light (pydantic only), because passkit.config imports every spec and
the source itself imports an HTTP server."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from passkit.specbase import SpecModel


class FolderSourceSpec(SpecModel):
    """Local images, each with a sidecar JSON of its licence and attribution, served on 127.0.0.1 for
    the fetch stage (allowlist 127.0.0.1 in fetch.allow_private)."""

    kind: Literal["folder"] = "folder"
    path: str = Field(..., description="the folder; searched recursively in name order")
    extensions: list[str] = Field(default_factory=lambda: [".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"])
    defaults: dict[str, str] = Field(
        default_factory=dict,
        description="fields for every image its sidecar does not set, e.g. {provider: my-archive}",
    )
    port: int | None = Field(
        None, ge=0, le=65535,
        description="port of the local file server; None: $PASSKIT_FOLDER_PORT or 28732, 0: any free port",
    )


SPEC = FolderSourceSpec
OPENER = "passkit.sources.folder:open_folder"

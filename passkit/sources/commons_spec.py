"""The commons source's spec: light (pydantic only), because passkit.config imports every spec."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from passkit.sources.apiclient_spec import ApiSourceSpec


class CommonsSourceSpec(ApiSourceSpec):
    """Wikimedia Commons through the MediaWiki API: all files, or the files of one category."""

    kind: Literal["commons"] = "commons"
    api_url: str = Field("https://commons.wikimedia.org/w/api.php", description="api.php URL")
    category: str | None = Field(None, description="e.g. 'Photographs by Pascal Seibt'; None: all files")
    start: str | None = Field(None, description="allimages: first file name (gaifrom)")
    batch: int = Field(50, ge=1, le=50, description="files per request (extmetadata allows 50)")
    max_images: int | None = Field(None, ge=1, description="stop after this many files")
    maxlag: int | None = Field(5, ge=0, description="MediaWiki maxlag: back off while the replicas lag")


SPEC = CommonsSourceSpec
OPENER = "passkit.sources.commons:open_commons"

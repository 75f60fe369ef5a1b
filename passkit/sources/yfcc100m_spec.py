"""The yfcc100m source's spec: light (pydantic and the licence registry), because passkit.config
imports every spec."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from passkit import licenses
from passkit.specbase import PathList, SpecModel


class Yfcc100mSourceSpec(SpecModel):
    """The YFCC100M `yfcc100m_dataset` file(s): 23 columns (2014 Webscope) or 25 (2016 AWS release)."""

    kind: Literal["yfcc100m"] = "yfcc100m"
    paths: PathList = Field(..., min_length=1, description="dataset files, plain or compressed; local or fsspec")
    layout: Literal["auto", "23", "25"] = Field(
        "auto", description="columns per line; auto: read from each file's first line"
    )
    max_per_creator: int | None = Field(
        80, ge=1, description="at most this many candidates per Flickr user (PASS kept 80); None: no cap"
    )
    licenses: list[str] = Field(
        default_factory=list,
        description="pre-filter: only rows whose licence is one of these registry families (by, by-sa, cc0) "
        "or ids (cc-by-2.0) become candidates; the others are counted, not listed. Empty: every row",
    )
    limit: int | None = Field(None, ge=1, description="stop after this many lines (sampling, tests)")

    @field_validator("licenses")
    @classmethod
    def _known_licenses(cls, items: list[str]) -> list[str]:
        for item in items:
            if item in licenses.FAMILIES or item in ("cc0", "pdm"):
                continue
            try:
                licenses.by_id(item)
            except licenses.LicenseError as e:
                raise ValueError(f"{item!r} is neither a licence family (by, by-sa, ..., cc0, pdm) nor {e.detail}") from e
        return items


SPEC = Yfcc100mSourceSpec
OPENER = "passkit.sources.yfcc100m:open_yfcc100m"

"""The urllist source's spec: light (pydantic only), because passkit.config imports every spec."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from passkit.specbase import SpecModel

URLLIST_FIELDS = (
    "id", "url", "license", "license_version", "license_url", "title", "creator", "creator_url",
    "landing_url", "provider",
)


class UrlListSourceSpec(SpecModel):
    """A table of image URLs with licence and attribution columns: csv, tsv, jsonl or parquet."""

    kind: Literal["urllist"] = "urllist"
    paths: list[str] = Field(
        ..., min_length=1,
        description="local paths or fsspec URLs (s3://, gs://, https://); .gz/.bz2/.xz/.zst read transparently",
    )
    format: Literal["auto", "csv", "tsv", "jsonl", "parquet"] = Field(
        "auto", description="auto: from the file name (.csv, .tsv, .jsonl/.ndjson, .parquet, before any .gz)"
    )
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="candidate field -> column name in the file, for fields whose column is named differently; "
        f"fields: {', '.join(URLLIST_FIELDS)}",
    )
    provider: str | None = Field(None, description="provider written on rows without a provider column")

    @field_validator("paths", mode="before")
    @classmethod
    def _one_path(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("columns")
    @classmethod
    def _known_columns(cls, cols: dict[str, str]) -> dict[str, str]:
        bad = sorted(set(cols) - set(URLLIST_FIELDS))
        if bad:
            raise ValueError(f"unknown field(s) {', '.join(bad)}; map any of: {', '.join(URLLIST_FIELDS)}")
        return cols


SPEC = UrlListSourceSpec
OPENER = "passkit.sources.urllist:open_urllist"

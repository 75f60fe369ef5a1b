"""The urllist source's spec: light (pydantic only), because passkit.config imports every spec."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Literal

from pydantic import Field, field_validator, model_validator

from passkit.specbase import PathList, SpecModel

URLLIST_FIELDS = (
    "id", "url", "license", "license_version", "license_url", "title", "creator", "creator_url",
    "landing_url", "provider",
)
COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst", ".zstd")
SUFFIXES = (
    (".csv", "csv"), (".tsv", "tsv"), (".tab", "tsv"), (".jsonl", "jsonl"), (".ndjson", "jsonl"),
    (".json", "jsonl"), (".parquet", "parquet"), (".pq", "parquet"),
)


def detect_format(path: str) -> str:
    """csv, tsv, jsonl or parquet from the file name (before any compression suffix); ValueError otherwise."""
    name = PurePosixPath(path.split("?")[0]).name.lower()
    for c in COMPRESSIONS:
        name = name.removesuffix(c)
    for suffix, fmt in SUFFIXES:
        if name.endswith(suffix):
            return fmt
    raise ValueError(f"{path}: cannot tell the format from the name; set format: csv|tsv|jsonl|parquet")


class UrlListSourceSpec(SpecModel):
    """A table of image URLs with licence and attribution columns: csv, tsv, jsonl or parquet."""

    kind: Literal["urllist"] = "urllist"
    paths: PathList = Field(
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

    @field_validator("columns")
    @classmethod
    def _known_columns(cls, cols: dict[str, str]) -> dict[str, str]:
        bad = sorted(set(cols) - set(URLLIST_FIELDS))
        if bad:
            raise ValueError(f"unknown field(s) {', '.join(bad)}; map any of: {', '.join(URLLIST_FIELDS)}")
        return cols

    @model_validator(mode="after")
    def _known_formats(self) -> UrlListSourceSpec:
        # refused with the spec, not when the crawl reaches the file
        if self.format == "auto":
            for p in self.paths:
                detect_format(p)
        return self


SPEC = UrlListSourceSpec
OPENER = "passkit.sources.urllist:open_urllist"

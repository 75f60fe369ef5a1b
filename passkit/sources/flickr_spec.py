"""The flickr source's spec: light (pydantic only), because passkit.config imports every spec."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from passkit.sources.apiclient_spec import ApiSourceSpec


class FlickrSourceSpec(ApiSourceSpec):
    """flickr.photos.search with licence ids and owner/licence/URL extras; the key comes from the env."""

    kind: Literal["flickr"] = "flickr"
    api_url: str = Field("https://api.flickr.com/services/rest/", description="REST endpoint")
    api_key_env: str = Field("FLICKR_API_KEY", description="env var holding the API key (never the spec)")
    queries: list[str] = Field(default_factory=list, description="free-text searches")
    tags: list[str] = Field(default_factory=list, description="tag searches (tag_mode all within one item)")
    licenses: list[str] = Field(
        default_factory=lambda: ["4"], description="Flickr licence ids to ask for; 4 is CC BY 2.0"
    )
    per_page: int = Field(250, ge=1, le=500)
    max_pages: int = Field(16, ge=1, description="Flickr returns at most about 4000 results per search")
    sizes: list[str] = Field(
        default_factory=lambda: ["url_l", "url_c", "url_z", "url_m"],
        description="image URL extras in order of preference",
    )
    sort: str = "relevance"
    params: dict[str, str] = Field(default_factory=dict, description="further search arguments, e.g. min_upload_date")
    license_table: Literal["static", "api"] = Field(
        "static", description="static: passkit's id table (0-10); api: read flickr.photos.licenses.getInfo"
    )

    @model_validator(mode="after")
    def _something_to_search(self) -> FlickrSourceSpec:
        if not self.queries and not self.tags:
            raise ValueError("give queries or tags: Flickr needs something to search for")
        for lid in self.licenses:
            if not lid.isdigit():
                raise ValueError(f"Flickr licence ids are numbers (4 is CC BY 2.0), got {lid!r}")
        return self


SPEC = FlickrSourceSpec
OPENER = "passkit.sources.flickr:open_flickr"

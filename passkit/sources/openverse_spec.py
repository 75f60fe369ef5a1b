"""The openverse source's spec: light (pydantic only), because passkit.config imports every spec."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from passkit.sources.apiclient_spec import ApiSourceSpec

OPENVERSE_LICENSES = ("by", "by-sa", "by-nd", "by-nc", "by-nc-sa", "by-nc-nd", "cc0", "pdm", "sampling+", "nc-sampling+")


class OpenverseSourceSpec(ApiSourceSpec):
    """Openverse image search (GET /v1/images/): anonymous, or with OAuth2 client credentials."""

    kind: Literal["openverse"] = "openverse"
    api_url: str = Field("https://api.openverse.org", description="API root; tests point it at 127.0.0.1")
    queries: list[str] = Field(..., min_length=1, description="search terms, one search each")
    page_size: int | None = Field(
        None, ge=1, le=500, description="results per page; None: 20 anonymous, 500 with a token (more than 20 "
        "needs a token)",
    )
    max_pages: int = Field(20, ge=1, le=20, description="pages per query (Openverse serves at most 20)")
    license: list[Literal[OPENVERSE_LICENSES]] = Field(  # type: ignore[valid-type]
        default_factory=list, description="Openverse licence filter, e.g. [by, cc0]; empty: no filter"
    )
    license_type: list[Literal["all", "all-cc", "commercial", "modification"]] = Field(default_factory=list)
    params: dict[str, str] = Field(
        default_factory=dict, description="further search filters, e.g. {source: flickr, extension: jpg}"
    )
    client_id_env: str = Field("OPENVERSE_CLIENT_ID", description="env var holding the OAuth2 client id")
    client_secret_env: str = Field("OPENVERSE_CLIENT_SECRET", description="env var holding the client secret")
    cursor: str | None = Field(
        None, description="page journal (JSONL): pages fetched once are replayed from it, so a rerun "
        "resumes where the last one stopped without asking the API again",
    )

    @field_validator("params")
    @classmethod
    def _no_paging(cls, p: dict[str, str]) -> dict[str, str]:
        clash = sorted(set(p) & {"q", "page", "page_size", "license", "license_type"})
        if clash:
            raise ValueError(f"set {', '.join(clash)} with their own fields, not in params")
        return p


SPEC = OpenverseSourceSpec
OPENER = "passkit.sources.openverse:open_openverse"

"""The spec fields every API source shares (Openverse, Commons, Flickr); light, like every spec module."""

from __future__ import annotations

from pydantic import Field

from passkit.specbase import SpecModel


class ApiSourceSpec(SpecModel):
    """Settings every API client shares: who we are, how long we wait, how politely we ask."""

    user_agent: str | None = Field(
        None, description="User-Agent for API calls; None: passkit's identifying default (APIs ask for one)"
    )
    timeout: float = Field(30.0, gt=0, description="seconds for one API request")
    request_interval: float = Field(1.0, ge=0, description="minimum seconds between two API requests")
    max_retries: int = Field(4, ge=0, le=20, description="retries after 429/5xx or a network error")
    max_retry_wait: float = Field(
        120.0, ge=0, description="longest Retry-After waited in place; a longer one stops with a clear error"
    )

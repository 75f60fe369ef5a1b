"""Openverse's image-search JSON: one result -> one `Candidate`, and a plain pager.

Shared by the embedded demo catalog (which speaks this format) and the Openverse client, which
adds tokens, 429 Retry-After handling and result-count caps on top of `iter_search`.
Field names follow GET /v1/images/ (see tests fixtures under shared/data/fixtures/openverse).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import requests

from passkit.records import Candidate

SEARCH_PATH = "/v1/images/"

# Result fields carried in Candidate.extra when present (the TASL fields have their own slots).
_EXTRA_FIELDS = ("source", "category", "filetype", "filesize", "width", "height", "description")


class OpenverseFormatError(ValueError):
    """A search response or result that does not have the shape Openverse documents."""


def _text(value: Any) -> str | None:
    """Openverse gives missing values as null or ""; both mean absent."""
    if value is None:
        return None
    s = str(value).strip()
    return s or None


def result_to_candidate(result: dict[str, Any], source: str, query: str | None) -> Candidate:
    """Map one search result to a Candidate; raw licence fields are passed on unjudged."""
    source_id = _text(result.get("id"))
    url = _text(result.get("url"))
    if source_id is None or url is None:
        raise OpenverseFormatError(f"search result without id or url: {str(result)[:200]}")
    extra: dict[str, Any] = {k: result[k] for k in _EXTRA_FIELDS if result.get(k) not in (None, "")}
    tags = [t.get("name") for t in result.get("tags") or () if isinstance(t, dict) and t.get("name")]
    if tags:
        extra["tags"] = tags
    return Candidate(
        source=source,
        source_id=source_id,
        url=url,
        license=_text(result.get("license")),
        license_version=_text(result.get("license_version")),
        license_url=_text(result.get("license_url")),
        title=_text(result.get("title")),
        creator=_text(result.get("creator")),
        creator_url=_text(result.get("creator_url")),
        landing_url=_text(result.get("foreign_landing_url")),
        provider=_text(result.get("provider")),
        query=query,
        extra=extra,
    )


PageFetcher = Callable[[int], dict[str, Any]]


def iter_search(
    session: requests.Session | None,
    base_url: str,
    query: str,
    page_size: int,
    max_pages: int | None = None,
    *,
    timeout: float = 30.0,
    fetch_page: PageFetcher | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield the results of GET {base_url}/v1/images/?q=..&page=..&page_size=.. page by page.

    Stops after `page_count` pages, at the first empty page, or after `max_pages`. By default each
    page is a plain GET whose HTTP errors raise `requests.HTTPError`; the Openverse client passes
    `fetch_page(page) -> body` instead, which adds filters, tokens, 429 handling and its cursor.
    """
    endpoint = base_url.rstrip("/") + SEARCH_PATH

    def plain(page: int) -> dict[str, Any]:
        assert session is not None, "iter_search needs a session or fetch_page"
        resp = session.get(endpoint, params={"q": query, "page": page, "page_size": page_size}, timeout=timeout)
        resp.raise_for_status()
        try:
            return resp.json()
        except ValueError as e:
            raise OpenverseFormatError(f"{resp.url}: response is not JSON") from e

    get = fetch_page or plain
    page = 1
    while max_pages is None or page <= max_pages:
        body = get(page)
        results = body.get("results") if isinstance(body, dict) else None
        if not isinstance(results, list):
            raise OpenverseFormatError(f"{endpoint} q={query!r} page {page}: response has no 'results' list")
        if not results:
            return
        yield from results
        page_count = body.get("page_count")
        if isinstance(page_count, int) and page >= page_count:
            return
        page += 1

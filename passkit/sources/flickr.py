"""Flickr as a source: `flickr.photos.search` by text or tags, restricted to licence ids, with the
extras a credit needs (owner_name, license, url_*), page by page.

The API key is read from the environment (`api_key_env`, FLICKR_API_KEY by default) so it never lands
in a spec, a manifest or a log. Licences travel as `flickr:<id>` and are normalised by the licence
registry's id table; with `license_table: api` the live `flickr.photos.licenses.getInfo` table is read
once and its licence URL is passed on instead, which also covers ids newer than passkit's table.
Flickr answers at most about 4000 distinct results per search; beyond that pages repeat, so results
are de-duplicated by photo id.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from passkit.licenses import clean_text
from passkit.records import Candidate
from passkit.sources.apiclient import ApiClient, ApiError
from passkit.sources.flickr_spec import FlickrSourceSpec

EXTRAS = "description,license,date_upload,date_taken,owner_name,tags,o_dims,media"


def _int(v: Any, default: int = 0) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return default


def photo_to_candidate(
    photo: dict[str, Any], query: str, sizes: list[str], table: dict[str, tuple[str, str]] | None = None
) -> Candidate:
    """One `photo` element -> a Candidate (an error candidate when it has no id or no image URL)."""
    pid = str(photo.get("id") or "").strip()
    owner = str(photo.get("owner") or "").strip()
    if not pid:
        return Candidate("flickr", f"q:{query}:{photo.get('secret', '?')}", "", query=query,
                         error=("missing_id", f"photo without id: {str(photo)[:120]}"))
    url = next((str(photo[s]) for s in sizes if photo.get(s)), "")
    landing = f"https://www.flickr.com/photos/{owner}/{pid}" if owner else None
    if not url:
        return Candidate("flickr", pid, "", query=query, landing_url=landing,
                         error=("missing_url", f"none of {', '.join(sizes)} in the answer"))
    lid = str(photo.get("license", "")).strip()
    lic_name: str | None = f"flickr:{lid}" if lid else None
    lic_url: str | None = None
    if table is not None and lid in table:
        lic_name, lic_url = None, table[lid][1] or None
        if lic_url is None:
            lic_name = table[lid][0]
    desc = photo.get("description")
    if isinstance(desc, dict):
        desc = desc.get("_content")
    extra: dict[str, Any] = {"flickr_license": lid}
    for k in ("dateupload", "datetaken", "o_width", "o_height"):
        if photo.get(k) not in (None, ""):
            extra[k] = photo[k]
    if photo.get("tags"):
        extra["tags"] = str(photo["tags"]).split()
    if desc:
        extra["description"] = clean_text(str(desc))
    return Candidate(
        source="flickr",
        source_id=pid,
        url=url,
        license=lic_name,
        license_url=lic_url,
        title=clean_text(str(photo.get("title") or "")),
        creator=clean_text(str(photo.get("ownername") or "")),
        creator_url=f"https://www.flickr.com/photos/{owner}/" if owner else None,
        landing_url=landing,
        provider="flickr",
        query=query,
        extra=extra,
    )


class FlickrSource:
    name = "flickr"

    def __init__(self, spec: FlickrSourceSpec, client: ApiClient | None = None) -> None:
        self.spec = spec
        self.api_key = os.environ.get(spec.api_key_env, "").strip()
        if not self.api_key:
            raise ValueError(
                f"flickr: no API key; put it in the environment variable {spec.api_key_env} "
                "(https://www.flickr.com/services/apps/create/)"
            )
        self.client = client or ApiClient(
            "flickr", spec.user_agent, spec.timeout, spec.request_interval, spec.max_retries, spec.max_retry_wait
        )
        self.table: dict[str, tuple[str, str]] | None = None
        self.stats: dict[str, int] = {"requests": 0, "photos": 0, "duplicates": 0, "videos": 0}

    def _call(self, method: str, **params: Any) -> dict[str, Any]:
        p = {"method": method, "api_key": self.api_key, "format": "json", "nojsoncallback": 1, **params}
        body = self.client.get_json(self.spec.api_url, p)
        self.stats["requests"] += 1
        if not isinstance(body, dict):
            raise ApiError(f"flickr: {method} answered {str(body)[:200]}")
        if body.get("stat") != "ok":
            raise ApiError(f"flickr: {method} failed: code {body.get('code')}: {body.get('message')}")
        return body

    def _license_table(self) -> dict[str, tuple[str, str]]:
        body = self._call("flickr.photos.licenses.getInfo")
        items = (body.get("licenses") or {}).get("license") or []
        return {str(x.get("id")): (str(x.get("name") or ""), str(x.get("url") or "")) for x in items}

    def _searches(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for q in self.spec.queries:
            yield q, {"text": q}
        for t in self.spec.tags:
            yield f"tags:{t}", {"tags": t, "tag_mode": "all"}

    def candidates(self) -> Iterator[Candidate]:
        if self.spec.license_table == "api" and self.table is None:
            self.table = self._license_table()
        s = self.spec
        extras = ",".join([EXTRAS, *s.sizes])
        seen: set[str] = set()  # bounded: searches x max_pages x per_page
        for label, search in self._searches():
            page = 1
            while page <= s.max_pages:
                body = self._call(
                    "flickr.photos.search",
                    **search,
                    license=",".join(s.licenses),
                    extras=extras,
                    per_page=s.per_page,
                    page=page,
                    sort=s.sort,
                    media="photos",
                    content_type=1,
                    safe_search=1,
                    **s.params,
                )
                photos = body.get("photos") or {}
                items = photos.get("photo") or []
                for photo in items:
                    self.stats["photos"] += 1
                    if photo.get("media") == "video":
                        self.stats["videos"] += 1
                        continue
                    cand = photo_to_candidate(photo, label, s.sizes, self.table)
                    if cand.source_id in seen:
                        self.stats["duplicates"] += 1
                        continue
                    seen.add(cand.source_id)
                    yield cand
                if not items or page >= _int(photos.get("pages"), 1):
                    break
                page += 1

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "flickr",
            "api_url": self.spec.api_url,
            "queries": list(self.spec.queries),
            "tags": list(self.spec.tags),
            "licenses": list(self.spec.licenses),
            "per_page": self.spec.per_page,
            "max_pages": self.spec.max_pages,
            "license_table": self.spec.license_table,
            "stats": self.stats,
        }

    def close(self) -> None:
        self.client.close()


@contextlib.contextmanager
def open_flickr(spec: FlickrSourceSpec) -> Iterator[FlickrSource]:
    src = FlickrSource(spec)
    try:
        yield src
    finally:
        src.close()

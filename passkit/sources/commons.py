"""Wikimedia Commons as a source, through the MediaWiki API.

One request lists a batch of files (`generator=allimages`, or `generator=categorymembers` for a
category) with `prop=imageinfo&iiprop=url|extmetadata|mediatype|size`; the `continue` block of each
answer goes into the next request until there is none. When a batch's properties span several
answers (a `continue` without `batchcomplete`), a page can come back more than once: it is emitted
the first time it carries its imageinfo.

Licence: `LicenseShortName` ("CC BY-SA 4.0", "CC BY-SA 3.0 de", "Public domain", "No restrictions")
plus `LicenseUrl`, which Commons leaves out for public-domain files; both go to the licence gate
unjudged. Creator: `Artist` is HTML; the text is the creator and a single link in it the creator URL.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

from passkit.licenses import clean_text
from passkit.records import Candidate
from passkit.sources.apiclient import ApiClient, ApiError
from passkit.sources.commons_spec import CommonsSourceSpec

PROVIDER = "wikimedia_commons"
EXTMETADATA = (
    "Artist|LicenseShortName|LicenseUrl|License|AttributionRequired|Attribution|ObjectName|UsageTerms|"
    "Credit|Copyrighted|Restrictions"
)
_HREF = re.compile(r"""<a\s[^>]*?href\s*=\s*["']([^"']+)["']""", re.I)


def _meta(em: dict[str, Any], name: str) -> str | None:
    v = em.get(name)
    if isinstance(v, dict):
        v = v.get("value")
    if v is None:
        return None
    s = str(v).strip()
    return s or None


def creator_from_html(artist: str | None) -> tuple[str | None, str | None]:
    """(plain creator name, creator URL) from Commons' HTML `Artist`; the URL only when one link."""
    if not artist:
        return None, None
    links = _HREF.findall(artist)
    url = None
    if len(links) == 1:
        href = links[0].replace("&amp;", "&")
        if href.startswith("//"):
            href = "https:" + href
        if href.startswith(("http://", "https://")):
            url = href
    return clean_text(artist), url


def page_to_candidate(page: dict[str, Any], query: str | None) -> Candidate | None:
    """One API page -> a Candidate; None when the page has no imageinfo yet (continued batch)."""
    infos = page.get("imageinfo")
    if not isinstance(infos, list) or not infos:
        return None
    ii = infos[0]
    pageid = page.get("pageid")
    title = str(page.get("title") or "")
    source_id = str(pageid) if pageid is not None else f"title:{title}"
    url = str(ii.get("url") or "").strip()
    if not url:
        return Candidate("commons", source_id, "", query=query, landing_url=ii.get("descriptionurl"),
                         error=("missing_url", f"{title or source_id}: imageinfo has no url"))
    em = ii.get("extmetadata") if isinstance(ii.get("extmetadata"), dict) else {}
    creator, creator_url = creator_from_html(_meta(em, "Artist"))
    name = clean_text(_meta(em, "ObjectName"))
    if not name and title:
        name = re.sub(r"\.[A-Za-z0-9]{2,5}$", "", title.removeprefix("File:"))
    extra: dict[str, Any] = {}
    for key, field in (("AttributionRequired", "attribution_required"), ("UsageTerms", "usage_terms"),
                       ("License", "license_template"), ("Copyrighted", "copyrighted")):
        v = _meta(em, key)
        if v is not None:
            extra[field] = v
    for key, field in (("Attribution", "attribution_text"), ("Credit", "credit")):
        v = clean_text(_meta(em, key))
        if v:
            extra[field] = v
    for k in ("width", "height", "size", "mediatype", "mime"):
        if ii.get(k) is not None:
            extra[k] = ii[k]
    return Candidate(
        source="commons",
        source_id=source_id,
        url=url,
        license=clean_text(_meta(em, "LicenseShortName")),
        license_url=_meta(em, "LicenseUrl"),
        title=name,
        creator=creator,
        creator_url=creator_url,
        landing_url=ii.get("descriptionurl") or None,
        provider=PROVIDER,
        query=query,
        extra=extra,
    )


def iter_pages(body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Pages of a query answer, formatversion 1 (dict by id) or 2 (list), in the answer's order."""
    pages = (body.get("query") or {}).get("pages") or {}
    yield from (pages.values() if isinstance(pages, dict) else pages)


class CommonsSource:
    name = "commons"

    def __init__(self, spec: CommonsSourceSpec, client: ApiClient | None = None) -> None:
        self.spec = spec
        self.client = client or ApiClient(
            "commons", spec.user_agent, spec.timeout, spec.request_interval, spec.max_retries, spec.max_retry_wait
        )
        self.query = f"Category:{spec.category.removeprefix('Category:')}" if spec.category else "allimages"
        self.stats: dict[str, int] = {"requests": 0, "pages": 0, "emitted": 0, "skipped_media": 0}

    def _params(self) -> dict[str, Any]:
        s = self.spec
        p: dict[str, Any] = {
            "action": "query",
            "format": "json",
            "prop": "imageinfo",
            "iiprop": "url|extmetadata|mediatype|size|mime",
            "iiextmetadatafilter": EXTMETADATA,
            "iiextmetadatalanguage": "en",
            "continue": "",
        }
        if s.maxlag is not None:
            p["maxlag"] = s.maxlag
        if s.category:
            p.update(generator="categorymembers", gcmtitle=self.query, gcmtype="file", gcmlimit=s.batch)
        else:
            p.update(generator="allimages", gailimit=s.batch, gaisort="name")
            if s.start:
                p["gaifrom"] = s.start
        return p

    def _get(self, params: dict[str, Any]) -> dict[str, Any]:
        for _ in range(self.client.max_retries + 1):
            body = self.client.get_json(self.spec.api_url, params)
            self.stats["requests"] += 1
            if not isinstance(body, dict):
                raise ApiError(f"commons: answer is not a JSON object: {str(body)[:200]}")
            err = body.get("error")
            if isinstance(err, dict) and err.get("code") == "maxlag":
                self.client.wait(min(5.0, self.client.max_retry_wait))  # replicas lag: wait, ask again
                continue
            if err:
                raise ApiError(f"commons: API error {err.get('code') if isinstance(err, dict) else ''}: "
                               f"{err.get('info') if isinstance(err, dict) else err}")
            return body
        raise ApiError("commons: the servers kept reporting maxlag; try again later")

    def candidates(self) -> Iterator[Candidate]:
        params = self._params()
        batch_seen: set[str] = set()  # ids emitted in the current generator batch (bounded by `batch`)
        emitted = 0
        while True:
            body = self._get(params)
            for page in iter_pages(body):
                self.stats["pages"] += 1
                cand = page_to_candidate(page, self.query)
                if cand is None or cand.source_id in batch_seen:
                    continue
                batch_seen.add(cand.source_id)
                media = cand.extra.get("mediatype")
                if media is not None and media != "BITMAP" and cand.error is None:
                    self.stats["skipped_media"] += 1  # video, audio, drawings (SVG), office documents
                    continue
                yield cand
                emitted += 1
                self.stats["emitted"] = emitted
                if self.spec.max_images is not None and emitted >= self.spec.max_images:
                    return
            cont = body.get("continue")
            if "batchcomplete" in body:
                batch_seen.clear()
            if not isinstance(cont, dict) or not cont:
                return
            params = {**self._params(), **cont}

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "commons",
            "api_url": self.spec.api_url,
            "query": self.query,
            "batch": self.spec.batch,
            "max_images": self.spec.max_images,
            "stats": self.stats,
        }

    def close(self) -> None:
        self.client.close()


@contextlib.contextmanager
def open_commons(spec: CommonsSourceSpec) -> Iterator[CommonsSource]:
    src = CommonsSource(spec)
    try:
        yield src
    finally:
        src.close()

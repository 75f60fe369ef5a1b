"""Openverse image search as a source: queries x pages, licence filters, OAuth2 client credentials,
429 Retry-After, and a page journal that makes a rerun resume without asking the API again.

Openverse serves at most 20 pages per search, 20 results a page to anonymous clients and up to 500
with a token (https://api.openverse.org/v1/). Credentials come from the environment, never the spec.
The journal (spec `cursor`) stores each page body as fetched; on a rerun the same pages are replayed
in the same order, so the candidate list (and with it every work unit's fingerprint) is unchanged
and only the pages not fetched yet cost requests.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from passkit.records import Candidate
from passkit.sources.apiclient import ApiClient, ApiError
from passkit.sources.openverse_format import (
    SEARCH_PATH,
    OpenverseFormatError,
    iter_search,
    result_to_candidate,
)
from passkit.sources.openverse_spec import OpenverseSourceSpec

TOKEN_PATH = "/v1/auth_tokens/token/"
ANON_MAX_PAGE_SIZE = 20


class PageJournal:
    """Append-only JSONL of fetched pages, indexed by request key; only offsets are held in memory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offsets: dict[str, int] = {}
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            with path.open("rb") as f:
                while True:
                    pos = f.tell()
                    line = f.readline()
                    if not line:
                        break
                    try:
                        key = json.loads(line)["key"]
                    except (ValueError, KeyError, TypeError):
                        continue  # a line cut short by a crash: that page is simply fetched again
                    self.offsets.setdefault(key, pos)
        self._out = path.open("ab")

    def get(self, key: str) -> dict[str, Any] | None:
        pos = self.offsets.get(key)
        if pos is None:
            return None
        with self.path.open("rb") as f:
            f.seek(pos)
            return json.loads(f.readline())["body"]

    def put(self, key: str, query: str, page: int, body: dict[str, Any]) -> None:
        pos = self._out.seek(0, os.SEEK_END)
        rec = {"key": key, "query": query, "page": page, "body": body}
        self._out.write(json.dumps(rec, ensure_ascii=False, separators=(",", ":")).encode() + b"\n")
        self._out.flush()
        self.offsets[key] = pos

    def close(self) -> None:
        self._out.close()


class OpenverseSource:
    name = "openverse"

    def __init__(self, spec: OpenverseSourceSpec, client: ApiClient | None = None) -> None:
        self.spec = spec
        self.client = client or ApiClient(
            "openverse",
            spec.user_agent,
            spec.timeout,
            spec.request_interval,
            spec.max_retries,
            spec.max_retry_wait,
        )
        self.api = spec.api_url.rstrip("/")
        self.client_id = os.environ.get(spec.client_id_env, "").strip()
        self.client_secret = os.environ.get(spec.client_secret_env, "").strip()
        self.authenticated = bool(self.client_id and self.client_secret)
        if bool(self.client_id) != bool(self.client_secret):
            raise ValueError(
                f"openverse: set both {spec.client_id_env} and {spec.client_secret_env}, or neither (anonymous)"
            )
        limit = 500 if self.authenticated else ANON_MAX_PAGE_SIZE
        self.page_size = spec.page_size or limit
        if self.page_size > limit:
            raise ValueError(
                f"openverse: page_size {self.page_size} needs a token (anonymous clients get at most "
                f"{ANON_MAX_PAGE_SIZE}); set {spec.client_id_env} and {spec.client_secret_env}, or lower page_size"
            )
        self.journal = PageJournal(Path(spec.cursor)) if spec.cursor else None
        self._token: str | None = None
        self._token_expires = 0.0
        self.stats: dict[str, int] = {"pages_fetched": 0, "pages_replayed": 0, "results": 0, "malformed": 0,
                                      "duplicates": 0}

    # -- auth

    def _auth_headers(self, refresh: bool = False) -> dict[str, str]:
        if not self.authenticated:
            return {}
        if refresh or self._token is None or time.monotonic() > self._token_expires - 60:
            body = self.client.json(
                "POST",
                self.api + TOKEN_PATH,
                data={
                    "grant_type": "client_credentials",
                    "client_id": self.client_id,
                    "client_secret": self.client_secret,
                },
            )
            token = body.get("access_token") if isinstance(body, dict) else None
            if not token:
                raise ApiError(f"openverse: token endpoint answered without access_token: {str(body)[:200]}")
            self._token = str(token)
            self._token_expires = time.monotonic() + float(body.get("expires_in") or 3600)
        return {"Authorization": f"Bearer {self._token}"}

    # -- pages

    def _params(self, query: str, page: int) -> dict[str, Any]:
        p: dict[str, Any] = {"q": query, "page": page, "page_size": self.page_size}
        if self.spec.license:
            p["license"] = ",".join(self.spec.license)
        if self.spec.license_type:
            p["license_type"] = ",".join(self.spec.license_type)
        p.update(self.spec.params)
        return p

    def _key(self, params: dict[str, Any]) -> str:
        blob = json.dumps({"api": self.api, **params}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:32]

    def _page(self, query: str, page: int) -> dict[str, Any]:
        params = self._params(query, page)
        key = self._key(params)
        if self.journal is not None:
            body = self.journal.get(key)
            if body is not None:
                self.stats["pages_replayed"] += 1
                return body
        url = self.api + SEARCH_PATH
        resp = self.client.request("GET", url, params=params, headers=self._auth_headers())
        if resp.status_code == 401 and self.authenticated:  # token expired early or was revoked
            resp = self.client.request("GET", url, params=params, headers=self._auth_headers(refresh=True))
        if resp.status_code == 400 and page > 1:
            # Past the last page Openverse answers 400 "Invalid page"; the search is simply over.
            body = {"results": [], "page": page, "note": f"HTTP 400 past the end: {resp.text[:200]}"}
        elif resp.status_code >= 400:
            raise ApiError(f"openverse: HTTP {resp.status_code} for q={query!r} page {page}: {resp.text[:300]}",
                           resp.status_code)
        else:
            try:
                body = resp.json()
            except ValueError as e:
                raise OpenverseFormatError(f"{resp.url}: response is not JSON") from e
            if not isinstance(body, dict):
                raise OpenverseFormatError(f"{resp.url}: response is not a JSON object")
        self.stats["pages_fetched"] += 1
        if self.journal is not None:
            self.journal.put(key, query, page, body)
        return body

    def candidates(self) -> Iterator[Candidate]:
        seen: set[str] = set()  # bounded: queries x 20 pages x page_size
        for query in self.spec.queries:
            pos = 0
            for result in iter_search(
                None, self.api, query, self.page_size, self.spec.max_pages,
                fetch_page=lambda page, q=query: self._page(q, page),
            ):
                pos += 1
                self.stats["results"] += 1
                try:
                    cand = result_to_candidate(result, self.name, query)
                except OpenverseFormatError as e:
                    self.stats["malformed"] += 1
                    yield Candidate(self.name, f"q:{query}:{pos}", "", query=query,
                                    error=("malformed_result", str(e)))
                    continue
                if cand.source_id in seen:
                    self.stats["duplicates"] += 1
                    continue
                seen.add(cand.source_id)
                yield cand

    def describe(self) -> dict[str, Any]:
        # `stats` is the live dict: read after the build it holds the final counts.
        return {
            "kind": "openverse",
            "api_url": self.api,
            "queries": list(self.spec.queries),
            "page_size": self.page_size,
            "max_pages": self.spec.max_pages,
            "license": list(self.spec.license),
            "license_type": list(self.spec.license_type),
            "params": dict(self.spec.params),
            "authenticated": self.authenticated,
            "cursor": self.spec.cursor,
            "stats": self.stats,
        }

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close()
        self.client.close()


@contextlib.contextmanager
def open_openverse(spec: OpenverseSourceSpec) -> Iterator[OpenverseSource]:
    src = OpenverseSource(spec)
    try:
        yield src
    finally:
        src.close()

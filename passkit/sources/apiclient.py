"""A small, polite JSON API client shared by the Openverse, Commons and Flickr sources.

Metadata APIs are not image hosts (those are the fetch stage's job): here we send an identifying
User-Agent, keep a minimum interval between requests, honour 429/503 `Retry-After` (or the
"Expected available in N seconds" that Openverse's throttle puts in the body when the header is
missing), retry network errors and 5xx with backoff, and stop with a clear error when the wait asked
for is longer than the spec allows: a build should fail loudly and resume later, not sleep an hour.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import requests

DEFAULT_USER_AGENT = "passkit/0.1 (+https://github.com/passkit/passkit; dataset builder)"
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_BODY_WAIT = re.compile(r"available in (\d+(?:\.\d+)?) seconds?", re.I)


class ApiError(RuntimeError):
    """An API answer we cannot use: an HTTP error, a non-JSON body, or an error envelope."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class ApiThrottled(ApiError):
    """The API asked us to wait longer than `max_retry_wait`."""

    def __init__(self, message: str, wait: float):
        super().__init__(message, 429)
        self.wait = wait


def retry_after(resp: requests.Response) -> float | None:
    """Seconds to wait from `Retry-After` (seconds or HTTP date), else from a DRF throttle body."""
    value = resp.headers.get("Retry-After")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
            except (TypeError, ValueError):
                pass
    try:
        m = _BODY_WAIT.search(resp.text[:2000])
    except (UnicodeDecodeError, ValueError):
        m = None
    return float(m.group(1)) if m else None


def _detail(resp: requests.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:200].strip()
    if isinstance(body, dict):
        for k in ("detail", "message", "error", "errors"):
            if body.get(k):
                return str(body[k])[:300]
    return str(body)[:200]


class ApiClient:
    """GET/POST returning parsed JSON, with politeness and retries; one per source, one thread."""

    def __init__(
        self,
        name: str,
        user_agent: str | None = None,
        timeout: float = 30.0,
        request_interval: float = 0.0,
        max_retries: int = 4,
        max_retry_wait: float = 120.0,
        backoff: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.name = name
        self.session = requests.Session()
        self.session.headers["User-Agent"] = user_agent or DEFAULT_USER_AGENT
        self.session.headers["Accept"] = "application/json"
        self.timeout = timeout
        self.request_interval = request_interval
        self.max_retries = max_retries
        self.max_retry_wait = max_retry_wait
        self.backoff = backoff
        self.sleep = sleep
        self.requests = 0  # sent, retries included
        self.waited = 0.0  # seconds slept for Retry-After and backoff
        self._last = 0.0

    def close(self) -> None:
        self.session.close()

    def _pace(self) -> None:
        gap = self._last + self.request_interval - time.monotonic()
        if gap > 0:
            self.sleep(gap)
        self._last = time.monotonic()

    def request(
        self,
        method: str,
        url: str,
        params: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """One call, retried on 429/5xx/network errors; returns the final non-retryable response."""
        attempt = 0
        while True:
            self._pace()
            self.requests += 1
            try:
                resp = self.session.request(
                    method, url, params=params, data=data, headers=dict(headers or {}), timeout=self.timeout
                )
            except requests.RequestException as e:
                if attempt >= self.max_retries:
                    raise ApiError(f"{self.name}: {url} failed after {attempt + 1} tries: {e}") from e
                self.wait(self.backoff * 2**attempt)
                attempt += 1
                continue
            if resp.status_code not in RETRY_STATUS:
                return resp
            wait = retry_after(resp)
            if wait is not None and wait > self.max_retry_wait:
                raise ApiThrottled(
                    f"{self.name}: HTTP {resp.status_code} from {resp.url}, asked to wait {wait:.0f} s "
                    f"(> max_retry_wait {self.max_retry_wait:.0f} s): {_detail(resp)}. Rerun later; pages "
                    "already fetched are kept when the source has a cursor",
                    wait,
                )
            if attempt >= self.max_retries:
                raise ApiError(
                    f"{self.name}: HTTP {resp.status_code} from {resp.url} after {attempt + 1} tries: "
                    f"{_detail(resp)}",
                    resp.status_code,
                )
            self.wait(wait if wait is not None else self.backoff * 2**attempt)
            attempt += 1

    def wait(self, seconds: float) -> None:
        """Sleep (through the injectable `sleep`) and count it."""
        self.waited += seconds
        self.sleep(seconds)

    def json(
        self,
        method: str,
        url: str,
        params: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        resp = self.request(method, url, params, data, headers)
        if resp.status_code >= 400:
            raise ApiError(f"{self.name}: HTTP {resp.status_code} from {resp.url}: {_detail(resp)}", resp.status_code)
        try:
            return resp.json()
        except ValueError as e:
            raise ApiError(f"{self.name}: {resp.url} did not answer JSON ({resp.headers.get('Content-Type')})") from e

    def get_json(self, url: str, params: Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None) -> Any:
        return self.json("GET", url, params=params, headers=headers)

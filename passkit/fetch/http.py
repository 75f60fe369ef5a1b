"""HTTP fetching: pooled sessions, timeouts, byte caps, content sniffing, retries, opt-out headers.

Every outcome is a `FetchResult`; nothing raises out of `fetch`. Failures carry a short reason
and whether they are transient (worth a later retry) or permanent.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TypeVar

import requests
from requests.adapters import HTTPAdapter

from passkit.config import FetchSpec

T = TypeVar("T")

# Magic numbers of the image formats the image check accepts.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
)
TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


def sniff(head: bytes) -> str | None:
    """The image type the first bytes announce, or None when they are not an image."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    return None


@dataclass(slots=True)
class FetchResult:
    url: str
    ok: bool
    data: bytes = b""
    status: int | None = None
    content_type: str | None = None
    reason: str | None = None  # short code when not ok: http_404, timeout, not_image, optout, ...
    detail: str | None = None
    transient: bool = False
    attempts: int = 0
    final_url: str | None = None
    seconds: float = 0.0


class _Fail(Exception):
    def __init__(self, reason: str, detail: str, transient: bool = False, retry_after: float | None = None):
        super().__init__(detail)
        self.reason, self.detail, self.transient, self.retry_after = reason, detail, transient, retry_after


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def optout_directive(headers: requests.structures.CaseInsensitiveDict, directives: Iterable[str]) -> str | None:
    """The opt-out a response carries: an X-Robots-Tag directive from the list, or tdm-reservation: 1."""
    wanted = {d.lower() for d in directives}
    for value in _header_values(headers, "x-robots-tag"):
        # "noai", "noai, noimageai", "googlebot: noai" — directives are comma or space separated.
        for token in value.replace(",", " ").split():
            token = token.strip().lower()
            if token in wanted:
                return f"X-Robots-Tag: {token}"
    if any(v.strip() == "1" for v in _header_values(headers, "tdm-reservation")):
        return "tdm-reservation: 1"
    return None


def _header_values(headers: requests.structures.CaseInsensitiveDict, name: str) -> list[str]:
    raw = headers.get(name)
    return [raw] if raw else []


class Fetcher:
    """Thread-safe: one pooled requests.Session per thread."""

    def __init__(self, spec: FetchSpec):
        self.spec = spec
        self._local = threading.local()

    def _session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = requests.Session()
            adapter = HTTPAdapter(pool_connections=32, pool_maxsize=max(4, self.spec.threads), max_retries=0)
            s.mount("http://", adapter)
            s.mount("https://", adapter)
            s.headers.update({"User-Agent": self.spec.user_agent, "Accept": "image/*,*/*;q=0.5"})
            s.max_redirects = 5
            self._local.session = s
        return s

    def fetch(self, url: str) -> FetchResult:
        t0 = time.monotonic()
        attempts = 0
        delay = self.spec.backoff
        while True:
            attempts += 1
            try:
                data, status, ctype, final = self._once(url)
                return FetchResult(url, True, data, status, ctype, attempts=attempts, final_url=final,
                                   seconds=time.monotonic() - t0)
            except _Fail as f:
                last = f
            if not last.transient or attempts > self.spec.retries:
                break
            wait = last.retry_after if last.retry_after is not None else delay * (1 + random.random())
            time.sleep(min(wait, 60.0))
            delay *= 2
        return FetchResult(url, False, reason=last.reason, detail=last.detail, transient=last.transient,
                           attempts=attempts, seconds=time.monotonic() - t0)

    def _once(self, url: str) -> tuple[bytes, int, str | None, str]:
        spec = self.spec
        try:
            r = self._session().get(url, stream=True, timeout=(spec.connect_timeout, spec.read_timeout))
        except requests.exceptions.TooManyRedirects as e:
            raise _Fail("redirect_loop", str(e)) from None
        except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                requests.exceptions.InvalidSchema, ValueError) as e:
            raise _Fail("bad_url", str(e)) from None
        except requests.exceptions.Timeout as e:
            raise _Fail("timeout", str(e), transient=True) from None
        except requests.exceptions.ConnectionError as e:
            raise _Fail("connection_error", str(e)[:300], transient=True) from None
        except requests.exceptions.RequestException as e:
            raise _Fail("request_error", str(e)[:300], transient=True) from None
        with r:
            # Opt-out is decided from the headers alone: the body of an opted-out image is never read.
            optout = optout_directive(r.headers, spec.optout_headers)
            if optout:
                raise _Fail("optout", f"{optout} on {r.url}")
            if r.status_code != 200:
                transient = r.status_code in TRANSIENT_STATUS
                raise _Fail(f"http_{r.status_code}", f"HTTP {r.status_code} {r.reason or ''}".strip(),
                            transient, _retry_after(r.headers.get("Retry-After")))
            length = r.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > spec.max_bytes:
                raise _Fail("too_large", f"Content-Length {length} over max_bytes {spec.max_bytes}")
            data = self._read_capped(r, url)
            ctype = r.headers.get("Content-Type")
            kind = sniff(data[:16])
            if kind is None:
                head = data[:24].decode("latin-1").encode("unicode_escape").decode()
                raise _Fail("not_image", f"Content-Type {ctype!r} but the bytes start {head!r}")
            return data, r.status_code, ctype, r.url

    def _read_capped(self, r: requests.Response, url: str) -> bytes:
        spec = self.spec
        deadline = time.monotonic() + spec.total_timeout
        chunks: list[bytes] = []
        total = 0
        try:
            for chunk in r.iter_content(chunk_size=64 * 1024):
                total += len(chunk)
                if total > spec.max_bytes:
                    raise _Fail("too_large", f"body over max_bytes {spec.max_bytes} (decoded)")
                if time.monotonic() > deadline:
                    raise _Fail("timeout", f"download slower than total_timeout {spec.total_timeout}s",
                                transient=True)
                chunks.append(chunk)
        except _Fail:
            raise
        except requests.exceptions.Timeout as e:
            raise _Fail("timeout", str(e), transient=True) from None
        except (requests.exceptions.RequestException, OSError) as e:
            raise _Fail("connection_error", f"while reading {url}: {str(e)[:200]}", transient=True) from None
        return b"".join(chunks)

    def map(self, fn: Callable[[T], object], items: list[T]) -> Iterator[object]:
        """Run `fn` over items on the fetch thread pool, results in input order."""
        with ThreadPoolExecutor(max_workers=min(self.spec.threads, max(1, len(items)))) as pool:
            yield from pool.map(fn, items)

"""HTTP fetching: pooled sessions, timeouts, byte caps, sniffing, retries, politeness, SSRF guard.

Every outcome is a `FetchResult`; nothing raises out of `fetch`. Failures carry a short reason
and whether they are transient (worth a later `passkit build --retry-failed`) or permanent.

Order of checks for one URL, and for every redirect target again:
URL parsed and normalised (`_request_url`) -> scheme and address (SSRF guard) -> robots.txt ->
per-host slot (concurrency, rate, Retry-After pauses) -> connect (peer address checked again) ->
status and opt-out headers -> Content-Type and Content-Length -> body, read with a byte cap and a
decoded-size cap. Redirects are followed here, not by the HTTP library, so that none of these checks
can be skipped; one loop (`Fetcher._follow`) serves images, robots.txt and landing pages (`fetch_page`,
for the audit).

Each request (one hop: connect, status line, headers, body) must finish within `fetch.total_timeout`.
A read timeout alone cannot promise that: a server that drips a byte a second never lets one read
time out. A watchdog thread shuts the socket down at the deadline, which wakes the read blocked on it
wherever it is (TLS handshake, headers or body). A response cut off before its end (status line or
headers without their final newline, a body short of its Content-Length, a chunked stream cut) is a
transient failure, never a short success.

urllib3 is used directly (one thread-safe PoolManager per Fetcher): requests adds about 0.8 ms
of Python per image on top of it (measured at 1.6 vs 0.8 CPU-ms per URL against nginx on
loopback), a sixth of the whole per-image budget, for features (cookies, auth, proxies from the
environment, redirect handling) the crawler must not use anyway.
"""

from __future__ import annotations

import contextlib
import heapq
import http.client
import ipaddress
import itertools
import math
import os
import random
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import urllib3
from requests.utils import get_encoding_from_headers, requote_uri
from urllib3 import exceptions as u3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.response import BaseHTTPResponse

from passkit.config import FetchSpec
from passkit.fetch.limiter import MAX_PAUSE, HostLimiter
from passkit.fetch.robots import RobotsCache, product_token
from passkit.fetch.ssrf import Guard, Refused
from passkit.reasons import Rejection

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
REDIRECT_STATUS = frozenset({301, 302, 303, 307, 308})
# Content-Types that announce something other than an image: refused before the body is read.
# Missing, image/*, application/octet-stream and other vague types go on to byte sniffing.
_NOT_IMAGE_PREFIXES = ("text/", "audio/", "video/", "font/", "multipart/")
_NOT_IMAGE_TYPES = frozenset({
    "application/json", "application/xml", "application/xhtml+xml", "application/javascript",
    "application/pdf", "application/zip", "application/gzip", "application/x-gzip", "application/ld+json",
})
_ENCODED = ("gzip", "deflate", "br", "zstd", "x-gzip", "compress")
_CHUNK = 256 * 1024  # one read1 returns what one recv brings, up to this
_ROBOTS_MAX = 512 * 1024
_ROBOTS_TIMEOUT = 30.0  # robots.txt is small: a host that cannot send it in this long is unavailable
# Longer URLs are refused: most servers answer 414 past 8 KB anyway, and every URL lands in the ledger.
MAX_URL = 8192
# What a host name may hold once IDNA-encoded (underscores: some real hosts have them). Anything else
# (percent escapes, controls, spaces) can only fail in DNS or confuse a parser, so it is refused first.
_HOST_NAME = re.compile(r"[a-z0-9._-]+\Z")
# Content-Length is ASCII digits (RFC 9110); str.isdigit would also take '²' (byte 0xB2 in latin-1).
_DIGITS = re.compile(r"[0-9]+\Z")


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


class _Fail(Rejection):
    """One attempt's failure, inside the fetcher; `fetch` turns the last one into a FetchResult."""

    def __init__(self, reason: str, detail: str, transient: bool = False, retry_after: float | None = None):
        super().__init__(reason, detail, transient)
        self.retry_after = retry_after  # seconds a 429/503 asked for, honoured by the backoff


def _request_url(url: str) -> str:
    """The URL as it is checked and sent: parsed once, a non-ASCII host IDNA-encoded, the rest
    percent-quoted. Raises ValueError (UnicodeError is one) for anything that could not be sent, so
    that no parser further on (the guard's, urllib3's, http.client's) meets a URL it may choke on."""
    if len(url) > MAX_URL:
        raise ValueError(f"{len(url)} characters long (at most {MAX_URL})")
    parts = urllib.parse.urlsplit(url)
    _ = parts.port  # raises ValueError on a port that is not a number in 0-65535
    host = parts.hostname or ""
    netloc = parts.netloc
    if host:
        userinfo, at, hostport = netloc.rpartition("@")
        if hostport.startswith("["):
            try:  # urlsplit only checks the brackets match
                ipaddress.ip_address(host.split("%", 1)[0])
            except ValueError:
                raise ValueError(f"{host!r} in brackets is not an IPv6 address") from None
        else:
            name, colon, port = hostport.partition(":")
            if not name.isascii():
                # The idna codec raises UnicodeError for labels IDNA cannot encode (empty, too long, ...)
                name = name.encode("idna").decode("ascii")
                netloc = f"{userinfo}{at}{name}{colon}{port}"
            if not _HOST_NAME.match(name.lower().rstrip(".") or "."):
                raise ValueError(f"host {host[:100]!r} holds characters a host name cannot")
        if netloc != parts.netloc:
            url = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return requote_uri(url)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
        return max(0.0, seconds) if math.isfinite(seconds) else None  # "inf", "nan": no usable wait
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def optout_directive(headers: Any, directives: Iterable[str]) -> str | None:
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


def _header_values(headers: Any, name: str) -> list[str]:
    """Every value of a header: urllib3's headers keep repeated lines apart (getlist)."""
    getlist = getattr(headers, "getlist", None)
    if getlist is not None:
        return [v for v in getlist(name) if v]
    value = headers.get(name)
    return [value] if value else []


class _HeadersCutOff(http.client.HTTPException):
    """The connection ended inside the status line or the headers."""


class _BadFraming(http.client.HTTPException):
    """The response's framing cannot be trusted (RFC 9112: an invalid Content-Length is unrecoverable)."""


class _LineProbe:
    """Stands in for a response's file while http.client reads the status line and headers, and notes
    a line that ends without its newline: http.client takes end-of-file for the blank line that ends
    the headers, so a response cut off there would read as a complete one with an empty body."""

    __slots__ = ("_fp", "cut")

    def __init__(self, fp: Any):
        self._fp = fp
        self.cut = False

    def readline(self, limit: int = -1) -> bytes:
        line = self._fp.readline(limit)
        if not line.endswith(b"\n"):
            self.cut = True
        return line

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fp, name)


class _CheckedResponse(http.client.HTTPResponse):
    """http.client's response, refusing a cut-off head and a Content-Length that is not one number."""

    def begin(self) -> None:
        if self.headers is not None:
            return
        raw = self.fp
        probe = _LineProbe(raw)
        self.fp = probe  # type: ignore[assignment]
        try:
            super().begin()
        finally:
            if self.fp is probe:  # (http.client drops fp when it closes on a bad status line)
                self.fp = raw
        if probe.cut:
            raise _HeadersCutOff("the connection closed inside the status line or headers")
        lengths = self.headers.get_all("Content-Length") or []
        values = {v.strip() for line in lengths for v in line.split(",")}
        chunked = "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()  # (which overrides a length)
        if values and not chunked and (len(values) > 1 or not all(_DIGITS.match(v) for v in values)):
            raise _BadFraming(f"Content-Length {', '.join(sorted(values))[:100]!r} is not one number")


class _Exchange:
    """One request's deadline and a duplicate of the socket that carries it.

    The duplicate descriptor is what the watchdog shuts down: shutdown acts on the connection, so a
    read blocked on the original (TLS included, whose socket object replaces the plain one) wakes,
    and holding our own descriptor means its number cannot be reused by another connection meanwhile.
    """

    __slots__ = ("deadline", "fired", "done", "_sock", "_lock")

    def __init__(self, deadline: float):
        self.deadline = deadline
        self.fired = False
        self.done = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    def attach(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        with self._lock:
            if self._sock is not None or self.done:
                return
            try:
                self._sock = socket.fromfd(sock.fileno(), sock.family, sock.type)
            except (OSError, ValueError):
                return  # out of descriptors, or already closed: the per-read timeouts still apply
            if self.fired:
                self._shutdown()

    def fire(self) -> None:
        with self._lock:
            if self.done:
                return
            self.fired = True
            self._shutdown()

    def close(self) -> None:
        with self._lock:
            self.done = True
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def _shutdown(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)


class _Watchdog:
    """Fires each exchange at its deadline. One thread per process, started on demand and gone
    when idle, so that many Fetchers (one per unit, many in tests) cost no thread each."""

    IDLE = 5.0  # seconds without exchanges before the thread ends

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)  # a forked worker starts its own thread

    def _reset(self) -> None:
        self._cv = threading.Condition()
        self._heap: list[tuple[float, int, _Exchange]] = []
        self._seq = itertools.count()
        self._live = 0
        self._running = False

    def watch(self, seconds: float) -> _Exchange:
        ex = _Exchange(time.monotonic() + seconds)
        with self._cv:
            heapq.heappush(self._heap, (ex.deadline, next(self._seq), ex))
            self._live += 1
            if not self._running:
                self._running = True
                threading.Thread(target=self._run, name="passkit-fetch-watchdog", daemon=True).start()
            elif self._heap[0][2] is ex:
                self._cv.notify()
        return ex

    def release(self, ex: _Exchange) -> None:
        ex.close()
        with self._cv:
            self._live -= 1
            # Finished exchanges leave the heap lazily; rebuild it when they are most of it.
            if len(self._heap) > 64 and len(self._heap) > 4 * self._live:
                self._heap = [e for e in self._heap if not e[2].done]
                heapq.heapify(self._heap)

    def _run(self) -> None:
        with self._cv:
            while True:
                now = time.monotonic()
                while self._heap and (self._heap[0][2].done or self._heap[0][0] <= now):
                    ex = heapq.heappop(self._heap)[2]
                    if not ex.done:
                        ex.fire()
                if self._heap:
                    self._cv.wait(self._heap[0][0] - now)
                    continue
                self._cv.wait(self.IDLE)
                if not self._heap:
                    self._running = False
                    return


_WATCHDOG = _Watchdog()
_CURRENT = threading.local()  # the exchange the calling thread is in, for the connection hooks


def _attach(sock: socket.socket | None) -> None:
    ex: _Exchange | None = getattr(_CURRENT, "exchange", None)
    if ex is not None:
        ex.attach(sock)


def _guarded_pools(guard: Guard) -> dict[str, type[HTTPConnectionPool]]:
    """Connection pools whose sockets are checked against the guard right after connect, watched by
    the deadline of the request they carry, and whose responses refuse a cut-off head."""

    def checked(conn: Any, sock: socket.socket) -> socket.socket:
        try:
            guard.check_peer(conn.host, sock.getpeername()[0])
        except Refused:
            sock.close()
            raise
        _attach(sock)  # before the TLS handshake, which a server can drip too
        return sock

    class GuardedHTTPConnection(HTTPConnection):
        response_class = _CheckedResponse

        def _new_conn(self) -> socket.socket:
            return checked(self, super()._new_conn())

        def request(self, *args: Any, **kwargs: Any) -> None:
            _attach(self.sock)  # a pooled connection: no _new_conn this time
            super().request(*args, **kwargs)

    class GuardedHTTPSConnection(HTTPSConnection):
        response_class = _CheckedResponse

        def _new_conn(self) -> socket.socket:
            return checked(self, super()._new_conn())

        def request(self, *args: Any, **kwargs: Any) -> None:
            _attach(self.sock)
            super().request(*args, **kwargs)

    class GuardedHTTPPool(HTTPConnectionPool):
        ConnectionCls = GuardedHTTPConnection

    class GuardedHTTPSPool(HTTPSConnectionPool):
        ConnectionCls = GuardedHTTPSConnection

    return {"http": GuardedHTTPPool, "https": GuardedHTTPSPool}


@contextlib.contextmanager
def _released(r: BaseHTTPResponse) -> Iterator[BaseHTTPResponse]:
    """Give the connection back to the pool only when the body was read to its end; anything
    else (a refused Content-Type, a capped or timed-out body, an opt-out) closes it, so no
    half-read response can leak into the next request on that connection."""
    try:
        yield r
    finally:
        fp = getattr(r, "_fp", None)
        if fp is None or fp.isclosed():
            r.release_conn()
        else:
            r.close()
            r.release_conn()


def _connection_failure(e: Exception, while_reading: bool = False) -> _Fail:
    """Name the network failure precisely: resets, refusals, truncations and answers that are not HTTP
    are told apart."""
    inner = _caused_by(e, http.client.HTTPException)
    # A server that answered, but not in HTTP (no status line, over-long or too many header lines):
    # retrying will not change that. A reset (RemoteDisconnected) or a cut-off read is another matter.
    if inner is not None and not isinstance(inner, (http.client.IncompleteRead, http.client.RemoteDisconnected)):
        return _Fail("bad_response", f"not HTTP: {type(inner).__name__}: {str(inner)[:200]}")
    text = repr(e)
    if "ConnectionResetError" in text or "Connection reset" in text or "RemoteDisconnected" in text \
            or "BrokenPipe" in text or "Connection aborted" in text:
        return _Fail("connection_reset", str(e)[:300], transient=True)
    if "IncompleteRead" in text or "InvalidChunkLength" in text:
        return _Fail("truncated_body", str(e)[:300], transient=True)
    if "ConnectionRefused" in text or "Connection refused" in text:
        return _Fail("connection_refused", str(e)[:300], transient=True)
    if "NameResolution" in text or "getaddrinfo" in text:
        return _Fail("dns_error", str(e)[:300], transient=True)
    return _Fail("connection_error", ("while reading: " if while_reading else "") + str(e)[:300], transient=True)


def _caused_by(e: BaseException, cls: type[BaseException]) -> BaseException | None:
    """The `cls` exception inside `e`: urllib3 wraps http.client's in its own, as an argument."""
    todo: list[object] = [e]
    for _ in range(16):  # wrappers nest a few deep; a bound in case one contains itself
        if not todo:
            break
        x = todo.pop()
        if isinstance(x, cls):
            return x
        if isinstance(x, BaseException):
            todo.extend(a for a in x.args if isinstance(a, BaseException))
            todo.extend(c for c in (x.__cause__, x.__context__) if c is not None)
    return None


def _unforeseen(e: Exception) -> _Fail:
    """An exception no check names: this candidate's failure, with the type in the detail to find the
    bug by. Transient, so that `--retry-failed` tries it again once passkit handles the case."""
    return _Fail("fetch_exception", f"{type(e).__name__}: {str(e)[:300]}", transient=True)


def _read_failure(e: Exception, total: int) -> _Fail:
    """Name a failure met while reading a body, after `total` bytes."""
    name = type(e).__name__
    if "Timeout" in name or "timed out" in str(e):
        return _Fail("timeout", f"read timed out after {total} bytes: {str(e)[:200]}", transient=True)
    if "Decode" in name or "zlib" in str(e).lower():
        return _Fail("bad_encoding", f"{name}: {str(e)[:200]}")
    return _connection_failure(e, while_reading=True)


def _location(r: BaseHTTPResponse, current: str) -> str:
    """The absolute redirect target, as `_request_url` gives it; raw non-UTF-8 bytes survive as percent
    escapes. Raises _Fail("bad_redirect") for a target that cannot be parsed or sent: a server's
    Location is as hostile as any URL, and whatever the parsers raise on it ends this candidate only."""
    values = _header_values(r.headers, "location")
    if len({v.strip() for v in values}) > 1:  # RFC 9110: one URI; which one to follow would be a guess
        raise _Fail("bad_redirect", f"{len(values)} different Location headers: {values[0][:100]!r}, "
                    f"{values[1][:100]!r}")
    loc = values[0].strip()
    try:
        loc = loc.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        loc = urllib.parse.quote(loc.encode("latin-1", errors="replace"), safe="/:?&=#%+@;,!$'()*~[]")
    try:
        return _request_url(urllib.parse.urljoin(current, loc))
    except (ValueError, TypeError) as e:  # ValueError covers UnicodeError (idna) and InvalidURL
        raise _Fail("bad_redirect", f"Location {loc[:200]!r}: {type(e).__name__}: {str(e)[:200]}") from None


class Fetcher:
    """Thread-safe: one pooled urllib3 PoolManager shared by the threads; politeness state too.

    `share` is this process's part of the build-wide per-host limits (1 / number of workers).
    """

    def __init__(self, spec: FetchSpec, share: float = 1.0):
        self.spec = spec
        self.guard = Guard(spec.allow_private)
        share = min(1.0, max(share, 1e-6))
        self.limiter = HostLimiter(math.ceil(spec.per_host_connections * share), spec.per_host_rate * share)
        self.robots = RobotsCache(self._fetch_robots, product_token(spec.agent)) if spec.robots else None
        # No proxies or .netrc from the environment: peers are checked directly. No retries or
        # redirects inside urllib3: both are done here, through every check.
        self.pool = urllib3.PoolManager(
            num_pools=64, maxsize=max(4, spec.threads), block=False, retries=False,
            headers={"User-Agent": spec.agent, "Accept": "image/*,*/*;q=0.5", "Accept-Encoding": "gzip, deflate"},
        )
        self.pool.pool_classes_by_scheme = _guarded_pools(self.guard)

    # ------------------------------------------------------------------ public

    def fetch(self, url: str) -> FetchResult:
        """Never raises: every outcome, an unforeseen exception included, is this URL's FetchResult."""
        t0 = time.monotonic()
        attempts = 0
        spec = self.spec
        while True:
            attempts += 1
            try:
                data, status, ctype, final = self._once(url)
                return FetchResult(url, True, data, status, ctype, attempts=attempts, final_url=final,
                                   seconds=time.monotonic() - t0)
            except _Fail as f:
                last = f
            except Exception as e:  # a case no check foresaw must end this candidate, not its unit
                last = _unforeseen(e)
                break  # the same code would raise the same way again
            if not last.transient or attempts > spec.retries:
                break
            if last.retry_after is not None:
                if last.retry_after > spec.max_retry_wait:
                    last.detail += f" (Retry-After {last.retry_after:.0f}s over max_retry_wait; left for --retry-failed)"
                    break
                wait = last.retry_after
            else:
                # Exponential backoff with jitter, so threads that failed together do not retry together.
                wait = spec.backoff * (2 ** (attempts - 1)) * (0.5 + random.random())
            time.sleep(min(wait, spec.max_retry_wait, MAX_PAUSE))
        return FetchResult(url, False, reason=last.reason, detail=last.detail, transient=last.transient,
                           attempts=attempts, seconds=time.monotonic() - t0)

    def map(self, fn: Callable[[T], object], items: list[T]) -> Iterator[object]:
        """Run `fn` over items on the fetch thread pool, results in input order."""
        with ThreadPoolExecutor(max_workers=min(self.spec.threads, max(1, len(items)))) as pool:
            yield from pool.map(fn, items)

    # ------------------------------------------------------------------ one attempt

    def _check(self, url: str) -> urllib.parse.SplitResult:
        try:
            return self.guard.check_url(url)
        except Refused as e:
            raise _Fail(e.reason, e.detail, e.transient) from None
        except (ValueError, TypeError) as e:  # the guard's parsers (ipaddress, idna) on a hostile name
            raise _Fail("bad_url", f"{url[:200]!r}: {type(e).__name__}: {str(e)[:200]}") from None

    @staticmethod
    def _host_key(parts: urllib.parse.SplitResult) -> str:
        return f"{(parts.hostname or '').lower()}:{parts.port or (443 if parts.scheme == 'https' else 80)}"

    def _get(self, url: str, timeout: tuple[float, float], headers: dict[str, str] | None = None) -> BaseHTTPResponse:
        """One GET of a URL `_request_url` gave; urllib3's and http.client's exceptions become _Fail."""
        try:
            return self.pool.request("GET", url, preload_content=False, redirect=False, headers=headers,
                                     timeout=urllib3.Timeout(connect=timeout[0], read=timeout[1]))
        except Refused as e:  # the peer check after connect (DNS rebinding)
            raise _Fail(e.reason, e.detail, e.transient) from None
        except (u3.LocationValueError, ValueError) as e:  # parse errors, unknown schemes
            raise _Fail("bad_url", str(e)[:300]) from None
        except u3.NameResolutionError as e:
            raise _Fail("dns_error", str(e)[:300], transient=True) from None
        except u3.NewConnectionError as e:  # (a ConnectTimeoutError subclass: refusals land here)
            if "timed out" in str(e):
                raise _Fail("connect_timeout", str(e)[:300], transient=True) from None
            raise _connection_failure(e) from None
        except u3.ConnectTimeoutError as e:
            raise _Fail("connect_timeout", str(e)[:300], transient=True) from None
        except (u3.ReadTimeoutError, u3.TimeoutError) as e:
            raise _Fail("timeout", str(e)[:300], transient=True) from None
        except (u3.ProtocolError, u3.SSLError, ConnectionError) as e:
            if _caused_by(e, _HeadersCutOff):
                raise _Fail("truncated_headers", f"{_caused_by(e, _HeadersCutOff)}", transient=True) from None
            if _caused_by(e, _BadFraming):
                raise _Fail("bad_response", f"{_caused_by(e, _BadFraming)}") from None
            raise _connection_failure(e) from None
        except u3.InvalidHeader as e:  # urllib3's own Content-Length check, should ours have missed one
            raise _Fail("bad_response", str(e)[:300]) from None
        except (u3.HTTPError, OSError, UnicodeError) as e:
            raise _Fail("request_error", f"{type(e).__name__}: {str(e)[:300]}", transient=True) from None

    def _robots_check(self, url: str, parts: urllib.parse.SplitResult, host: str) -> None:
        if self.robots is None:
            return
        rules = self.robots.get(url)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        if not rules.allowed(path):
            if rules.disallow_all and rules.why:
                raise _Fail("robots_unavailable", f"{rules.why}; RFC 9309 says assume disallowed", transient=True)
            raise _Fail("robots_disallowed", f"robots.txt of {parts.netloc} disallows {path[:200]}")
        if rules.crawl_delay:
            self.limiter.slow_down(host, rules.crawl_delay)

    def _once(self, url: str) -> tuple[bytes, int, str | None, str]:
        return self._follow(url, self._read_response)

    def _follow(self, url: str, read: Callable[[BaseHTTPResponse, str, str, float], T], *,
                read_timeout: float | None = None, total_timeout: float | None = None, robots: bool = True,
                accept: str | None = None) -> T:
        """GET `url`, following redirects here; `read(response, final_url, host_key, deadline)` handles
        the last response, and must be done by `deadline` (time.monotonic()).

        The one redirect loop of the package (images, robots.txt, landing pages), so that every hop
        passes the same checks: URL normalisation, SSRF guard, robots.txt (unless `robots` is False, as
        for robots.txt itself), the per-host slot, at most `max_redirects` hops and no target seen twice.
        Each hop must finish within `total_timeout` (fetch.total_timeout by default). Raises _Fail;
        `read` runs inside the host slot with the connection still open.
        """
        spec = self.spec
        timeout = (spec.connect_timeout, spec.read_timeout if read_timeout is None else read_timeout)
        seconds = spec.total_timeout if total_timeout is None else total_timeout
        headers = None if accept is None else {**self.pool.headers, "Accept": accept}
        try:
            current = _request_url(url)
        except (ValueError, TypeError) as e:  # ValueError covers UnicodeError (idna) and InvalidURL
            raise _Fail("bad_url", f"{url[:200]!r}: {type(e).__name__}: {str(e)[:200]}") from None
        seen = {current}
        for _hop in range(spec.max_redirects + 1):
            parts = self._check(current)
            host = self._host_key(parts)
            if robots:
                self._robots_check(current, parts, host)
            left = self.limiter.unavailable(host)
            if left:  # it asked (Retry-After) for a longer pause than we wait in place: fail fast, retry later
                raise _Fail("host_unavailable", f"{parts.netloc[:200]} asked for a pause over max_retry_wait; "
                            f"{left:.0f}s left (for --retry-failed)", transient=True)
            with self.limiter.slot(host):
                nxt, out = self._exchange(current, timeout, seconds, headers, read, host)
            if nxt is None:
                return out  # type: ignore[return-value]
            if nxt in seen:
                raise _Fail("redirect_loop", f"{current[:200]} redirects back to {nxt[:200]}")
            seen.add(nxt)
            current = nxt
        raise _Fail("too_many_redirects", f"more than {spec.max_redirects} redirects from {url[:200]}")

    def _exchange(self, url: str, timeout: tuple[float, float], seconds: float, headers: dict[str, str] | None,
                  read: Callable[[BaseHTTPResponse, str, str, float], T], host: str) -> tuple[str | None, T | None]:
        """One request under the watchdog: (redirect target, None) or (None, what `read` returned)."""
        ex = _WATCHDOG.watch(seconds)
        outer = getattr(_CURRENT, "exchange", None)
        _CURRENT.exchange = ex
        try:
            r = self._get(url, timeout, headers)
            with _released(r):
                if r.status in REDIRECT_STATUS and _header_values(r.headers, "location"):
                    return _location(r, url), None
                out = read(r, url, host, ex.deadline)
        except Exception:
            if ex.fired:  # whatever the shut-down socket made the parsers raise, the cause is the clock
                raise _Fail("too_slow", f"no complete response within total_timeout {seconds:g}s "
                            "(a slow or dripping server)", transient=True) from None
            raise
        finally:
            _CURRENT.exchange = outer
            _WATCHDOG.release(ex)
        if ex.fired:  # a body read to "its end" because the watchdog closed it: not a whole body
            raise _Fail("too_slow", f"the response was cut at total_timeout {seconds:g}s (a slow or dripping server)",
                        transient=True)
        return None, out

    def _read_response(self, r: BaseHTTPResponse, url: str, host: str,
                       deadline: float) -> tuple[bytes, int, str | None, str]:
        spec = self.spec
        # Opt-out is decided from the headers alone: the body of an opted-out image is never read.
        optout = optout_directive(r.headers, spec.optout_headers)
        if optout:
            raise _Fail("optout", f"{optout[:100]} on {url[:200]}")
        if r.status != 200:
            transient = r.status in TRANSIENT_STATUS
            retry_after = _retry_after(r.headers.get("Retry-After")) if r.status in (429, 503) else None
            if retry_after is not None:
                self.limiter.pause(host, retry_after, longest=spec.max_retry_wait)
            detail = f"HTTP {r.status} {(r.reason or '')[:100]}".strip()
            if retry_after is not None:
                detail += f", Retry-After {retry_after:g}s"
            raise _Fail(f"http_{r.status}", detail, transient, retry_after)
        ctype = r.headers.get("Content-Type")
        main = (ctype or "").split(";", 1)[0].strip().lower()
        if main and (main.startswith(_NOT_IMAGE_PREFIXES) or main in _NOT_IMAGE_TYPES):
            raise _Fail("wrong_content_type", f"Content-Type {ctype!r} is not an image (body not downloaded)")
        length = r.headers.get("Content-Length", "").strip()
        if _DIGITS.match(length) and int(length) > spec.max_bytes:
            raise _Fail("too_large", f"Content-Length {length[:30]} over max_bytes {spec.max_bytes}")
        encoding = r.headers.get("Content-Encoding", "").lower()
        data = self._read_capped(r, any(e in encoding for e in _ENCODED), deadline)
        if not data:
            raise _Fail("empty_body", f"HTTP 200 with zero bytes (Content-Type {ctype!r})")
        kind = sniff(data[:16])
        if kind is None:
            head = data[:24].decode("latin-1").encode("unicode_escape").decode()
            raise _Fail("not_image", f"Content-Type {ctype!r} but the bytes start {head!r}")
        return data, r.status, ctype, url

    def _read_capped(self, r: BaseHTTPResponse, encoded: bool, deadline: float) -> bytes:
        """Read the body with a decoded-size cap by `deadline` (the watchdog enforces it too; checking
        here names the failure with the bytes read so far)."""
        spec = self.spec
        chunks: list[bytes] = []
        total = 0
        try:
            while True:
                chunk = r.read1(_CHUNK, decode_content=True)
                if not chunk:
                    break
                total += len(chunk)
                if total > spec.max_bytes:
                    if encoded:
                        wire = r.tell()
                        raise _Fail("decompression_bomb", f"{r.headers.get('Content-Encoding')} body inflates past "
                                    f"max_bytes {spec.max_bytes} from {wire} bytes on the wire")
                    raise _Fail("too_large", f"body over max_bytes {spec.max_bytes} with no end in sight")
                if time.monotonic() > deadline:
                    raise _Fail("too_slow", f"{total} bytes after total_timeout {spec.total_timeout}s "
                                "(slow drip)", transient=True)
                chunks.append(chunk)
        except _Fail:
            raise
        except Exception as e:  # urllib3/http.client/zlib raise many types on hostile bodies
            raise _read_failure(e, total) from None
        return b"".join(chunks)

    # ------------------------------------------------------------------ robots.txt

    def _fetch_robots(self, url: str) -> tuple[int | None, bytes, str]:
        """(status, body, detail) for a robots.txt URL, redirects followed, SSRF-checked, capped.

        RFC 9309: a robots.txt that cannot be read completely (timeout, cut off, undecodable, 5xx) makes
        the host unavailable (status None here): the cache then disallows everything for a while, as
        a transient failure. Only a missing one (4xx, or redirects that lead nowhere) allows all.
        """
        spec = self.spec

        def read(r: BaseHTTPResponse, _url: str, _host: str, deadline: float) -> tuple[int | None, bytes, str]:
            if r.status != 200:
                return r.status, b"", f"HTTP {r.status}"
            # RFC 9309 lets a crawler ignore what follows 500 KiB; cut off or undecodable: unavailable
            return 200, _read_prefix(r, _ROBOTS_MAX, deadline, f"robots.txt not read within {seconds:g}s"), ""

        seconds = min(spec.total_timeout, _ROBOTS_TIMEOUT)
        try:
            return self._follow(url, read, read_timeout=min(spec.read_timeout, 10.0), total_timeout=seconds,
                                robots=False)
        except _Fail as f:
            if f.reason.startswith("ssrf_") or f.reason in ("bad_url", "bad_scheme", "bad_redirect"):
                return 404, b"", f.detail  # an off-limits robots.txt redirect: as if absent
            if f.reason in ("too_many_redirects", "redirect_loop"):
                return 404, b"", "too many redirects"  # redirects that lead nowhere: as if absent (RFC 9309)
            return None, b"", f"{f.reason}: {f.detail}"
        except Exception as e:  # never let robots.txt crash a fetch
            return None, b"", f"{type(e).__name__}: {str(e)[:200]}"

    # ------------------------------------------------------------------ landing pages

    def fetch_page(self, url: str, max_bytes: int) -> FetchResult:
        """One attempt at an HTML page (a work's landing page), through the same redirect loop and checks
        as images; the body is cut at `max_bytes`. No image checks, no opt-out headers: the page is read
        for the licence it states, not kept. A status other than 200 fails as `http_<status>`."""
        spec = self.spec
        t0 = time.monotonic()

        def read(r: BaseHTTPResponse, final: str, _host: str, deadline: float) -> FetchResult:
            ctype = r.headers.get("Content-Type")
            if r.status != 200:
                return FetchResult(url, False, status=r.status, content_type=ctype, reason=f"http_{r.status}",
                                   detail=f"HTTP {r.status} {(r.reason or '')[:100]}".strip(),
                                   transient=r.status in TRANSIENT_STATUS, attempts=1, final_url=final,
                                   seconds=time.monotonic() - t0)
            data = _read_prefix(r, max_bytes, deadline, f"page not read within total_timeout {spec.total_timeout}s")
            return FetchResult(url, True, data, r.status, ctype, attempts=1, final_url=final,
                               seconds=time.monotonic() - t0)

        try:
            return self._follow(url, read, accept="text/html,*/*;q=0.5")
        except _Fail as f:
            return FetchResult(url, False, reason=f.reason, detail=f.detail, transient=f.transient, attempts=1,
                               seconds=time.monotonic() - t0)
        except Exception as e:  # a hostile page must not end the audit
            f = _unforeseen(e)
            return FetchResult(url, False, reason=f.reason, detail=f.detail, transient=f.transient, attempts=1,
                               seconds=time.monotonic() - t0)


def _read_prefix(r: BaseHTTPResponse, limit: int, deadline: float, slow: str) -> bytes:
    """The first `limit` bytes of a body (the rest is left unread), read by `deadline`. A body that
    drips past the deadline (`slow` says what), is cut off or does not decode is a failure, never a
    shorter text: robots.txt and landing pages are read for what they forbid or state."""
    chunks: list[bytes] = []
    total = 0
    try:
        while total < limit:
            chunk = r.read1(_CHUNK, decode_content=True)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if time.monotonic() > deadline:
                raise _Fail("too_slow", f"{slow} ({total} bytes; slow drip)", transient=True)
    except _Fail:
        raise
    except Exception as e:  # urllib3/http.client/zlib raise many types on hostile bodies
        raise _read_failure(e, total) from None
    return b"".join(chunks)[:limit]


def page_text(data: bytes, content_type: str | None) -> str:
    """A page's bytes as text, in the charset its Content-Type names (HTTP's defaults otherwise:
    ISO-8859-1 for text/*, else UTF-8); undecodable bytes are replaced."""
    encoding = get_encoding_from_headers({"content-type": content_type}) if content_type else None
    try:
        return data.decode(encoding or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know: a hostile page must not end the audit
        return data.decode("utf-8", errors="replace")

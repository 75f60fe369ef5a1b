import io
import socket
import threading
import time

import pytest
from PIL import Image

from passkit.config import FetchSpec
from passkit.fetch import Fetcher, sniff
from passkit.fetch.http import MAX_URL, _request_url

SPEC = FetchSpec(threads=4, retries=2, backoff=0.05, connect_timeout=2, read_timeout=2, total_timeout=3,
                 allow_private=["127.0.0.1"])


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (100, 80), (200, 10, 10)).save(buf, "PNG")
    return buf.getvalue()


def test_sniff():
    assert sniff(_png()[:16]) == "image/png"
    assert sniff(b"\xff\xd8\xff\xe0abc") == "image/jpeg"
    assert sniff(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert sniff(b"<!DOCTYPE html>") is None


def test_ok_and_user_agent(http_server):
    seen = {}

    def route(h):
        seen["ua"] = h.headers["User-Agent"]
        body = _png()
        h.send_response(200)
        h.send_header("Content-Type", "image/png")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    http_server.routes["/a.png"] = route
    r = Fetcher(SPEC).fetch(http_server.url("/a.png"))
    assert r.ok and r.data == _png() and r.attempts == 1
    assert seen["ua"].startswith("passkit/")


def test_permanent_failures_have_reasons(http_server):
    f = Fetcher(SPEC)
    r = f.fetch(http_server.url("/missing.jpg"))
    assert (r.ok, r.reason, r.transient, r.attempts) == (False, "http_404", False, 1)
    url = http_server.serve_bytes("/page.jpg", b"<!DOCTYPE html><html>hi</html>", "image/jpeg")
    r = f.fetch(url)
    assert r.reason == "not_image" and "image/jpeg" in r.detail and "DOCTYPE" in r.detail
    r = f.fetch("ftp://example.invalid/a.jpg")
    assert r.reason == "bad_scheme"


def test_optout_is_decided_before_the_body(http_server):
    def route(h):
        h.send_response(200)
        h.send_header("Content-Type", "image/png")
        h.send_header("X-Robots-Tag", "googlebot: noindex, noai")
        h.send_header("Content-Length", "10000000")
        h.end_headers()
        for _ in range(50):  # a 5-second drip that an opted-out fetch never waits for
            try:
                h.wfile.write(b"\x00" * 10)
                h.wfile.flush()
            except OSError:
                return
            time.sleep(0.1)

    http_server.routes["/noai.png"] = route
    t0 = time.monotonic()
    r = Fetcher(SPEC).fetch(http_server.url("/noai.png"))
    assert r.reason == "optout" and "noai" in r.detail
    assert time.monotonic() - t0 < 2
    url = http_server.serve_bytes("/tdm.png", _png(), "image/png", headers={"tdm-reservation": "1"})
    assert Fetcher(SPEC).fetch(url).reason == "optout"


def test_retries_transient_errors_then_succeeds(http_server):
    calls = {"n": 0}
    body = _png()

    def route(h):
        calls["n"] += 1
        if calls["n"] == 1:
            h.send_response(503)
            h.send_header("Retry-After", "0")
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        h.send_response(200)
        h.send_header("Content-Type", "image/png")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    http_server.routes["/flaky.png"] = route
    r = Fetcher(SPEC).fetch(http_server.url("/flaky.png"))
    assert r.ok and r.attempts == 2


def test_gives_up_after_retries_and_marks_transient(http_server):
    http_server.serve_bytes("/down.png", b"", status=500)
    r = Fetcher(SPEC).fetch(http_server.url("/down.png"))
    assert (r.ok, r.reason, r.transient, r.attempts) == (False, "http_500", True, 3)


def test_a_host_that_asks_for_a_long_pause_fails_fast_until_it_is_over(http_server):
    """A Retry-After over max_retry_wait is not waited out in place (the candidate is transient), and
    the host's other candidates end at once as host_unavailable instead of queueing behind it."""
    spec = SPEC.model_copy(update={"max_retry_wait": 1.0, "robots": False})
    http_server.serve_bytes("/busy.png", b"", status=429, headers={"Retry-After": "3600"})
    http_server.serve_bytes("/other.png", _png(), "image/png")
    f = Fetcher(spec)
    t0 = time.monotonic()
    first = f.fetch(http_server.url("/busy.png"))
    assert (first.ok, first.reason, first.transient, first.attempts) == (False, "http_429", True, 1)
    assert "over max_retry_wait" in (first.detail or "")
    second = f.fetch(http_server.url("/other.png"))
    assert (second.ok, second.reason, second.transient) == (False, "host_unavailable", True)
    assert time.monotonic() - t0 < 5 and "/other.png" not in http_server.hits


def test_byte_cap(http_server):
    spec = FetchSpec(max_bytes=2048, retries=0, allow_private=["127.0.0.1"])
    url = http_server.serve_bytes("/big.png", _png() + b"\x00" * 5000, "image/png")
    r = Fetcher(spec).fetch(url)
    assert r.reason == "too_large"


# ----------------------------------------------------------------------------- hostile URLs and redirects


def test_request_url_normalises_what_it_can_and_refuses_the_rest():
    assert _request_url("http://Bücher.example/é t.jpg") == "http://xn--bcher-kva.example/%C3%A9%20t.jpg"
    assert _request_url("http://u:p@bücher.example:81/") == "http://u:p@xn--bcher-kva.example:81/"
    assert _request_url("http://[::1]:8080/a") == "http://[::1]:8080/a"
    for bad in ("http://[::1", "http://[::1]:99999/", "http://[nope]/", "http://h:0x50/", "http://%zz/",
                "http://exa\x00mple.com/", "http://a b/", "http://" + "ü" * 70 + ".example/",
                "http://x/" + "a" * MAX_URL, "http://\ud800.example/"):
        with pytest.raises(ValueError):
            _request_url(bad)


@pytest.mark.parametrize(("url", "reason"), [
    ("http://[::1", "bad_url"), ("http://[::1]:99999/", "bad_url"), ("http://%zz/", "bad_url"),
    ("http://exa\x00mple.com/a.jpg", "bad_url"), ("http://\ud800/", "bad_url"),
    ("http://" + "ü" * 70 + ".example/", "bad_url"), ("http://example.com/" + "a" * 20000, "bad_url"),
    ("http://a:b@/", "bad_url"), ("//", "bad_scheme"), ("", "bad_scheme"),
], ids=[str(i) for i in range(10)])
def test_a_hostile_candidate_url_is_a_rejection(url, reason):
    r = Fetcher(SPEC).fetch(url)
    assert (r.ok, r.reason, r.transient, r.attempts) == (False, reason, False, 1), r
    assert r.detail


def _raw(response: bytes, close: bool = True):
    """A route that writes bytes no well-behaved server would send."""

    def route(h):
        h.wfile.write(response)
        h.wfile.flush()
        h.close_connection = close

    return route


# Location values a server may send (raw bytes), and the reason each must end in.
HOSTILE_LOCATIONS = [
    (b"http://[::1", "bad_redirect"),
    (b"http://[::1]:99999/", "bad_redirect"),
    (b"http://[not-an-address]/", "bad_redirect"),
    (b"http://127.0.0.1:0x50/", "bad_redirect"),
    (b"http://%zz/", "bad_redirect"),
    (b"http://exa\x00mple.com/", "bad_redirect"),
    (b"http://\xff\xfe/a.png", "bad_redirect"),  # not UTF-8
    (("http://" + "ü" * 70 + ".example/").encode(), "bad_redirect"),  # an IDNA label over 63
    (b"/" + b"a" * 20000, "bad_redirect"),
    (b"http://a:b@/", "bad_url"),
    (b"//", "redirect_loop"),  # urljoin reads it as the same page
    (b"ftp://127.0.0.1/a.png", "bad_scheme"),
    (b"javascript:alert(1)", "bad_scheme"),
    (b"http://[::1]/a.png", "ssrf_loopback"),
    (b"http://[::ffff:169.254.169.254]/", "ssrf_link_local"),
]


@pytest.mark.parametrize(("location", "reason"), HOSTILE_LOCATIONS, ids=[str(i) for i in range(len(HOSTILE_LOCATIONS))])
def test_a_hostile_redirect_is_that_candidates_rejection(http_server, location, reason):
    http_server.routes["/r"] = _raw(b"HTTP/1.1 302 Found\r\nLocation: " + location + b"\r\nContent-Length: 0\r\n\r\n")
    r = Fetcher(SPEC).fetch(http_server.url("/r"))
    assert (r.ok, r.reason, r.transient) == (False, reason, False), r
    assert r.detail and len(r.detail) < 1000


def test_several_location_headers_that_disagree_are_refused(http_server):
    http_server.routes["/r"] = _raw(b"HTTP/1.1 302 Found\r\nLocation: /a.png\r\nLocation: /b.png\r\n"
                                    b"Content-Length: 0\r\n\r\n")
    http_server.serve_bytes("/a.png", _png(), "image/png")
    r = Fetcher(SPEC).fetch(http_server.url("/r"))
    assert (r.reason, r.transient) == ("bad_redirect", False)
    assert "/a.png" not in http_server.hits


def test_an_unforeseen_exception_ends_the_candidate_not_the_caller(http_server, monkeypatch):
    f = Fetcher(SPEC)

    def boom(host, interval):
        raise OverflowError("cannot convert float infinity to integer")

    http_server.serve_bytes("/robots.txt", b"User-agent: *\nCrawl-delay: 5\n", "text/plain")
    http_server.serve_bytes("/a.png", _png(), "image/png")
    monkeypatch.setattr(f.limiter, "slow_down", boom)
    r = f.fetch(http_server.url("/a.png"))
    assert (r.ok, r.reason, r.transient, r.attempts) == (False, "fetch_exception", True, 1)
    assert "OverflowError" in r.detail


# ----------------------------------------------------------------------------- drips, cut-offs, broken framing


class RawServer:
    """A 127.0.0.1 TCP server that answers each request with `respond(conn)`: for what no HTTP server
    library sends (drips, cut-offs). Records each request line."""

    def __init__(self, respond, read_request: bool = True):
        self.respond = respond
        self.read_request = read_request  # False: answer at once (a TLS handshake sends no request line)
        self.requests: list[bytes] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.stopped = False
        threading.Thread(target=self._serve, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}{path}"

    def _serve(self) -> None:
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            data = b""
            try:
                while self.read_request and b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                self.requests.append(data.split(b"\r\n", 1)[0])  # (b"" when not read)
                self.respond(conn)
            except OSError:
                pass

    def close(self) -> None:
        self.stopped = True
        self.sock.close()


@pytest.fixture
def raw_server():
    servers: list[RawServer] = []

    def make(respond, read_request: bool = True) -> RawServer:
        servers.append(RawServer(respond, read_request))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def _drip(conn: socket.socket, data: bytes, start: int, count: int, interval: float) -> None:
    """Send data[:start], then `count` bytes one at a time every `interval` s, then the rest at once."""
    conn.sendall(data[:start])
    for i in range(start, start + count):
        conn.sendall(data[i:i + 1])
        time.sleep(interval)
    conn.sendall(data[start + count:])


DRIP_SPEC = FetchSpec(retries=0, connect_timeout=2, read_timeout=2, total_timeout=1, robots=False,
                      allow_private=["127.0.0.1"])


def _head(length: int | None, extra: bytes = b"") -> bytes:
    cl = b"" if length is None else b"Content-Length: %d\r\n" % length
    return b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n" + cl + extra + b"Connection: close\r\n\r\n"


@pytest.mark.parametrize("where", ["status_line", "headers", "body", "body_without_length"])
def test_a_dripping_server_is_cut_at_total_timeout(raw_server, where):
    body = _png()
    head = _head(None if where == "body_without_length" else len(body))
    whole = head + body
    # 16 bytes at 0.3 s: no read ever waits the 2 s read timeout, and the whole takes ~5 s
    start, interval = {"status_line": (0, 0.3), "headers": (30, 0.3), "body": (len(head) + 8, 0.3),
                       "body_without_length": (len(head) + 8, 0.7)}[where]
    s = raw_server(lambda conn: _drip(conn, whole, start, 16, interval))
    t0 = time.monotonic()
    r = Fetcher(DRIP_SPEC).fetch(s.url("/a.png"))
    elapsed = time.monotonic() - t0
    assert (r.ok, r.reason, r.transient) == (False, "too_slow", True), r
    assert elapsed < DRIP_SPEC.total_timeout + 0.8, f"held {elapsed:.1f}s"


def _chunked(body: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)


PNG = _png()
CHUNKED = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
# Responses the server cuts off (closing the connection), or frames so that they cannot be trusted.
BROKEN = {
    "status_line_cut": (b"HTTP/1.1 200 OK", "truncated_headers", True),
    "headers_cut": (b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n", "truncated_headers", True),
    "header_line_cut": (b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Le", "truncated_headers", True),
    "body_short_of_length": (_head(len(PNG) + 500) + PNG, "truncated_body", True),
    "chunk_cut": (CHUNKED + _chunked(PNG)[: len(PNG) // 2], "truncated_body", True),
    "last_chunk_missing": (CHUNKED + _chunked(PNG)[:-5], "truncated_body", True),
    "length_superscript_two": (b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: \xb2\r\n\r\n" + PNG,
                               "bad_response", False),
    "length_conflict": (_head(None, b"Content-Length: %d\r\nContent-Length: 7\r\n" % len(PNG)) + PNG,
                        "bad_response", False),
    "length_negative": (_head(None, b"Content-Length: -1\r\n") + PNG, "bad_response", False),
    "length_absurd": (_head(10 ** 30) + PNG, "too_large", False),
    "no_status_line": (PNG, "bad_response", False),  # HTTP/0.9, or not HTTP at all
    "header_line_over_64k": (_head(len(PNG), b"X-A: " + b"a" * 70000 + b"\r\n") + PNG, "bad_response", False),
    "over_100_headers": (_head(len(PNG), b"".join(b"X-%d: a\r\n" % i for i in range(120))) + PNG, "bad_response", False),
    "chunk_size_line_over_64k": (CHUNKED + b"10;" + b"x" * 70000 + b"\r\n" + PNG, "bad_response", False),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_response_is_a_rejection_with_its_own_reason(raw_server, case):
    raw, reason, transient = BROKEN[case]
    s = raw_server(lambda conn: conn.sendall(raw))
    r = Fetcher(DRIP_SPEC).fetch(s.url("/a.png"))
    assert (r.ok, r.reason, r.transient) == (False, reason, transient), r
    assert r.detail


def test_the_watchdog_does_not_touch_a_reused_connection(http_server):
    """Many quick fetches on pooled connections, each under its own deadline, all come back whole."""
    http_server.serve_bytes("/a.png", PNG, "image/png")
    f = Fetcher(DRIP_SPEC)
    assert all(f.fetch(http_server.url("/a.png")).data == PNG for _ in range(30))


# ----------------------------------------------------------------------------- robots.txt read in part


ROBOTS_ALLOW = b"User-agent: *\nAllow: /\n" + b"# " + b"x" * 200 + b"\n"


def _robots_routes(http_server, robots) -> None:
    http_server.routes["/robots.txt"] = robots
    http_server.serve_bytes("/img.png", PNG, "image/png")


def _robots_drip_body(h):
    h.send_response(200)
    h.send_header("Content-Type", "text/plain")
    h.send_header("Content-Length", str(len(ROBOTS_ALLOW)))
    h.end_headers()
    h.wfile.write(ROBOTS_ALLOW[:10])
    h.wfile.flush()
    try:
        for i in range(10, 30):  # ~4 s, then the rest
            h.wfile.write(ROBOTS_ALLOW[i:i + 1])
            h.wfile.flush()
            time.sleep(0.2)
        h.wfile.write(ROBOTS_ALLOW[30:])
    except OSError:
        pass


def _robots_drip_headers(h):
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(ROBOTS_ALLOW)
    try:
        for i in range(20):
            h.wfile.write(head[i:i + 1])
            h.wfile.flush()
            time.sleep(0.2)
        h.wfile.write(head[20:] + ROBOTS_ALLOW)
    except OSError:
        pass
    h.close_connection = True


ROBOTS_BROKEN = {
    "body_dripped": _robots_drip_body,
    "headers_dripped": _robots_drip_headers,
    "headers_cut": _raw(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"),
    "body_cut": _raw(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 900\r\n\r\n" + ROBOTS_ALLOW),
    "bad_gzip": _raw(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Encoding: gzip\r\n"
                     b"Content-Length: 14\r\n\r\n\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\xff\xff\xff\xff"),
}


@pytest.mark.parametrize("case", list(ROBOTS_BROKEN))
def test_a_robots_txt_not_read_whole_keeps_the_host_off_limits(http_server, case):
    """RFC 9309: robots.txt unreachable means disallow all, for now. Never the part that arrived."""
    _robots_routes(http_server, ROBOTS_BROKEN[case])
    spec = FetchSpec(retries=0, connect_timeout=2, read_timeout=2, total_timeout=1, allow_private=["127.0.0.1"])
    t0 = time.monotonic()
    r = Fetcher(spec).fetch(http_server.url("/img.png"))
    assert (r.ok, r.reason, r.transient) == (False, "robots_unavailable", True), r
    assert "/img.png" not in http_server.hits
    assert time.monotonic() - t0 < spec.total_timeout + 0.8
    # The same robots.txt, sent whole, lets the image through.
    _robots_routes(http_server, _raw(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n"
                                     % len(ROBOTS_ALLOW) + ROBOTS_ALLOW, close=False))
    assert Fetcher(spec).fetch(http_server.url("/img.png")).ok


def test_a_retry_after_that_is_no_number_of_seconds_is_ignored(raw_server):
    for value in (b"1e400", b"inf", b"nan", b"Mon, 99 Foo 0000 99:99:99 GMT"):
        s = raw_server(lambda conn, v=value: conn.sendall(b"HTTP/1.1 503 Busy\r\nRetry-After: " + v
                                                          + b"\r\nContent-Length: 0\r\n\r\n"))
        r = Fetcher(DRIP_SPEC).fetch(s.url("/a.png"))
        assert (r.reason, r.transient, r.detail) == ("http_503", True, "HTTP 503 Busy"), value


def test_a_dripped_tls_handshake_is_cut_at_total_timeout(raw_server):
    # A TLS record header announcing 16 KB, then its bytes one every 0.3 s: the handshake never
    # waits a whole read timeout, and only the deadline ends it.
    record = b"\x16\x03\x03\x40\x00" + b"\x00" * 16
    s = raw_server(lambda conn: _drip(conn, record, 0, len(record), 0.3), read_request=False)
    t0 = time.monotonic()
    r = Fetcher(DRIP_SPEC).fetch(s.url("/a.png").replace("http://", "https://"))
    assert (r.ok, r.reason, r.transient) == (False, "too_slow", True), r
    assert time.monotonic() - t0 < DRIP_SPEC.total_timeout + 0.8

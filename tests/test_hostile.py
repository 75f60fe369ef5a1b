"""Hostile inputs against a local fault-injecting server, through a real work unit.

Each hostile URL must end as a recorded outcome with its own reason, the unit must finish, and the
good images fetched beside them must come out exactly as they would alone.
"""

from __future__ import annotations

import gzip
import io
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from passkit.config import FetchSpec
from passkit.fetch import Fetcher
from passkit.ledger import unit_paths
from passkit.pipeline import Unit, UnitRunner
from passkit.shards import iter_members
from tests.conftest import LocalServer
from tests.helpers.crawl import candidate, jpeg, spec


def _send(h, status: int, body: bytes, ctype: str = "image/jpeg", headers: dict[str, str] | None = None) -> None:
    h.send_response(status)
    h.send_header("Content-Type", ctype)
    h.send_header("Content-Length", str(len(body)))
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    h.end_headers()
    h.wfile.write(body)


def _big_png(side: int = 20000) -> bytes:
    """A valid 1-bit PNG of side x side pixels: about 50 KB that would decode to 400 megapixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z = zlib.compressobj(9)
    row = b"\x00" * (1 + side // 8)
    idat = b"".join(z.compress(row * 500) for _ in range(side // 500)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _gzip_bomb(megabytes: int = 64) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9) as g:
        block = b"\x00" * (1 << 20)
        for _ in range(megabytes):
            g.write(block)
    return buf.getvalue()


class Hostile:
    """Installs one route per hostile case on the LocalServer; records timings the tests check."""

    def __init__(self, server, other):
        self.s = server
        self.other = other  # a second host, whose robots.txt drips
        other.routes["/robots.txt"] = self.drip_robots
        other.serve_bytes("/img.jpg", jpeg(28))
        self.times: dict[str, list[float]] = {}
        self.lock = threading.Lock()
        r = server.routes
        self.good = {f"/good/{i}.jpg": jpeg(100 + i) for i in range(3)}
        for path, body in self.good.items():
            server.serve_bytes(path, body)
        r["/robots.txt"] = lambda h: _send(h, 200, b"User-agent: *\nDisallow: /private/\n", "text/plain")
        r["/private/secret.jpg"] = lambda h: _send(h, 200, jpeg(1))
        r["/drip.jpg"] = self.drip
        r["/endless.jpg"] = self.endless
        r["/loop/a"] = lambda h: self.redirect(h, "/loop/b")
        r["/loop/b"] = lambda h: self.redirect(h, "/loop/a")
        r["/to-metadata"] = lambda h: self.redirect(h, "http://169.254.169.254/latest/meta-data/")
        r["/to-private"] = lambda h: self.redirect(h, "http://10.0.0.1/admin.jpg")
        bomb = _gzip_bomb()
        r["/bomb.jpg"] = lambda h: _send(h, 200, bomb, "image/jpeg", {"Content-Encoding": "gzip"})
        png = _big_png()
        r["/huge.png"] = lambda h: _send(h, 200, png, "image/png")
        truncated = jpeg(7, (400, 300))
        r["/truncated.jpg"] = lambda h: _send(h, 200, truncated[: len(truncated) // 3])
        r["/empty.jpg"] = lambda h: _send(h, 200, b"")
        r["/page.jpg"] = lambda h: _send(h, 200, b"<!doctype html><title>Login</title>" * 50, "text/html; charset=utf-8")
        r["/flaky500.jpg"] = self.flaky(500, None, jpeg(21))
        r["/slow429.jpg"] = self.flaky(429, "2", jpeg(22))
        r["/always429.jpg"] = lambda h: _send(h, 429, b"", "text/plain", {"Retry-After": "1"})
        r["/reset.jpg"] = self.reset
        r["/latin1.jpg"] = self.latin1_headers
        self.unicode_body = jpeg(23)
        r["/dir%20with%20space/%C3%A9t%C3%A9%20%E2%98%80.jpg"] = lambda h: _send(h, 200, self.unicode_body)
        r["/twice.jpg"] = lambda h: _send(h, 200, jpeg(24))
        # A redirect no URL parser takes; a head dripped a byte at a time; a head cut off; a framing lie.
        r["/to-broken-ipv6"] = lambda h: self.redirect(h, "http://[::1")
        r["/drip-head.jpg"] = self.drip_head
        r["/cut-head.jpg"] = lambda h: self.raw(h, b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\n")
        r["/superscript.jpg"] = lambda h: self.raw(
            h, b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: \xb2\r\n\r\n" + jpeg(26))

    def hit(self, name: str) -> None:
        with self.lock:
            self.times.setdefault(name, []).append(time.monotonic())

    @staticmethod
    def redirect(h, location: str) -> None:
        h.send_response(302)
        h.send_header("Location", location)
        h.send_header("Content-Length", "0")
        h.end_headers()

    def drip(self, h) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "image/jpeg")
        h.send_header("Content-Length", "1000000")
        h.end_headers()
        h.wfile.write(b"\xff\xd8\xff\xe0")
        for _ in range(200):  # 10 bytes every 0.05 s: never idle long enough for a read timeout
            try:
                h.wfile.write(b"\x00" * 10)
                h.wfile.flush()
            except OSError:
                return
            time.sleep(0.05)

    @staticmethod
    def raw(h, response: bytes) -> None:
        """Bytes no well-behaved server sends, then the connection closed."""
        h.wfile.write(response)
        h.wfile.flush()
        h.close_connection = True

    def drip_head(self, h) -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nX-Padding: " + b"p" * 60 + b"\r\n"
        body = jpeg(27)
        try:
            for i in range(len(head)):  # a byte every 0.1 s: ~8 s for the head alone
                h.wfile.write(head[i:i + 1])
                h.wfile.flush()
                time.sleep(0.1)
            h.wfile.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        except OSError:
            pass
        h.close_connection = True

    @staticmethod
    def drip_robots(h) -> None:
        text = b"User-agent: *\nAllow: /\n" + b"#" * 40 + b"\n"
        h.send_response(200)
        h.send_header("Content-Type", "text/plain")
        h.send_header("Content-Length", str(len(text)))
        h.end_headers()
        try:
            for i in range(len(text)):  # a byte every 0.2 s: what arrived by the deadline must not count
                h.wfile.write(text[i:i + 1])
                h.wfile.flush()
                time.sleep(0.2)
        except OSError:
            pass

    def endless(self, h) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "image/jpeg")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        block = b"\xff" * 65536
        try:
            for _ in range(100_000):
                h.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
        except OSError:
            return

    def flaky(self, status: int, retry_after: str | None, body: bytes):
        calls = {"n": 0}

        def route(h) -> None:
            calls["n"] += 1
            self.hit(h.path)
            if calls["n"] == 1:
                _send(h, status, b"", "text/plain", {"Retry-After": retry_after} if retry_after else None)
            else:
                _send(h, 200, body)

        return route

    @staticmethod
    def reset(h) -> None:
        h.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 5000\r\n\r\n\xff\xd8\xff")
        h.wfile.flush()
        h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        h.close_connection = True
        h.connection.close()  # RST: the client sees "connection reset by peer"

    def latin1_headers(self, h) -> None:
        body = jpeg(25)
        h.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\n"
                      b"X-Title: caf\xe9 \xff\xfe na\xefve\r\nX-Robots-Tag: index, caf\xe9\r\n"
                      b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


# source id -> (status, reason, transient) every hostile case must end in
EXPECTED = {
    "slow_drip": ("rejected", "too_slow", True),
    "endless_body": ("rejected", "too_large", False),
    "redirect_loop": ("rejected", "redirect_loop", False),
    "redirect_metadata": ("rejected", "ssrf_link_local", False),
    "redirect_private": ("rejected", "ssrf_private", False),
    "metadata_direct": ("rejected", "ssrf_link_local", False),
    "file_scheme": ("rejected", "bad_scheme", False),
    "gzip_bomb": ("rejected", "decompression_bomb", False),
    "huge_png": ("rejected", "too_many_pixels", False),
    "truncated_jpeg": ("rejected", "decode_error", False),
    "zero_bytes": ("rejected", "empty_body", False),
    "wrong_content_type": ("rejected", "wrong_content_type", False),
    "500_then_200": ("kept", None, False),
    "429_retry_after_2": ("kept", None, False),
    "429_always": ("rejected", "http_429", True),
    "connection_reset": ("rejected", "connection_reset", True),
    "non_utf8_headers": ("kept", None, False),
    "unicode_url": ("kept", None, False),
    "twice_first": ("kept", None, False),
    "twice_second": ("rejected", "duplicate_url", False),
    "robots_disallowed": ("rejected", "robots_disallowed", False),
    "good_0": ("kept", None, False),
    "good_1": ("kept", None, False),
    "redirect_malformed_ipv6": ("rejected", "bad_redirect", False),
    "dripped_head": ("rejected", "too_slow", True),
    "cut_head": ("rejected", "truncated_headers", True),
    "content_length_superscript": ("rejected", "bad_response", False),
    "robots_dripped": ("rejected", "robots_unavailable", True),
    "good_2": ("kept", None, False),
}


@pytest.fixture
def hostile(http_server) -> Iterator[Hostile]:
    other = LocalServer()
    try:
        yield Hostile(http_server, other)
    finally:
        other.close()


def _candidates(h: Hostile) -> list:
    u = h.s.url
    urls = {
        "slow_drip": u("/drip.jpg"),
        "good_0": u("/good/0.jpg"),
        "endless_body": u("/endless.jpg"),
        "redirect_loop": u("/loop/a"),
        "redirect_metadata": u("/to-metadata"),
        "redirect_private": u("/to-private"),
        "metadata_direct": "http://169.254.169.254/latest/meta-data/iam/",
        "file_scheme": "file:///etc/passwd",
        "gzip_bomb": u("/bomb.jpg"),
        "good_1": u("/good/1.jpg"),
        "huge_png": u("/huge.png"),
        "truncated_jpeg": u("/truncated.jpg"),
        "zero_bytes": u("/empty.jpg"),
        "wrong_content_type": u("/page.jpg"),
        "500_then_200": u("/flaky500.jpg"),
        "429_retry_after_2": u("/slow429.jpg"),
        "429_always": u("/always429.jpg"),
        "connection_reset": u("/reset.jpg"),
        "non_utf8_headers": u("/latin1.jpg"),
        "unicode_url": u("/dir with space/été ☀.jpg"),
        "twice_first": u("/twice.jpg"),
        "twice_second": u("/twice.jpg"),
        "robots_disallowed": u("/private/secret.jpg"),
        "redirect_malformed_ipv6": u("/to-broken-ipv6"),
        "dripped_head": u("/drip-head.jpg"),
        "cut_head": u("/cut-head.jpg"),
        "content_length_superscript": u("/superscript.jpg"),
        "robots_dripped": h.other.url("/img.jpg"),
        "good_2": u("/good/2.jpg"),
    }
    assert set(urls) == set(EXPECTED)
    return [candidate(sid, url) for sid, url in urls.items()]


def test_every_hostile_input_ends_with_its_own_reason(hostile: Hostile, tmp_path: Path):
    s = spec(unit_size=64, threads=16, retries=1, max_bytes=4_000_000, total_timeout=1.5, read_timeout=2,
             max_retry_wait=5)
    cands = _candidates(hostile)
    t0 = time.monotonic()
    result = UnitRunner(s).run(Unit(0, cands), tmp_path)
    elapsed = time.monotonic() - t0
    assert elapsed < 30, f"a hostile server held the unit for {elapsed:.1f}s"
    tar, ledger = unit_paths(tmp_path, 0)
    rows = {r["source_id"]: r for r in pq.read_table(ledger).to_pylist()}
    got = {sid: (r["status"], r["reason"], r["transient"]) for sid, r in rows.items()}
    assert got == EXPECTED, {k: (got[k], EXPECTED[k]) for k in EXPECTED if got[k] != EXPECTED[k]}
    assert result.candidates == len(EXPECTED) and result.kept == 8
    for sid, r in rows.items():
        assert r["status"] == "kept" or r["detail"], f"{sid} rejected without a detail"
    hits = dict(hostile.s.hits)
    # Good samples are unaffected: the same bytes as a unit of only the good images.
    members = {m.name: m.data for m in iter_members(tar)}
    alone = tmp_path / "alone"
    alone.mkdir()
    UnitRunner(s).run(Unit(0, [c for c in cands if c.source_id.startswith("good_")]), alone)
    for m in iter_members(unit_paths(alone, 0)[0]):
        assert members[m.name] == m.data
    # Retry-After: 2 was honoured: the second request came at least 2 s after the first.
    first, second = hostile.times["/slow429.jpg"][:2]
    assert second - first >= 1.9
    # Opted-out and robots-disallowed bytes were never requested; the repeated URL only once.
    assert "/private/secret.jpg" not in hits
    assert hits["/twice.jpg"] == 1
    assert hits["/robots.txt"] == 1  # fetched once per host, then cached
    # A robots.txt that did not arrive whole keeps its host off limits: the image was never asked for.
    assert "/img.jpg" not in hostile.other.hits


def test_ssrf_details_name_the_address_class(http_server):
    f = Fetcher(FetchSpec(retries=0))  # no allowlist: loopback itself is refused
    r = f.fetch(http_server.url("/x.jpg"))
    assert r.reason == "ssrf_loopback" and "allow_private" in r.detail
    assert f.fetch("http://[::1]:9/x.jpg").reason == "ssrf_loopback"
    assert f.fetch("http://[::ffff:10.1.2.3]/x.jpg").reason == "ssrf_private"
    assert f.fetch("http://224.0.0.1/x.jpg").reason == "ssrf_multicast"
    assert f.fetch("http://0.0.0.0:80/x.jpg").reason == "ssrf_unspecified"
    assert f.fetch("http://240.0.0.1/x.jpg").reason == "ssrf_reserved"
    assert f.fetch("http://100.64.0.1/x.jpg").reason == "ssrf_reserved"
    assert f.fetch("gopher://127.0.0.1/x").reason == "bad_scheme"
    assert http_server.hits == {}
    # Allowlisting by CIDR works like allowlisting the address.
    http_server.serve_bytes("/x.jpg", jpeg(3))
    assert Fetcher(FetchSpec(retries=0, allow_private=["127.0.0.0/8"])).fetch(http_server.url("/x.jpg")).ok


def test_peer_address_is_checked_after_connect(http_server):
    """DNS rebinding: a name that passed the pre-check but connects to loopback is still refused."""
    http_server.serve_bytes("/x.jpg", jpeg(3))
    f = Fetcher(FetchSpec(retries=0, robots=False))
    f.guard.resolve = False  # as if the name had resolved to a public address at check time
    r = f.fetch(f"http://localhost:{http_server.httpd.server_address[1]}/x.jpg")
    assert (r.ok, r.reason) == (False, "ssrf_loopback")
    assert "/x.jpg" not in http_server.hits  # refused right after connect, before the request


def test_optout_and_wrong_type_never_read_the_body(http_server):
    sent = {"bytes": 0}

    def route(h):
        h.send_response(200)
        h.send_header("Content-Type", "text/html")
        h.send_header("Content-Length", str(50 * 65536))
        h.end_headers()
        try:
            for _ in range(50):
                h.wfile.write(b"<" * 65536)
                sent["bytes"] += 65536
                time.sleep(0.02)
        except OSError:
            return

    http_server.routes["/page"] = route
    t0 = time.monotonic()
    r = Fetcher(FetchSpec(retries=0, allow_private=["127.0.0.1"])).fetch(http_server.url("/page"))
    assert r.reason == "wrong_content_type" and time.monotonic() - t0 < 0.9

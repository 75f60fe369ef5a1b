import io
import time

from PIL import Image

from passkit.config import FetchSpec
from passkit.fetch import Fetcher, sniff

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


def test_byte_cap(http_server):
    spec = FetchSpec(max_bytes=2048, retries=0, allow_private=["127.0.0.1"])
    url = http_server.serve_bytes("/big.png", _png() + b"\x00" * 5000, "image/png")
    r = Fetcher(spec).fetch(url)
    assert r.reason == "too_large"

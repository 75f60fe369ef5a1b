"""Politeness: robots.txt (RFC 9309), per-host concurrency and rate, Retry-After pauses, user agent."""

from __future__ import annotations

import math
import threading
import time
import urllib.parse

import pytest

from passkit.config import FetchSpec
from passkit.fetch import Fetcher, HostLimiter, Robots
from passkit.fetch.limiter import MAX_CRAWL_DELAY, MAX_PAUSE
from tests.helpers.crawl import jpeg

ROBOTS = """
# comments and odd spacing are fine
User-agent: otherbot
Disallow: /

User-agent: passkit
User-agent: somebot
Disallow: /private/
Allow: /private/public/
Disallow: /*.gif$
Disallow: /drafts
Allow: /drafts/ok
Crawl-delay: 0.2

User-agent: *
Disallow: /
"""


def test_robots_rfc9309_matching():
    r = Robots.parse(ROBOTS, "passkit")
    assert r.allowed("/photos/a.jpg")
    assert not r.allowed("/private/a.jpg")
    assert r.allowed("/private/public/a.jpg")  # the longer Allow wins
    assert not r.allowed("/x/y.gif") and r.allowed("/x/y.gif?v=1")  # $ anchors the end
    assert not r.allowed("/drafts/x") and r.allowed("/drafts/ok/x") and not r.allowed("/draftsfile")
    assert r.allowed("/robots.txt")
    assert r.crawl_delay == 0.2
    # An agent without its own group falls back to "*"; group names match case-insensitively.
    assert not Robots.parse(ROBOTS, "unknownbot").allowed("/photos/a.jpg")
    assert not Robots.parse(ROBOTS, "PASSKIT").allowed("/private/a.jpg")
    # Percent-encoding and unicode paths compare equal.
    u = Robots.parse("User-agent: *\nDisallow: /caf%C3%A9/\n", "passkit")
    assert not u.allowed("/café/x.jpg") and not u.allowed("/caf%c3%a9/x.jpg") and u.allowed("/cafe/x.jpg")
    # Equal-length Allow and Disallow: Allow wins. Empty Disallow allows everything.
    assert Robots.parse("User-agent: *\nDisallow: /a\nAllow: /a\n", "passkit").allowed("/a")
    assert Robots.parse("User-agent: *\nDisallow:\n", "passkit").allowed("/anything")


def _spec(**kw) -> FetchSpec:
    return FetchSpec(**{"retries": 0, "allow_private": ["127.0.0.1"], "per_host_rate": 0, **kw})


def test_robots_fetch_outcomes_and_user_agent(http_server):
    agents: list[str] = []

    def robots(h):
        agents.append(h.headers["User-Agent"])
        body = b"User-agent: passkit\nDisallow: /no/\n"
        h.send_response(200)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    http_server.routes["/robots.txt"] = robots
    http_server.serve_bytes("/no/a.jpg", jpeg(1))
    http_server.serve_bytes("/yes/a.jpg", jpeg(1))
    f = Fetcher(_spec(contact="mailto:crawl@example.org"))
    assert f.fetch(http_server.url("/no/a.jpg")).reason == "robots_disallowed"
    assert f.fetch(http_server.url("/yes/a.jpg")).ok
    assert agents == ["passkit/0.1 (+mailto:crawl@example.org; dataset builder)"]
    # robots off: the path is fetched.
    assert Fetcher(_spec(robots=False)).fetch(http_server.url("/no/a.jpg")).ok
    # A robots.txt that errors: assume disallowed, and call it transient (retry later).
    http_server.serve_bytes("/robots.txt", b"", "text/plain", status=503)
    r = Fetcher(_spec()).fetch(http_server.url("/yes/a.jpg"))
    assert (r.reason, r.transient) == ("robots_unavailable", True)
    # A missing robots.txt (4xx) allows everything.
    del http_server.routes["/robots.txt"]
    assert Fetcher(_spec()).fetch(http_server.url("/no/a.jpg")).ok


def test_per_host_concurrency_cap(http_server):
    state = {"now": 0, "max": 0}
    lock = threading.Lock()
    body = jpeg(2)

    def slow(h):
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.15)
        with lock:
            state["now"] -= 1
        h.send_response(200)
        h.send_header("Content-Type", "image/jpeg")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    for i in range(12):
        http_server.routes[f"/s{i}.jpg"] = slow
    f = Fetcher(_spec(threads=12, per_host_connections=3, robots=False))
    results = list(f.map(f.fetch, [http_server.url(f"/s{i}.jpg") for i in range(12)]))
    assert all(r.ok for r in results)
    assert state["max"] == 3
    # The build-wide cap is split between worker processes: 3 over 2 workers -> 2 each.
    assert Fetcher(_spec(per_host_connections=3), share=0.5).limiter.max_concurrent == 2


def test_per_host_rate_and_pause():
    clock = {"t": 0.0}
    lim = HostLimiter(8, rate=4.0, clock=lambda: clock["t"], sleep=lambda s: clock.__setitem__("t", clock["t"] + s))
    starts = []
    for _ in range(5):
        with lim.slot("a:80"):
            starts.append(clock["t"])
    assert starts == [0.0, 0.25, 0.5, 0.75, 1.0]
    with lim.slot("b:80"):  # another host is not held back
        assert clock["t"] == 1.0
    lim.pause("a:80", 3.0)
    with lim.slot("a:80"):
        assert clock["t"] >= 4.0
    lim.slow_down("a:80", 1.0)  # Crawl-delay
    t0 = clock["t"]
    with lim.slot("a:80"):
        pass
    with lim.slot("a:80"):
        assert clock["t"] - t0 >= 1.0


def test_retry_after_pauses_the_host_for_every_thread(http_server):
    times: list[float] = []
    calls = {"n": 0}
    body = jpeg(3)

    def route(h):
        calls["n"] += 1
        times.append(time.monotonic())
        if calls["n"] == 1:
            h.send_response(429)
            h.send_header("Retry-After", "1")
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        h.send_response(200)
        h.send_header("Content-Type", "image/jpeg")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    b_times: list[float] = []

    def route_b(h):
        b_times.append(time.monotonic())
        h.send_response(200)
        h.send_header("Content-Type", "image/jpeg")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    http_server.routes["/a.jpg"] = route
    http_server.routes["/b.jpg"] = route_b
    f = Fetcher(_spec(retries=2, robots=False))
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("a", f.fetch(http_server.url("/a.jpg"))))
    t.start()
    while not times:
        time.sleep(0.01)
    time.sleep(0.2)  # the 429 has arrived; another thread now asks the same host
    assert f.fetch(http_server.url("/b.jpg")).ok
    t.join()
    assert out["a"].ok and out["a"].attempts == 2
    assert b_times[0] - times[0] >= 0.95, "the other thread did not wait out Retry-After"
    # A Retry-After longer than max_retry_wait is not waited out: transient, left for --retry-failed.
    http_server.serve_bytes("/c.jpg", b"", status=503, headers={"Retry-After": "3600"})
    t1 = time.monotonic()
    r = Fetcher(_spec(retries=3, robots=False, max_retry_wait=2)).fetch(http_server.url("/c.jpg"))
    assert (r.reason, r.transient, r.attempts) == ("http_503", True, 1) and time.monotonic() - t1 < 1


class _FakeTime:
    """A clock whose sleep advances it, and which fails instead of sleeping past `limit` in total."""

    def __init__(self, limit: float = 10_000.0):
        self.t, self.limit = 0.0, limit

    def clock(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0 and math.isfinite(seconds), f"sleep({seconds})"
        self.t += seconds
        assert self.t <= self.limit, f"slept {self.t}s in all"


def _waited(lim: HostLimiter, ft: _FakeTime, host: str = "a:80") -> float:
    t0 = ft.t
    with lim.slot(host):
        pass
    return ft.t - t0


@pytest.mark.parametrize("delay", [math.inf, 1e9, 1e300])
def test_crawl_delay_is_capped(delay):
    """Crawl-delay: inf raised OverflowError in sleep; 1000000000 slept 31 years."""
    ft = _FakeTime()
    lim = HostLimiter(4, rate=0, clock=ft.clock, sleep=ft.sleep)
    lim.slow_down("a:80", delay)
    _waited(lim, ft)
    assert _waited(lim, ft) == MAX_CRAWL_DELAY


@pytest.mark.parametrize("delay", [math.nan, -1.0, -math.inf, 0.0])
def test_crawl_delay_nan_or_negative_changes_nothing(delay):
    ft = _FakeTime()
    lim = HostLimiter(4, rate=4.0, clock=ft.clock, sleep=ft.sleep)
    lim.slow_down("a:80", delay)
    _waited(lim, ft)
    assert _waited(lim, ft) == 0.25


@pytest.mark.parametrize("seconds", [math.inf, 1e9, MAX_PAUSE + 1])
def test_a_pause_over_the_maximum_is_capped_and_marks_the_host_unavailable(seconds):
    ft = _FakeTime()
    lim = HostLimiter(4, rate=0, clock=ft.clock, sleep=ft.sleep)
    assert lim.unavailable("a:80") == 0.0
    lim.pause("a:80", seconds)
    assert lim.unavailable("a:80") == MAX_PAUSE and lim.unavailable("b:80") == 0.0
    assert _waited(lim, ft) == MAX_PAUSE
    assert lim.unavailable("a:80") == 0.0


def test_a_pause_longer_than_the_caller_waits_leaves_the_host_unavailable_for_the_rest():
    """The fetcher waits out at most max_retry_wait in place; the host stays unavailable for the rest of
    what it asked, so its other candidates can fail fast as transient."""
    ft = _FakeTime()
    lim = HostLimiter(4, rate=0, clock=ft.clock, sleep=ft.sleep)
    lim.pause("a:80", 100.0, longest=30.0)
    assert _waited(lim, ft) == 30.0 and lim.unavailable("a:80") == 70.0
    lim.pause("b:80", 20.0, longest=30.0)  # waited in full: never unavailable
    assert lim.unavailable("b:80") == 0.0 and _waited(lim, ft, "b:80") == 20.0


@pytest.mark.parametrize("seconds", [math.nan, -5.0, -math.inf])
def test_a_nan_or_negative_pause_is_no_pause(seconds):
    ft = _FakeTime()
    lim = HostLimiter(4, rate=0, clock=ft.clock, sleep=ft.sleep)
    lim.pause("a:80", seconds)
    assert _waited(lim, ft) == 0.0 and lim.unavailable("a:80") == 0.0


def test_retry_after_as_a_far_future_date_is_not_waited(http_server):
    """A Retry-After date in year 9999 is over any cap: transient at once, and the host's pause for the
    other threads is bounded too."""
    far = "Fri, 31 Dec 9999 23:59:59 GMT"
    http_server.serve_bytes("/d.jpg", b"", status=503, headers={"Retry-After": far})
    f = Fetcher(_spec(retries=3, robots=False, max_retry_wait=1))
    t1 = time.monotonic()
    r = f.fetch(http_server.url("/d.jpg"))
    assert (r.reason, r.transient, r.attempts) == ("http_503", True, 1) and time.monotonic() - t1 < 1
    host = f"127.0.0.1:{urllib.parse.urlsplit(http_server.url('/')).port}"
    with f.limiter._lock:
        left = f.limiter._hosts[host].paused_until - time.monotonic()
    assert left <= min(1, MAX_PAUSE)

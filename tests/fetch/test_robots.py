"""robots.txt against hostile files: wildcard matching in linear time, Crawl-delay values that are
not numbers or are absurd, and files built to cost time or memory."""

from __future__ import annotations

import itertools
import random
import re
import time

import pytest

from passkit.config import FetchSpec
from passkit.fetch import Fetcher, Robots, RobotsCache
from passkit.fetch.limiter import MAX_CRAWL_DELAY
from passkit.fetch.robots import MAX_ROBOTS_BYTES, _normalise
from tests.helpers.crawl import jpeg

EVIL = "/*a*a*a*a*a*a*a*a*a*a*a*a*b"


def _spec(**kw) -> FetchSpec:
    return FetchSpec(**{"retries": 0, "allow_private": ["127.0.0.1"], "per_host_rate": 0, **kw})


def _reference(pattern: str, target: str) -> bool:
    """RFC 9309 matching as a regex (correct, but exponential on EVIL): the old implementation."""
    anchored = pattern.endswith("$")
    body = pattern[:-1] if anchored else pattern
    rx = ".*".join(re.escape(_normalise(part)) for part in body.split("*"))
    return re.match(rx + ("$" if anchored else ""), _normalise(target)) is not None


def _disallows(pattern: str, path: str) -> bool:
    return not Robots.parse(f"User-agent: *\nDisallow: {pattern}\n", "passkit").allowed(path)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("pattern", [EVIL, EVIL + "$", "/*a*a*a*a*a*a*a*a*a*a*a*a*$"])
def test_wildcards_match_in_linear_time(pattern):
    path = "/" + "a" * 10_000
    t0 = time.perf_counter()
    disallowed = _disallows(pattern, path)
    assert time.perf_counter() - t0 < 0.1
    assert disallowed == pattern.endswith("*$")  # no "b" in the path; `*$` matches any end


PATTERNS = [
    "/", "/a", "/a$", "/*", "/*$", "*", "$", "/a*", "/a*$", "/*.gif$", "/*.gif", "/a*b", "/a*b$", "/a**b",
    "/*a*a*b", "/a*a", "/a*a$", "/ab*ba$", "/x/*/y", "/caf%C3%A9*", "/café$", "/%7Euser", "/~user", "/a?b=*",
    "/a$b", "/*/", "/**", "/*b*", "/%2A", "/a*%41$",
]
PATHS = [
    "/", "/a", "/ab", "/aab", "/aba", "/abba", "/b", "/x/q/y", "/x/y", "/x.gif", "/x.gif?v=1", "/café/x",
    "/caf%c3%a9", "/~user", "/%7euser/", "/a?b=1", "/a$b", "/aA", "/a%41", "/aaab", "/ab/b", "/*",
]


def test_matching_agrees_with_the_regex_it_replaces():
    for pattern, path in itertools.product(PATTERNS, PATHS):
        assert _disallows(pattern, path) == _reference(pattern, path), (pattern, path)
    rnd = random.Random(9309)
    for _ in range(3000):
        pattern = "/" + "".join(rnd.choice("ab*") for _ in range(rnd.randint(0, 6))) + rnd.choice(["", "$"])
        path = "/" + "".join(rnd.choice("ab") for _ in range(rnd.randint(0, 8)))
        assert _disallows(pattern, path) == _reference(pattern, path), (pattern, path)


def test_longest_match_wins_and_allow_wins_ties_with_wildcards():
    r = Robots.parse("User-agent: *\nDisallow: /*.jpg$\nAllow: /pub/*.jpg\nDisallow: /pub/*/raw*\n"
                     "Allow: /a*c\nDisallow: /ab*\n", "passkit")
    assert not r.allowed("/x/y.jpg") and r.allowed("/x/y.jpg?v=1")
    assert r.allowed("/pub/y.jpg")  # the longer Allow
    assert not r.allowed("/pub/1/raw/y.jpg")  # the longer Disallow
    assert r.allowed("/abc")  # equal length: Allow wins


@pytest.mark.parametrize(("value", "delay"), [
    ("5", 5.0), ("0.5", 0.5), (str(MAX_CRAWL_DELAY), MAX_CRAWL_DELAY), ("nan", None), ("NaN", None),
    ("-3", None), ("-inf", None), ("soon", None), ("", None), ("1 2", None), ("x" * 5000, None),
])
def test_crawl_delay_values_that_are_honoured_or_ignored(value, delay):
    r = Robots.parse(f"User-agent: *\nCrawl-delay: {value}\nDisallow: /no\n", "passkit")
    assert r.crawl_delay == delay
    assert r.allowed("/yes") and not r.allowed("/no") and not r.disallow_all


@pytest.mark.parametrize("value", ["inf", "Infinity", "1e400", "1000000000", "61", "9" * 5000, "1_000"])
def test_a_crawl_delay_over_the_maximum_makes_the_host_unavailable(value):
    r = Robots.parse(f"User-agent: passkit\nCrawl-delay: {value}\nAllow: /\n", "passkit")
    assert r.disallow_all and not r.allowed("/a.jpg")
    assert "Crawl-delay" in r.why and f"{MAX_CRAWL_DELAY:g}s" in r.why


@pytest.mark.timeout(60)
def test_crawl_delay_inf_ends_the_candidate_as_transient(http_server):
    """It raised OverflowError out of the fetcher (the limiter slept inf) on the second request."""
    body = b"User-agent: *\nCrawl-delay: inf\n"
    http_server.serve_bytes("/robots.txt", body, "text/plain")
    http_server.serve_bytes("/a.jpg", jpeg(1))
    f = Fetcher(_spec())
    t0 = time.monotonic()
    for _ in range(2):
        r = f.fetch(http_server.url("/a.jpg"))
        assert (r.ok, r.reason, r.transient) == (False, "robots_unavailable", True)
        assert "Crawl-delay" in (r.detail or "")
    assert time.monotonic() - t0 < 10


@pytest.mark.timeout(60)
def test_hostile_files_stay_bounded_in_time():
    """The worst found: a full 500 KiB of exponential wildcard rules against a 10,000-character path,
    a single line of 500 KiB of NUL bytes and percent escapes, and a file of only stars."""
    line = f"Disallow: {EVIL}\n"
    rules = "User-agent: *\n" + line * (MAX_ROBOTS_BYTES // len(line))
    path = "/" + "a" * 10_000
    t0 = time.perf_counter()
    r = Robots.parse(rules, "passkit")
    assert r.allowed(path) and len(r.rules) == MAX_ROBOTS_BYTES // len(line)
    for text in ["User-agent: *\nDisallow: /x" + "\x00%00" * (MAX_ROBOTS_BYTES // 4) + "\n",
                 "User-agent: *\nDisallow: /" + "*" * MAX_ROBOTS_BYTES + "b\n",
                 "User-agent: *\nDisallow: /" + "*a" * (MAX_ROBOTS_BYTES // 2) + "\n",
                 "\x00" * MAX_ROBOTS_BYTES]:
        robots = Robots.parse(text, "passkit")
        robots.allowed(path)
        robots.allowed("/x" + "\x00" * 10_000)
    assert time.perf_counter() - t0 < 10


def test_the_cache_bounds_memory_across_hostile_hosts(monkeypatch):
    """Every host may serve 500 KiB of rules; the cache keeps an estimated byte budget, not just a count."""
    text = ("User-agent: *\n" + "Disallow: /some/long/path/prefix/*\n" * 2000).encode()
    cache = RobotsCache(lambda url: (200, text, ""), "passkit")
    monkeypatch.setattr(RobotsCache, "MAX_BYTES", 4 * 1024 * 1024)
    for i in range(40):
        assert not cache.get(f"http://h{i}.example/x").allowed("/some/long/path/prefix/x")
    # 2000 rules cost about 0.7 MB by the cache's estimate: a 4 MiB budget holds a handful, not 40.
    assert 1 <= len(cache._entries) <= 8


def test_a_byte_order_mark_does_not_hide_the_first_group():
    """It made the first User-agent line unreadable, so the rules under it applied to nobody."""
    text = "\ufeffUser-agent: *\nDisallow: /private/\n"
    assert not Robots.parse(text, "passkit").allowed("/private/a.jpg")
    cache = RobotsCache(lambda url: (200, text.encode("utf-8"), ""), "passkit")
    assert not cache.get("http://bom.example/x").allowed("/private/a.jpg")

"""Per-host politeness within one worker process: a concurrency cap, a request rate, and pauses.

A host that answers 429 or 503 with Retry-After is paused for every thread of the process, not
just the one that got the answer, so a build backs off as a whole instead of hammering the host
from the other threads. robots.txt Crawl-delay lowers a host's rate further.

Both come from the host, so both are bounded: no wait here is longer than MAX_CRAWL_DELAY between
requests or MAX_PAUSE for a pause, and NaN, infinite or negative values cannot reach `sleep`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

MAX_CRAWL_DELAY = 60.0
"""Longest Crawl-delay honoured, in seconds: one request a minute already keeps a unit on one host
for hours. robots.py counts a host that asks for more as unavailable for now (a transient failure)."""

MAX_PAUSE = 600.0
"""Longest pause a Retry-After puts on a host, in seconds, whatever the spec's max_retry_wait says. A
host that asks for more is paused for this long and reported by `unavailable` meanwhile, so its
candidates can end as transient failures (left to --retry-failed) instead of holding threads."""


def _bounded(seconds: float, cap: float) -> float:
    """`seconds` as a wait that can be slept: NaN and negatives are 0, anything over `cap` (inf too) is `cap`."""
    if not seconds > 0:  # also true for NaN
        return 0.0
    return min(float(seconds), cap)


@dataclass(slots=True)
class _Host:
    slots: threading.Semaphore
    interval: float
    next_at: float = 0.0
    paused_until: float = 0.0
    unavailable_until: float = 0.0  # the host asked for a pause over MAX_PAUSE
    waits: int = 0  # how often a request had to wait its turn (for stats)


class HostLimiter:
    """`with limiter.slot(host): request()` waits for a free connection and the host's next turn."""

    def __init__(
        self, max_concurrent: int, rate: float,
        clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
    ):
        self.max_concurrent = max(1, int(max_concurrent))
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._hosts: dict[str, _Host] = {}
        self._lock = threading.Lock()
        self._clock, self._sleep = clock, sleep

    MAX_HOSTS = 20_000  # a crawl of millions of hosts keeps state only for the busy ones

    def _host(self, host: str) -> _Host:
        with self._lock:
            h = self._hosts.get(host)
            if h is None:
                if len(self._hosts) >= self.MAX_HOSTS:
                    self._evict_idle()
                h = self._hosts[host] = _Host(threading.Semaphore(self.max_concurrent), self.interval)
            return h

    def _evict_idle(self) -> None:
        """Forget hosts with no request in flight, no pause and no booked turn (caller holds the lock)."""
        now = self._clock()
        for name in [n for n, h in self._hosts.items()
                     if h.paused_until <= now and h.next_at <= now and h.unavailable_until <= now
                     and getattr(h.slots, "_value", 0) == self.max_concurrent]:
            del self._hosts[name]

    @contextmanager
    def slot(self, host: str) -> Iterator[None]:
        h = self._host(host)
        h.slots.acquire()
        try:
            while True:
                with self._lock:
                    now = self._clock()
                    start = max(now, h.next_at, h.paused_until)
                    if start <= now:
                        h.next_at = now + h.interval
                        break
                    if h.paused_until <= now:  # our turn is booked: take it, then wait for it
                        h.next_at = start + h.interval
                        wait, booked = start - now, True
                    else:
                        wait, booked = min(h.paused_until - now, 1.0), False
                    h.waits += 1
                self._sleep(wait)
                if booked:
                    break
            yield
        finally:
            h.slots.release()

    def pause(self, host: str, seconds: float, longest: float = MAX_PAUSE) -> None:
        """No new request to `host` from this process for `seconds` (Retry-After), but for at most
        `longest` (and MAX_PAUSE). A host that asked for longer is also `unavailable` for what it asked
        (at most MAX_PAUSE), so callers can end its candidates as transient instead of queueing them."""
        h = self._host(host)
        with self._lock:
            now = self._clock()
            h.paused_until = max(h.paused_until, now + _bounded(seconds, min(longest, MAX_PAUSE)))
            if seconds > min(longest, MAX_PAUSE):
                h.unavailable_until = max(h.unavailable_until, now + _bounded(seconds, MAX_PAUSE))

    def unavailable(self, host: str) -> float:
        """Seconds `host` stays unavailable (it asked for a longer pause than `pause` gave it), or 0.0."""
        with self._lock:
            h = self._hosts.get(host)
            return 0.0 if h is None else max(0.0, h.unavailable_until - self._clock())

    def slow_down(self, host: str, interval: float) -> None:
        """At least `interval` seconds between requests to `host` (robots.txt Crawl-delay), at most
        MAX_CRAWL_DELAY; NaN and negative values change nothing."""
        h = self._host(host)
        with self._lock:
            h.interval = max(h.interval, _bounded(interval, MAX_CRAWL_DELAY))

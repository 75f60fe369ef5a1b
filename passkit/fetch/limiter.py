"""Per-host politeness within one worker process: a concurrency cap, a request rate, and pauses.

A host that answers 429 or 503 with Retry-After is paused for every thread of the process, not
just the one that got the answer, so a build backs off as a whole instead of hammering the host
from the other threads. robots.txt Crawl-delay lowers a host's rate further.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(slots=True)
class _Host:
    slots: threading.Semaphore
    interval: float
    next_at: float = 0.0
    paused_until: float = 0.0
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
                     if h.paused_until <= now and h.next_at <= now
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

    def pause(self, host: str, seconds: float) -> None:
        """No new request to `host` from this process for `seconds` (Retry-After)."""
        h = self._host(host)
        with self._lock:
            h.paused_until = max(h.paused_until, self._clock() + seconds)

    def slow_down(self, host: str, interval: float) -> None:
        """At least `interval` seconds between requests to `host` (robots.txt Crawl-delay)."""
        h = self._host(host)
        with self._lock:
            h.interval = max(h.interval, interval)

"""robots.txt: parsed per RFC 9309, fetched once per host and cached for the life of a worker.

The standard library's parser takes the first matching rule and matches agents by substring; RFC
9309 wants the most specific (longest) matching rule, Allow winning a tie, `*` and `$` wildcards,
and the groups of every line naming our product token merged. Fetch outcomes follow the RFC too:
a 4xx (no robots.txt) allows everything; a 5xx or an unreachable host disallows everything for now
(the candidate ends as a transient failure, so `--retry-failed` tries again later).
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_ROBOTS_BYTES = 500 * 1024  # RFC 9309: parse at least 500 KiB, ignore the rest


@dataclass(slots=True)
class _Group:
    agents: list[str] = field(default_factory=list)
    rules: list[tuple[bool, str]] = field(default_factory=list)  # (allow, path pattern)
    crawl_delay: float | None = None


def _pattern(path: str) -> re.Pattern[str]:
    anchored = path.endswith("$")
    body = path[:-1] if anchored else path
    rx = ".*".join(re.escape(_normalise(part)) for part in body.split("*"))
    return re.compile(rx + ("$" if anchored else ""))


def _normalise(path: str) -> str:
    """Percent-encode what needs it and uppercase escapes, so /é and /%c3%a9 compare equal."""
    quoted = urllib.parse.quote(urllib.parse.unquote(path), safe="/?=&;:@!$'()*+,~-._%")
    return re.sub(r"%[0-9a-f]{2}", lambda m: m.group(0).upper(), quoted)


@dataclass(slots=True)
class Robots:
    """The rules of one robots.txt for one product token."""

    rules: list[tuple[bool, str, re.Pattern[str]]]
    crawl_delay: float | None = None
    allow_all: bool = False
    disallow_all: bool = False
    why: str = ""  # for disallow_all: what went wrong fetching robots.txt

    @classmethod
    def parse(cls, text: str, agent: str) -> Robots:
        groups: list[_Group] = []
        cur: _Group | None = None
        in_agents = False
        for raw in text.splitlines():
            line = raw.split("#", 1)[0].strip()
            if ":" not in line:
                continue
            key, _, value = line.partition(":")
            key, value = key.strip().lower(), value.strip()
            if key in ("user-agent", "useragent"):
                if cur is None or not in_agents:
                    cur = _Group()
                    groups.append(cur)
                cur.agents.append(value.lower())
                in_agents = True
                continue
            in_agents = False
            if cur is None:
                continue
            if key in ("allow", "disallow"):
                if value:
                    cur.rules.append((key == "allow", value))
                # "Disallow:" with no path allows everything: no rule to add.
            elif key == "crawl-delay":
                with contextlib.suppress(ValueError):
                    cur.crawl_delay = max(0.0, float(value))
        token = agent.lower()
        mine = [g for g in groups if token in g.agents]
        if not mine:
            mine = [g for g in groups if "*" in g.agents]
        rules = [(allow, path, _pattern(path)) for g in mine for allow, path in g.rules]
        delays = [g.crawl_delay for g in mine if g.crawl_delay is not None]
        return cls(rules, max(delays) if delays else None)

    def allowed(self, path: str) -> bool:
        """Longest match wins; Allow wins a tie; no match allows."""
        if self.allow_all:
            return True
        if self.disallow_all:
            return False
        target = _normalise(path or "/")
        if target == "/robots.txt":
            return True
        best_len, best_allow = -1, True
        for allow, raw, rx in self.rules:
            if rx.match(target):
                n = len(raw)
                if n > best_len or (n == best_len and allow):
                    best_len, best_allow = n, allow
        return best_allow


# fetch(url) -> (status or None when unreachable, body bytes, detail)
RobotsFetch = Callable[[str], tuple[int | None, bytes, str]]


class RobotsCache:
    """One Robots per scheme://host:port, fetched once even when many threads ask at once."""

    def __init__(self, fetch: RobotsFetch, agent: str, ttl: float = 24 * 3600, retry_ttl: float = 60):
        self._fetch = fetch
        self.agent = agent
        self.ttl, self.retry_ttl = ttl, retry_ttl
        self._entries: dict[str, tuple[float, Robots]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    @staticmethod
    def origin(url: str) -> str:
        p = urllib.parse.urlsplit(url)
        return f"{p.scheme.lower()}://{p.netloc.lower()}"

    MAX_ORIGINS = 50_000

    def get(self, url: str) -> Robots:
        origin = self.origin(url)
        with self._guard:
            if len(self._locks) >= self.MAX_ORIGINS:
                self._prune()
            lock = self._locks.setdefault(origin, threading.Lock())
        with lock:
            hit = self._entries.get(origin)
            if hit is not None and hit[0] > time.monotonic():
                return hit[1]
            robots, ttl = self._load(origin)
            self._entries[origin] = (time.monotonic() + ttl, robots)
            return robots

    def _prune(self) -> None:
        """Drop expired entries, then the older half, so a long crawl's memory stays bounded."""
        now = time.monotonic()
        live = sorted((exp, o) for o, (exp, _) in list(self._entries.items()) if exp > now)
        keep = {o for _, o in live[len(live) // 2:]} if len(live) >= self.MAX_ORIGINS // 2 else {o for _, o in live}
        for o in list(self._entries):
            if o not in keep:
                self._entries.pop(o, None)
        for o in list(self._locks):
            if o not in keep and not self._locks[o].locked():
                del self._locks[o]

    def _load(self, origin: str) -> tuple[Robots, float]:
        status, body, detail = self._fetch(origin + "/robots.txt")
        if status is None or status >= 500 or status == 429:
            why = f"robots.txt unavailable ({detail or f'HTTP {status}'})"
            return Robots([], disallow_all=True, why=why), self.retry_ttl
        if 400 <= status < 500:
            return Robots([], allow_all=True), self.ttl
        if 200 <= status < 300:
            text = body[:MAX_ROBOTS_BYTES].decode("utf-8", errors="replace")
            return Robots.parse(text, self.agent), self.ttl
        return Robots([], allow_all=True), self.ttl  # 3xx left over after redirects: treat as absent


def product_token(user_agent: str) -> str:
    """The token robots.txt groups name: "passkit" for "passkit/0.1 (+https://...)"."""
    return re.split(r"[/\s(]", user_agent.strip(), maxsplit=1)[0] or "passkit"

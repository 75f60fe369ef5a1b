"""robots.txt: parsed per RFC 9309, fetched once per host and cached for the life of a worker.

The standard library's parser takes the first matching rule and matches agents by substring; RFC
9309 wants the most specific (longest) matching rule, Allow winning a tie, `*` and `$` wildcards,
and the groups of every line naming our product token merged. Wildcards are matched in linear
time (a backtracking regex is exponential on `/*a*a*a*...`). Fetch outcomes follow the RFC too:
a 4xx (no robots.txt) allows everything; a 5xx or an unreachable host disallows everything for now
(the candidate ends as a transient failure, so `--retry-failed` tries again later). A Crawl-delay
over `limiter.MAX_CRAWL_DELAY` counts the same way: the host is not crawled now.
"""

from __future__ import annotations

import math
import re
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field

from passkit.fetch.limiter import MAX_CRAWL_DELAY

MAX_ROBOTS_BYTES = 500 * 1024  # RFC 9309: parse at least 500 KiB, ignore the rest


@dataclass(slots=True)
class _Group:
    agents: list[str] = field(default_factory=list)
    rules: list[tuple[bool, str]] = field(default_factory=list)  # (allow, path pattern)
    crawl_delay: float | None = None


@dataclass(frozen=True, slots=True)
class _Pattern:
    """A path pattern as its literal pieces between `*`s, matched greedily in linear time.

    A backtracking regex takes exponential time on `/*a*a*a*...*b`; for pieces separated by `*`
    the leftmost place of each piece, in order, is as good as any other, so no search is needed.
    """

    pieces: tuple[str, ...]
    anchored: bool  # the pattern ended in `$`: the last piece must end the path

    @classmethod
    def compile(cls, path: str) -> _Pattern:
        anchored = path.endswith("$")
        body = path[:-1] if anchored else path
        parts = [_normalise(part) for part in body.split("*")]
        # `**` is `*`: empty pieces between stars match anywhere, so only the ends keep theirs.
        if len(parts) > 2:
            parts = [parts[0], *(p for p in parts[1:-1] if p), parts[-1]]
        return cls(tuple(parts), anchored)

    def match(self, target: str) -> bool:
        """Does the pattern match a prefix of `target` (the whole of it when anchored)?"""
        pieces = self.pieces
        first = pieces[0]
        if not target.startswith(first):
            return False
        if len(pieces) == 1:
            return not self.anchored or len(target) == len(first)
        pos = len(first)
        middle = pieces[1:-1] if self.anchored else pieces[1:]
        for piece in middle:
            at = target.find(piece, pos)
            if at < 0:
                return False
            pos = at + len(piece)
        if not self.anchored:
            return True
        last = pieces[-1]
        return len(target) - len(last) >= pos and target.endswith(last)


_PLAIN = re.compile(r"[A-Za-z0-9/?=&;:@!$'()*+,~._-]*")  # already normal: no escapes, nothing to quote


def _normalise(path: str) -> str:
    """Percent-encode what needs it and uppercase escapes, so /é and /%c3%a9 compare equal."""
    if _PLAIN.fullmatch(path):  # most paths and pieces: skip two copies of each (parsing 500 KiB of rules)
        return path
    quoted = urllib.parse.quote(urllib.parse.unquote(path), safe="/?=&;:@!$'()*+,~-._%")
    return re.sub(r"%[0-9a-f]{2}", lambda m: m.group(0).upper(), quoted)


def _crawl_delay(value: str) -> float | None:
    """Seconds a Crawl-delay value asks for; None for garbage, NaN and negative numbers (ignored,
    as a missing line is); inf and huge values stay (the caller treats all over MAX_CRAWL_DELAY alike)."""
    if len(value) > 32:  # no honest delay is spelled that long; a run of digits is huge, anything else garbage
        return math.inf if value.isdigit() else None
    try:
        delay = float(value)
    except ValueError:
        return None
    if math.isnan(delay) or delay < 0:
        return None
    return delay


@dataclass(slots=True)
class Robots:
    """The rules of one robots.txt for one product token."""

    rules: list[tuple[bool, str, _Pattern]]
    crawl_delay: float | None = None
    allow_all: bool = False
    disallow_all: bool = False
    why: str = ""  # for disallow_all: what went wrong fetching robots.txt, or why the host is off for now

    @classmethod
    def parse(cls, text: str, agent: str) -> Robots:
        groups: list[_Group] = []
        cur: _Group | None = None
        in_agents = False
        # A byte order mark would hide the first line's key, and with it the first group's rules.
        for raw in text.removeprefix("\ufeff").splitlines():
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
                delay = _crawl_delay(value)
                if delay is not None:
                    cur.crawl_delay = delay
        token = agent.lower()
        mine = [g for g in groups if token in g.agents]
        if not mine:
            mine = [g for g in groups if "*" in g.agents]
        delays = [g.crawl_delay for g in mine if g.crawl_delay is not None]
        delay = max(delays) if delays else None
        if delay is not None and delay > MAX_CRAWL_DELAY:
            # Honouring it would hold a worker for hours (or forever); not crawling the host now is
            # the polite reading, and a transient failure leaves its candidates to --retry-failed.
            why = (f"robots.txt asks for a Crawl-delay of {delay:g}s, over the {MAX_CRAWL_DELAY:g}s passkit waits "
                   "between requests: the host counts as unavailable for now")
            return cls([], delay, disallow_all=True, why=why)
        rules = [(allow, path, _Pattern.compile(path)) for g in mine for allow, path in g.rules]
        # Longest first, Allow before Disallow of the same length: the first rule that matches decides.
        rules.sort(key=lambda r: (-len(r[1]), not r[0]))
        return cls(rules, delay)

    def allowed(self, path: str) -> bool:
        """Longest match wins; Allow wins a tie; no match allows."""
        if self.allow_all:
            return True
        if self.disallow_all:
            return False
        target = _normalise(path or "/")
        if target == "/robots.txt":
            return True
        for allow, _raw, pattern in self.rules:  # sorted: longest first, Allow first on a tie
            if pattern.match(target):
                return allow
        return True


def _cost(robots: Robots) -> int:
    """Rough bytes one parsed robots.txt holds: each rule's text twice (raw and normalised) plus
    the objects around it."""
    return 200 + sum(2 * len(raw) + 300 for _allow, raw, _pattern in robots.rules)


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
        self._bytes = 0  # estimated memory of the cached rules (see _cost)

    @staticmethod
    def origin(url: str) -> str:
        p = urllib.parse.urlsplit(url)
        return f"{p.scheme.lower()}://{p.netloc.lower()}"

    MAX_ORIGINS = 50_000
    # Parsed rules of all cached hosts together (estimated): 50,000 hostile hosts serving 500 KiB of
    # rules each would otherwise hold gigabytes in every worker.
    MAX_BYTES = 64 * 1024 * 1024

    def get(self, url: str) -> Robots:
        origin = self.origin(url)
        with self._guard:
            if len(self._locks) >= self.MAX_ORIGINS or self._bytes > self.MAX_BYTES:
                self._prune()
            lock = self._locks.setdefault(origin, threading.Lock())
        with lock:
            hit = self._entries.get(origin)
            if hit is not None and hit[0] > time.monotonic():
                return hit[1]
            robots, ttl = self._load(origin)
            with self._guard:
                old = self._entries.get(origin)
                self._bytes += _cost(robots) - (_cost(old[1]) if old is not None else 0)
                self._entries[origin] = (time.monotonic() + ttl, robots)
            return robots

    def _prune(self) -> None:
        """Drop expired entries, then the older half (and more while over MAX_BYTES), so a long
        crawl's memory stays bounded. The caller holds the guard lock."""
        now = time.monotonic()
        live = sorted((exp, o) for o, (exp, _) in list(self._entries.items()) if exp > now)
        if len(live) >= self.MAX_ORIGINS // 2:
            live = live[len(live) // 2:]
        total = sum(_cost(self._entries[o][1]) for _, o in live)
        first = 0  # the soonest to expire go first
        while first < len(live) and total > self.MAX_BYTES // 2:
            total -= _cost(self._entries[live[first][1]][1])
            first += 1
        keep = {o for _, o in live[first:]}
        for o in list(self._entries):
            if o not in keep:
                self._entries.pop(o, None)
        self._bytes = total
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

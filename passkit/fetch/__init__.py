"""Fetch stage: polite, bounded, SSRF-guarded HTTP downloads."""

from passkit.fetch.http import Fetcher, FetchResult, optout_directive, sniff
from passkit.fetch.limiter import HostLimiter
from passkit.fetch.robots import Robots, RobotsCache
from passkit.fetch.ssrf import Guard, Refused

__all__ = [
    "FetchResult", "Fetcher", "Guard", "HostLimiter", "Refused", "Robots", "RobotsCache", "optout_directive", "sniff",
]

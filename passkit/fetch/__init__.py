"""Fetch stage: polite, bounded HTTP downloads."""

from passkit.fetch.http import Fetcher, FetchResult, optout_directive, sniff

__all__ = ["FetchResult", "Fetcher", "optout_directive", "sniff"]

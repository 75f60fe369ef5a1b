"""YFCC100M (`yfcc100m_dataset`) as a source: the PASS recipe's input.

Two layouts exist: the 2014 Webscope file with 23 tab-separated columns, and the 2016 AWS
"multimedia commons" file that puts a line number and a photo hash in front (25). Text fields are
URL-encoded with `+` for spaces and are decoded here. Lines are read one at a time from a plain or
compressed file (local or fsspec), so memory stays flat however many rows stream through; the only
state that grows is the per-creator counter of the cap (one entry per Flickr user, not per row).

- videos (`marker` 1) are skipped and counted;
- `licenses` (optional) keeps only rows whose licence is one of the listed families or ids, and
  counts the others: PASS starts from the ~17 % of YFCC100M under CC BY;
- `max_per_creator` caps the candidates of one user (PASS kept at most 80 per user); rows past the cap
  are rejected candidates with reason `creator_cap`, so the ledger says why they are missing;
- a line that cannot be read (wrong column count, not UTF-8, no photo id, no download URL, a bad
  marker) becomes a rejected candidate with source id `line:<n>` and the reason; the build goes on.
"""

from __future__ import annotations

import contextlib
import itertools
from collections import Counter
from collections.abc import Iterator
from functools import lru_cache
from pathlib import PurePosixPath
from typing import IO, Any
from urllib.parse import unquote_plus

from passkit import licenses
from passkit.records import Candidate
from passkit.sources.urllist import open_binary
from passkit.sources.yfcc100m_spec import Yfcc100mSourceSpec

COLUMNS = (
    "photo_id", "user_nsid", "user_nickname", "date_taken", "date_uploaded", "capture_device", "title",
    "description", "user_tags", "machine_tags", "longitude", "latitude", "accuracy", "page_url",
    "download_url", "license_name", "license_url", "server_id", "farm_id", "secret", "secret_original",
    "extension_original", "marker",
)
SOURCE = "yfcc100m"


def _decode(field: str) -> str:
    """YFCC's URL encoding ('+' for space, %XX for the rest); strict UTF-8 (raises on bad bytes)."""
    if "+" not in field and "%" not in field:
        return field
    return unquote_plus(field, errors="strict")


@lru_cache(maxsize=4096)
def _licence(name: str, url: str) -> licenses.License | None:
    """The row's licence for the pre-filter; None when the registry cannot read it (the gate will say why)."""
    try:
        return licenses.normalise(name or None, None, url or None)
    except licenses.LicenseError:
        return None


class Yfcc100mSource:
    name = SOURCE

    def __init__(self, spec: Yfcc100mSourceSpec) -> None:
        self.spec = spec
        self.per_creator: Counter[str] = Counter()
        self.families = frozenset(x for x in spec.licenses if not x.startswith(("cc-", "cc0-", "pdm-")))
        self.ids = frozenset(x for x in spec.licenses if x.startswith(("cc-", "cc0-", "pdm-")))
        self.stats: dict[str, int] = {
            "lines": 0, "candidates": 0, "malformed": 0, "videos": 0, "license_prefilter": 0, "creator_cap": 0,
        }

    def _layout(self, path: str, head: list[bytes]) -> int:
        if self.spec.layout != "auto":
            return int(self.spec.layout)
        for raw in head:
            n = raw.rstrip(b"\r\n").count(b"\t") + 1
            if n in (23, 25):
                return n
        raise ValueError(f"{path}: no line with 23 or 25 tab-separated columns in the first {len(head)}; "
                         "is this a yfcc100m_dataset file? (set layout: 23 or 25 to force one)")

    def _wanted(self, lic: licenses.License | None) -> bool:
        if not self.families and not self.ids:
            return True
        if lic is None:
            return True  # unreadable licence: passed on so the gate records why
        return lic.family in self.families or lic.id in self.ids or lic.unported_id in self.ids

    def _parse(self, raw: bytes, n: int, width: int, query: str) -> Candidate | None:
        bad = self._bad
        line = raw.rstrip(b"\r\n")
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            return bad(n, query, "bad_encoding", f"line is not UTF-8 at byte {e.start}")
        f = text.split("\t")
        if len(f) != width:
            return bad(n, query, "wrong_column_count", f"{len(f)} columns, expected {width}")
        if width == 25:
            f = f[2:]
        (pid, nsid, nick, taken, _up, _dev, title, _desc, tags, _mt, _lon, _lat, _acc, page, dl, lname, lurl,
         *_rest, marker) = f
        if marker == "1":
            self.stats["videos"] += 1
            return None
        if marker != "0":
            return bad(n, query, "bad_marker", f"photo/video marker {marker[:20]!r} is neither 0 nor 1")
        if not pid.isdigit():
            return bad(n, query, "bad_id", f"photo id {pid[:40]!r} is not a number")
        if not dl.startswith(("http://", "https://")):
            return bad(n, query, "missing_url", f"download_url {dl[:80]!r} is not an http(s) URL", pid)
        try:
            nick_t, title_t, tags_t = _decode(nick), _decode(title), _decode(tags)
            lname_t = _decode(lname)
        except UnicodeDecodeError as e:
            return bad(n, query, "bad_encoding", f"a URL-encoded field is not UTF-8 ({e.reason})", pid)
        if not self._wanted(_licence(lname_t, lurl)):
            self.stats["license_prefilter"] += 1
            return None
        cap = self.spec.max_per_creator
        if cap is not None and nsid:
            have = self.per_creator[nsid]
            if have >= cap:
                self.stats["creator_cap"] += 1
                return Candidate(SOURCE, pid, dl, query=query, extra={"line": n},
                                 error=("creator_cap", f"user {nsid} already has {cap} candidates"))
            self.per_creator[nsid] = have + 1
        extra: dict[str, Any] = {"line": n, "user_nsid": nsid, "date_taken": taken}
        if tags_t:
            extra["tags"] = tags_t
        return Candidate(
            source=SOURCE,
            source_id=pid,
            url=dl,
            license=lname_t or None,
            license_url=lurl or None,
            title=title_t.strip() or None,
            creator=nick_t.strip() or None,
            creator_url=f"https://www.flickr.com/photos/{nsid}/" if nsid else None,
            landing_url=page or None,
            provider="flickr",
            query=query,
            extra=extra,
        )

    def _bad(self, n: int, query: str, reason: str, detail: str, pid: str | None = None) -> Candidate:
        self.stats["malformed"] += 1
        # line:<n> keeps keys unique and stable even when the id itself is what is broken
        return Candidate(SOURCE, f"{self._prefix}line:{n}", "", query=query,
                         extra={"line": n, **({"photo_id": pid} if pid else {})}, error=(reason, detail))

    _prefix = ""

    def _lines(self, f: IO[bytes]) -> Iterator[bytes]:
        return iter(f)

    def candidates(self) -> Iterator[Candidate]:
        limit = self.spec.limit
        many = len(self.spec.paths) > 1
        for i, path in enumerate(self.spec.paths):
            self._prefix = f"{i}:" if many else ""
            query = PurePosixPath(path.split("?")[0]).name
            with open_binary(path) as f:
                lines = self._lines(f)
                head = list(itertools.islice(lines, 100))
                if not head:
                    continue
                width = self._layout(path, head)
                for n, raw in enumerate(itertools.chain(head, lines), 1):
                    if limit is not None and self.stats["lines"] >= limit:
                        return
                    self.stats["lines"] += 1
                    if not raw.strip():
                        continue
                    cand = self._parse(raw, n, width, query)
                    if cand is not None:
                        self.stats["candidates"] += 1
                        yield cand

    def describe(self) -> dict[str, Any]:
        return {
            "kind": SOURCE,
            "paths": list(self.spec.paths),
            "layout": self.spec.layout,
            "max_per_creator": self.spec.max_per_creator,
            "licenses": list(self.spec.licenses),
            "limit": self.spec.limit,
            "stats": self.stats,  # live: final counts once the build has read every line
        }


@contextlib.contextmanager
def open_yfcc100m(spec: Yfcc100mSourceSpec) -> Iterator[Yfcc100mSource]:
    yield Yfcc100mSource(spec)

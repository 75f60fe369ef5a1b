"""The records every stage speaks.

A `Candidate` is what a source proposes; each stage either passes it on or ends it with a
`Decision`. Kept candidates become `Sample`s, whose `meta()` is the `<key>.json` of a shard.
Plain dataclasses: they cross process boundaries (pickled) and are built millions of times.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def make_key(source: str, source_id: str) -> str:
    """Stable, dot-free sample key: WebDataset splits a member name at its first dot."""
    digest = hashlib.sha1(f"{source}\x00{source_id}".encode()).hexdigest()[:16]
    return f"{_KEY_UNSAFE.sub('_', source)}_{digest}"


@dataclass(slots=True)
class Attribution:
    """TASL: title, author, source, license, plus what a credit line needs."""

    title: str | None = None
    creator: str | None = None
    creator_url: str | None = None
    landing_url: str | None = None  # the work's page (the "source" of TASL)
    provider: str | None = None
    license: str | None = None  # registry id, e.g. "cc-by-2.0"; set by the licence gate
    license_url: str | None = None
    license_name: str | None = None  # e.g. "CC BY 2.0"
    sentence: str | None = None  # the credit line CC recommends
    # What the licence gate changed in the source's text (control characters removed, a field cut at its
    # length limit), e.g. "title: cut from 1048576 to 1000 characters"; None when nothing was.
    changes: str | None = None


@dataclass(slots=True)
class Candidate:
    """One image proposed by a source, with its raw licence and attribution metadata."""

    source: str  # source kind, e.g. "openverse", "demo"
    source_id: str  # stable id within the source
    url: str  # where the image bytes are fetched from
    license: str | None = None  # raw licence text or URL as the source gives it
    license_version: str | None = None
    license_url: str | None = None
    title: str | None = None
    creator: str | None = None
    creator_url: str | None = None
    landing_url: str | None = None
    provider: str | None = None
    query: str | None = None  # the search that found it (provenance)
    extra: dict[str, Any] = field(default_factory=dict)
    # (reason, detail) when the source could not read this row (wrong column count, bad encoding, no
    # URL, ...): the unit rejects it at the source stage, so it lands in rejected.parquet, not in a crash.
    # The reasons are registered in passkit.reasons.
    error: tuple[str, str] | None = None

    @property
    def key(self) -> str:
        return make_key(self.source, self.source_id)


_TEXT_FIELDS = ("source", "source_id", "url", "license", "license_version", "license_url", "title", "creator",
                "creator_url", "landing_url", "provider", "query")


def scrub_unencodable(c: Candidate) -> Candidate:
    """`c` with text that is not valid Unicode (lone surrogates: a JSON escape such as \\ud800) replaced
    by "?", and rejected as bad_encoding. Such text cannot be encoded as UTF-8, so it would break the
    candidate's key, its unit's fingerprint and the ledger: the whole unit, on every rerun. One encode
    of all fields in the common case."""
    try:
        "\x00".join(v for f in _TEXT_FIELDS if isinstance(v := getattr(c, f), str)).encode()
        return c
    except UnicodeEncodeError:
        pass
    bad = []
    for f in _TEXT_FIELDS:
        v = getattr(c, f)
        if isinstance(v, str):
            try:
                v.encode()
            except UnicodeEncodeError:
                setattr(c, f, v.encode("utf-8", "replace").decode())
                bad.append(f)
    if c.error is None:
        c.error = ("bad_encoding", f"{', '.join(bad)}: not valid Unicode (a lone surrogate), replaced by '?'")
    return c


class Status(StrEnum):
    KEPT = "kept"
    REJECTED = "rejected"
    REVIEW = "review"


class Stage(StrEnum):
    """Every stage that can end a candidate, in funnel order: the unit's stages, then the release's
    (passkit.release.curate); the report and manifest list them in this order."""

    SOURCE = "source"
    LICENSE = "license"
    FETCH = "fetch"
    IMAGE = "image"
    PEOPLE = "people"
    QUALITY = "quality"
    DECONTAMINATION = "decontamination"
    DEDUP = "dedup"
    CREATOR_CAP = "creator_cap"
    TAKEDOWN = "takedown"


@dataclass(slots=True)
class Decision:
    """How a candidate ended: the stage that ended it, a short machine reason and a human detail."""

    status: Status
    stage: Stage | None = None
    reason: str | None = None  # short, groupable, one of passkit.reasons.REASONS: "http_404", "people"
    detail: str | None = None  # free text for humans
    scores: dict[str, float] = field(default_factory=dict)

    @classmethod
    def reject(cls, stage: Stage, reason: str, detail: str | None = None, **scores: float) -> Decision:
        return cls(Status.REJECTED, stage, reason, detail, dict(scores))


@dataclass(slots=True)
class ImageInfo:
    """What the image check learnt: the re-encoded bytes and their fingerprints."""

    jpeg: bytes
    sha256: str  # of the re-encoded JPEG as stored in the shard
    source_sha256: str  # of the bytes as downloaded
    phash: str  # 64-bit perceptual hash, 16 hex digits
    width: int
    height: int
    orig_width: int
    orig_height: int
    orig_format: str
    source_bytes: int
    flat_fraction: float | None = None  # share of near-median pixels (filters.quality), for curation
    flat_colour: tuple[int, int, int] | None = None


@dataclass(slots=True)
class Sample:
    """A kept image with everything its `<key>.json` carries."""

    key: str
    candidate: Candidate
    attribution: Attribution
    image: ImageInfo
    modification: str
    scores: dict[str, float] = field(default_factory=dict)

    def meta(self) -> dict[str, Any]:
        c, a, im = self.candidate, self.attribution, self.image
        out = {
            "key": self.key,
            "title": a.title,
            "creator": a.creator,
            "creator_url": a.creator_url,
            "source_url": c.url,
            "landing_url": a.landing_url,
            "provider": a.provider,
            "license": a.license,
            "license_name": a.license_name,
            "license_url": a.license_url,
            "attribution": a.sentence,
            "modification": self.modification,
            "source": c.source,
            "source_id": c.source_id,
            "query": c.query,
            "sha256": im.sha256,
            "source_sha256": im.source_sha256,
            "phash": im.phash,
            "width": im.width,
            "height": im.height,
            "orig_width": im.orig_width,
            "orig_height": im.orig_height,
            "bytes": len(im.jpeg),
            "scores": dict(sorted(self.scores.items())),
        }
        if a.changes:  # only then: the json of a sample with ordinary metadata keeps its exact bytes
            out["text_changes"] = a.changes
        return out


# Fields every kept sample must have (complete TASL); the licence gate and audit share this list.
# The title is required too for CC licences before 4.0 (see licenses.License.needs_title).
REQUIRED_ATTRIBUTION = ("creator", "landing_url", "license", "license_url")


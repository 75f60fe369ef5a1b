"""Licence registry, normalisation and policies.

Every licence a source reports is normalised to one registry entry or refused with a reason:
a wrong licence must never get in by a lenient guess. Ids look like `cc-by-2.0`,
`cc-by-nc-sa-3.0-jp` (a jurisdiction port), `cc0-1.0`, `pdm-1.0`.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from functools import cache

from passkit.records import REQUIRED_ATTRIBUTION, Attribution, Candidate

FAMILIES = ("by", "by-sa", "by-nd", "by-nc", "by-nc-sa", "by-nc-nd")
VERSIONS = ("1.0", "2.0", "2.5", "3.0", "4.0")
# BY-NC-ND 1.0 was published as "by-nd-nc"; the other families kept their order.
_FAMILY_ALIASES = {"by-nd-nc": "by-nc-nd", "by-sa-nc": "by-nc-sa", "by-nd-sa": None}


@dataclass(frozen=True, slots=True)
class License:
    id: str
    family: str  # "by", "by-sa", ..., "cc0", "pdm"
    version: str
    port: str | None = None  # jurisdiction port, e.g. "jp"

    @property
    def name(self) -> str:
        if self.family == "cc0":
            return "CC0 1.0"
        if self.family == "pdm":
            return "Public Domain Mark 1.0"
        port = f" {self.port.upper()}" if self.port else ""
        return f"CC {self.family.upper()} {self.version}{port}"

    @property
    def url(self) -> str:
        if self.family == "cc0":
            return "https://creativecommons.org/publicdomain/zero/1.0/"
        if self.family == "pdm":
            return "https://creativecommons.org/publicdomain/mark/1.0/"
        fam = "by-nd-nc" if (self.family == "by-nc-nd" and self.version == "1.0") else self.family
        port = f"{self.port}/" if self.port else ""
        return f"https://creativecommons.org/licenses/{fam}/{self.version}/{port}"

    @property
    def public_domain(self) -> bool:
        return self.family in ("cc0", "pdm")

    @property
    def needs_attribution(self) -> bool:
        return not self.public_domain

    @property
    def needs_title(self) -> bool:
        """CC licences before 4.0 ask for the title of the work in the credit."""
        return not self.public_domain and self.version != "4.0"

    @property
    def non_commercial(self) -> bool:
        return "nc" in self.family.split("-")

    @property
    def no_derivatives(self) -> bool:
        return "nd" in self.family.split("-")

    @property
    def share_alike(self) -> bool:
        return "sa" in self.family.split("-")


class LicenseError(ValueError):
    """Input that does not name exactly one licence in the registry."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _make_id(family: str, version: str, port: str | None) -> str:
    if family in ("cc0", "pdm"):
        return f"{family}-{version}"
    return f"cc-{family}-{version}" + (f"-{port}" if port else "")


@cache
def get(family: str, version: str, port: str | None = None) -> License:
    family = _FAMILY_ALIASES.get(family, family) or ""
    if family in ("cc0", "pdm"):
        if version != "1.0":
            raise LicenseError("license_unknown", f"{family} has only version 1.0, not {version!r}")
        return License(_make_id(family, version, None), family, version)
    if family not in FAMILIES:
        raise LicenseError("license_unknown", f"no CC licence family {family!r}")
    if version not in VERSIONS:
        raise LicenseError("license_unknown", f"CC {family} has no version {version!r}")
    if port is not None and (version == "4.0" or not re.fullmatch(r"[a-z]{2}(-[a-z]{2})?", port)):
        raise LicenseError("license_unknown", f"CC {family} {version} has no jurisdiction port {port!r}")
    return License(_make_id(family, version, port), family, version, port)


def by_id(license_id: str) -> License:
    m = re.fullmatch(r"cc-([a-z-]+?)-(\d\.\d)(?:-([a-z]{2}(?:-[a-z]{2})?))?|(cc0|pdm)-(1\.0)", license_id)
    if not m:
        raise LicenseError("license_unknown", f"not a registry id: {license_id!r}")
    if m.group(4):
        return get(m.group(4), m.group(5))
    return get(m.group(1), m.group(2), m.group(3))


_CC_URL = re.compile(
    r"^(?:https?://)?(?:www\.)?creativecommons\.org/"
    r"(?:licenses/(?P<fam>[a-z-]+)/(?P<ver>\d\.\d)(?:/(?P<port>[a-z]{2}(?:-[a-z]{2})?))?"
    r"|publicdomain/(?P<pd>zero|mark)/(?P<pdver>\d\.\d))"
    r"(?:/(?:deed(?:\.[a-zA-Z_-]+)?|legalcode(?:\.[a-zA-Z_-]+)?|rdf))?/?$"
)


def from_url(url: str) -> License:
    """Normalise any spelling of a CC licence URL (scheme, www, deed.xx, legalcode, slash)."""
    raw = url
    u = urllib.parse.unquote(url.strip()).split("#")[0].split("?")[0].lower()
    m = _CC_URL.match(u)
    if not m:
        raise LicenseError("license_unknown", f"not a Creative Commons licence URL: {raw!r}")
    if m.group("pd"):
        return get("cc0" if m.group("pd") == "zero" else "pdm", m.group("pdver"))
    return get(m.group("fam"), m.group("ver"), m.group("port"))


_NAME = re.compile(
    r"^(?:cc[\s_-]*)?(?P<fam>by(?:[\s_-]*(?:nc|nd|sa)){0,2})[\s_-]*(?P<ver>\d\.\d)?(?:[\s_-]+(?P<port>[a-z]{2}))?$"
)


def from_name(name: str, version: str | None = None) -> License:
    """Normalise short names: 'CC BY-SA 4.0', 'by' + version '2.0' (Openverse), 'cc0', 'pdm'."""
    n = name.strip().lower()
    if n in ("cc0", "cc0 1.0", "cc-zero", "cc zero"):
        return get("cc0", "1.0")
    if n in ("pdm", "pdm 1.0", "public domain mark", "public domain mark 1.0"):
        return get("pdm", "1.0")
    m = _NAME.match(n)
    if not m:
        raise LicenseError("license_unknown", f"unrecognised licence name {name!r}")
    fam = re.sub(r"[\s_-]+", "-", m.group("fam"))
    ver = m.group("ver") or version
    if ver is None:
        raise LicenseError("license_ambiguous", f"licence {name!r} has no version")
    if m.group("ver") and version and m.group("ver") != version:
        raise LicenseError("license_ambiguous", f"licence {name!r} disagrees with version {version!r}")
    return get(fam, ver, m.group("port"))


def normalise(
    license: str | None, version: str | None = None, url: str | None = None
) -> License:
    """One licence from whatever the source gives; the URL and the name must agree when both exist."""
    by_url = from_url(url) if url else None
    by_name = from_name(license, version) if license else None
    if by_url and by_name and by_url.id != by_name.id:
        # Sources often drop the jurisdiction port from the short code: the URL is more specific.
        same_but_port = (by_url.family, by_url.version) == (by_name.family, by_name.version)
        if not (same_but_port and by_name.port is None):
            raise LicenseError(
                "license_conflict", f"licence {license!r} {version or ''} disagrees with URL {url!r}"
            )
    lic = by_url or by_name
    if lic is None:
        raise LicenseError("license_missing", "the source gives no licence")
    return lic


# ----------------------------------------------------------------------------- policies


@dataclass(frozen=True, slots=True)
class Policy:
    """Which licences may enter a release. Explicit deny wins over allow."""

    name: str
    families: frozenset[str]
    allow: frozenset[str] = frozenset()  # extra registry ids allowed
    deny: frozenset[str] = frozenset()  # registry ids refused even if the family passes

    def allows(self, lic: License) -> bool:
        if lic.id in self.deny:
            return False
        return lic.family in self.families or lic.id in self.allow

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "families": sorted(self.families),
            "allow": sorted(self.allow),
            "deny": sorted(self.deny),
        }


POLICIES: dict[str, frozenset[str]] = {
    "cc-by": frozenset({"by"}),
    "by-or-public-domain": frozenset({"by", "cc0", "pdm"}),
}


def policy(name: str, allow: list[str] | None = None, deny: list[str] | None = None) -> Policy:
    if name not in POLICIES:
        raise ValueError(f"unknown licence policy {name!r}; choose one of {sorted(POLICIES)}")
    for lid in [*(allow or []), *(deny or [])]:
        by_id(lid)  # raises on a typo
    return Policy(name, POLICIES[name], frozenset(allow or ()), frozenset(deny or ()))


# ----------------------------------------------------------------------------- attribution


def attribution_sentence(
    lic: License, title: str | None, creator: str | None, landing_url: str | None
) -> str:
    """The credit line CC recommends: '"Title" by Creator is licensed under CC BY 2.0 (URL).'"""
    work = f'"{title}"' if title else "This work"
    if lic.public_domain:
        by = f" by {creator}" if creator else ""
        s = f"{work}{by} is marked with {lic.name}. To view the terms, visit {lic.url}"
    else:
        s = (
            f"{work} by {creator} is licensed under {lic.name}. "
            f"To view a copy of this license, visit {lic.url}"
        )
    return f"{s}. Source: {landing_url}" if landing_url else s


# ----------------------------------------------------------------------------- the gate


def _clean(value: str | None) -> str | None:
    if value is None:
        return None
    value = re.sub(r"<[^>]+>", "", str(value))  # creators sometimes arrive as HTML links
    value = re.sub(r"\s+", " ", value).strip()
    return value or None


def gate(c: Candidate, pol: Policy) -> Attribution | tuple[str, str]:
    """Attribution for an allowed, fully attributed candidate, or (reason, detail) for a rejection.

    Runs before any download: an image we may not use is never fetched.
    """
    try:
        lic = normalise(c.license, c.license_version, c.license_url)
    except LicenseError as e:
        return e.reason, e.detail
    if not pol.allows(lic):
        return "license_not_allowed", f"{lic.name} is not allowed by policy {pol.name!r}"
    a = Attribution(
        title=_clean(c.title),
        creator=_clean(c.creator),
        creator_url=(c.creator_url or None),
        landing_url=(c.landing_url or None),
        provider=_clean(c.provider),
        license_id=lic.id,
        license_url=lic.url,
        license_name=lic.name,
    )
    missing = [f for f in REQUIRED_ATTRIBUTION if not getattr(a, f)]
    if lic.needs_title and not a.title:
        missing.append("title")
    if missing:
        return "attribution_incomplete", f"missing {', '.join(missing)}"
    a.sentence = attribution_sentence(lic, a.title, a.creator, a.landing_url)
    return a

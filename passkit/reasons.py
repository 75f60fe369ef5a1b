"""Every reason a candidate can be rejected for, in one registry, and the exception that carries one.

A rejection is a (reason, detail) pair: `reason` a short, groupable code that the ledger, the
release's rejected.parquet, the manifest's counts and the report group by; `detail` free text for
humans. Stages raise a `Rejection` (or a subclass: images.ImageReject, licenses.LicenseError, the
fetcher's internal failure, the SSRF guard's Refused) or build a records.Decision; sources put the
pair in Candidate.error.
`REASONS` lists every code any of them produces, with its stage, whether it is transient (worth a
`passkit build --retry-failed`) and what it means, as the audit's `CODES` does for audit findings.
tests/test_reasons.py scans the source for reasons and fails on one missing here or in the
README's table of rejection reasons.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from passkit.records import Stage


class Rejection(Exception):
    """A candidate's rejection on its way to the stage that records it as a Decision."""

    def __init__(self, reason: str, detail: str, transient: bool = False):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.transient = transient


@dataclass(frozen=True, slots=True)
class Reason:
    stages: tuple[Stage, ...]  # the stages that produce it (a few codes mean the same in two stages)
    transient: bool | None  # None: depends on the case (an HTTP status, a resolver error)
    meaning: str


def _r(stages: Stage | tuple[Stage, ...], transient: bool | None, meaning: str) -> Reason:
    return Reason(stages if isinstance(stages, tuple) else (stages,), transient, meaning)


_S, _L, _F, _I, _P = Stage.SOURCE, Stage.LICENSE, Stage.FETCH, Stage.IMAGE, Stage.PEOPLE

# A code with a `<placeholder>` stands for a family: http_<status> covers http_404, http_503, ...
REASONS: dict[str, Reason] = {
    # source: rows a source could not read (Candidate.error), and repeats within a build
    "duplicate_candidate": _r(_S, False, "the same source id listed twice (in one unit, or in two units)"),
    "duplicate_url": _r(_S, False, "the same image URL as an earlier candidate of the unit (fetched once)"),
    "missing_url": _r(_S, False, "the row names no image URL (empty column, no http(s) URL, no size)"),
    "missing_id": _r(_S, False, "the row has no id"),
    "bad_id": _r(_S, False, "the row's id is malformed (YFCC100M: not a number)"),
    "bad_url": _r((_S, _F), False, "the URL does not parse, has no host or is not an http(s) URL"),
    "bad_encoding": _r((_S, _F), False, "a field is not valid UTF-8, or a body's Content-Encoding does not decode"),
    "bad_json": _r(_S, False, "a JSON-lines row does not parse"),
    "bad_row": _r(_S, False, "a JSON-lines row is not an object"),
    "wrong_column_count": _r(_S, False, "a CSV/TSV row has another number of fields than the header"),
    "bad_csv_row": _r(_S, False, "a CSV/TSV line the reader cannot split on its own: a quote left open at its end "
                             "(a quoted field cannot span lines), a bare carriage return, a field over 16 MB"),
    "bad_marker": _r(_S, False, "a YFCC100M row's photo/video marker is neither 0 nor 1"),
    "malformed_result": _r(_S, False, "an API search result lacks what a candidate needs"),
    "missing_sidecar": _r(_S, False, "a folder image has no JSON sidecar and the spec gives no defaults"),
    "bad_sidecar": _r(_S, False, "a folder image's JSON sidecar is unreadable or not an object"),
    "creator_cap": _r((_S, Stage.CREATOR_CAP), False,
                      "the creator already has the most samples allowed (a source's cap or release.max_per_creator)"),
    # licence gate: before any download
    "license_missing": _r(_L, False, "the source gives no licence"),
    "license_unknown": _r(_L, False, "the licence is not one the registry knows"),
    "license_unsupported": _r(_L, False, "a known licence or mark that is not CC (e.g. all rights reserved)"),
    "license_ambiguous": _r(_L, False, "the licence name and version disagree, or the version is missing"),
    "license_conflict": _r(_L, False, "the licence name or version disagrees with the licence URL"),
    "license_not_allowed": _r(_L, False, "a valid licence the spec's policy does not admit"),
    "attribution_incomplete": _r(_L, False, "TASL incomplete: creator, landing page, licence or a needed title missing"),
    # fetch
    "ssrf_private": _r(_F, False, "the host resolves to a private address (fetch.allow_private admits it)"),
    "ssrf_loopback": _r(_F, False, "the host resolves to a loopback address"),
    "ssrf_link_local": _r(_F, False, "the host resolves to a link-local address"),
    "ssrf_multicast": _r(_F, False, "the host resolves to a multicast address"),
    "ssrf_reserved": _r(_F, False, "the host resolves to a reserved or unparseable address"),
    "ssrf_unspecified": _r(_F, False, "the host resolves to the unspecified address (0.0.0.0, ::)"),
    "bad_scheme": _r(_F, False, "the URL's scheme is not http or https"),
    "dns_error": _r(_F, None, "the host name does not resolve (transient for a resolver hiccup)"),
    "connect_timeout": _r(_F, True, "no connection within fetch.connect_timeout"),
    "connection_refused": _r(_F, True, "the server refused the connection"),
    "connection_reset": _r(_F, True, "the connection was reset"),
    "connection_error": _r(_F, True, "another connection failure (TLS, protocol)"),
    "truncated_body": _r(_F, True, "the body ended before its Content-Length"),
    "truncated_headers": _r(_F, True, "the connection closed inside the status line or headers"),
    "bad_response": _r(_F, False, "the answer is not valid HTTP (status line, header lines, a Content-Length not one number)"),
    "timeout": _r(_F, True, "a read timed out"),
    "too_slow": _r(_F, True, "a request (connect, headers, body) took longer than fetch.total_timeout (slow drip)"),
    "request_error": _r(_F, True, "the request failed in another way"),
    "robots_disallowed": _r(_F, False, "robots.txt disallows the path"),
    "robots_unavailable": _r(_F, True, "robots.txt could not be read whole, or asks for a Crawl-delay over 60 s: "
                             "the host is assumed disallowed for now (RFC 9309)"),
    "host_unavailable": _r(_F, True, "the host asked (Retry-After) for a longer pause than fetch.max_retry_wait; "
                           "not tried now"),
    "redirect_loop": _r(_F, False, "a redirect leads back to a URL already visited"),
    "too_many_redirects": _r(_F, False, "more redirects than fetch.max_redirects"),
    "bad_redirect": _r(_F, False, "a redirect's Location does not parse or could not be sent (or several disagree)"),
    "optout": _r(_F, False, "an opt-out header (e.g. X-Robots-Tag: noai) forbids the use"),
    "http_<status>": _r(_F, None, "the server answered with that HTTP status (transient: 408, 425, 429, 500, 502-504)"),
    "wrong_content_type": _r(_F, False, "the Content-Type is not an image (the body is not downloaded)"),
    "not_image": _r(_F, False, "the bytes are not an image format, whatever the Content-Type says"),
    "empty_body": _r(_F, False, "HTTP 200 with zero bytes"),
    "too_large": _r(_F, False, "the body is over fetch.max_bytes"),
    "decompression_bomb": _r(_F, False, "a compressed body inflates past fetch.max_bytes"),
    "fetch_error": _r(_F, False, "a failed fetch that gave no reason"),
    "fetch_exception": _r(_F, True, "an exception no fetch check names (a passkit bug: the detail names it)"),
    # image check
    "empty": _r(_I, False, "zero bytes to decode"),
    "unsupported_format": _r(_I, False, "an image format the check does not take"),
    "too_many_pixels": _r(_I, False, "more pixels than image.max_pixels (a decompression-bomb guard)"),
    "too_small": _r(_I, False, "the shorter side is under image.min_side"),
    "decode_error": _r(_I, False, "the image does not decode"),
    "decode_budget": _r(_I, False, "decoding would need more memory than image.decode_budget_mb, even reduced"),
    # people filter
    "people": _r(_P, False, "a detector found a person or face"),
    "review": _r(_P, False, "a score in a detector's review band: staged for `passkit review`, not released yet"),
    "human_review": _r(_P, False, "a human reviewer saw a person (review queue or spot check)"),
    "pending_review": _r(_P, False, "in the review band and not decided yet by `passkit review`"),
    # any unit stage: a bug met while handling one candidate ends that candidate, not its unit
    "internal_error": _r((_S, _L, _F, _I, _P), True,
                         "an unexpected exception while handling this candidate (the detail names the step and "
                         "the exception); transient, so --retry-failed redoes it after an upgrade"),
    # release-wide curation (passkit.release.curate) and takedowns
    "blank": _r(Stage.QUALITY, False, "a blank image: nearly all pixels one white or black"),
    "single_colour": _r(Stage.QUALITY, False, "nearly all pixels one colour"),
    "near_eval_set": _r(Stage.DECONTAMINATION, False, "pHash close to an image of an evaluation set"),
    "duplicate": _r(Stage.DEDUP, False, "the same image bytes as an earlier sample"),
    "near_duplicate": _r(Stage.DEDUP, False, "pHash within release.near_dup_hamming of an earlier sample"),
    "takedown": _r(Stage.TAKEDOWN, False, "removed on request (spec takedowns or `passkit takedown`)"),
}

_FAMILIES = [(re.compile(re.sub(r"<\w+>", r"\\w+", re.escape(k)) + r"\Z"), k) for k in REASONS if "<" in k]


def lookup(reason: str) -> Reason | None:
    """The registry entry of a reason as recorded (http_404 finds http_<status>), or None."""
    hit = REASONS.get(reason)
    if hit is not None:
        return hit
    return next((REASONS[k] for pattern, k in _FAMILIES if pattern.match(reason)), None)

"""`check_sources=N`: N random samples' source URLs and landing pages fetched again.

The image must still decode to (nearly) the same picture and the landing page must still link to
the sample's licence. Only a page naming another licence is a finding; an unreachable or changed
source is a warning: links rot, and licences granted stay granted. Both fetches go through the
auditor's Fetcher (its FetchSpec: SSRF guard, robots.txt, redirects, timeouts).

The network settings are the auditor's, never the release's: the release is the thing under audit,
and a manifest whose spec.fetch.allow_private names internal networks, with an index pointing at
internal addresses, would otherwise make the auditor's machine connect to them. Without an explicit
FetchSpec the defaults apply (no private networks); a release that asked for private ones gets a
`source_settings_ignored` warning. Only the image settings that shape the comparison (sizes) come from
the manifest, and its pixel budget never raises the auditor's.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from passkit.audit.context import INDEX, AuditContext
from passkit.parquetio import open_parquet

if TYPE_CHECKING:
    from passkit.fetch import Fetcher

CC_LINK = re.compile(r"""(?:https?:)?//(?:www\.)?creativecommons\.org/(?:licenses|publicdomain)/[A-Za-z0-9./_-]+""")
SOURCE_PHASH_CHANGED = 12  # pHash bits: more than this and the URL serves another picture
LANDING_MAX_BYTES = 2_000_000


def page_licenses(html_text: str) -> set[str]:
    """Registry ids of the CC licences a page links to (rel="license" links and plain ones)."""
    from passkit import licenses as lic_mod

    found: set[str] = set()
    for url in CC_LINK.findall(html_text):
        try:
            found.add(lic_mod.from_url(url if url.startswith("http") else "https:" + url).id)
        except lic_mod.LicenseError:
            continue
    return found


def landing_page(fetcher: Fetcher, url: str) -> tuple[str | None, str]:
    """(HTML text, "") or (None, why) for a landing page, fetched by a passkit.fetch.Fetcher."""
    from passkit.fetch.http import page_text

    res = fetcher.fetch_page(url, LANDING_MAX_BYTES)
    if res.ok:
        return page_text(res.data, res.content_type), ""
    if res.status is not None:
        return None, f"landing page HTTP {res.status}"
    if res.reason == "too_many_redirects":
        return None, "too many redirects"
    if res.reason == "robots_disallowed":
        return None, str(res.detail)
    return None, f"{res.reason}: {res.detail}"


def recheck_sources(ctx: AuditContext) -> None:
    """Fetch `ctx.check_sources` random samples' source URLs and landing pages again; compare image and licence."""
    m = ctx.m
    if not ctx.check_sources or m is None:
        return  # before the imports: the fetcher and image stack cost ~20 MB an audit without this check never needs
    import random

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from passkit import images
    from passkit.config import FetchSpec, ImageSpec
    from passkit.fetch import Fetcher
    from passkit.filters.dedup import hamming

    fetch_spec = ctx.fetch_spec if ctx.fetch_spec is not None else FetchSpec()
    spec = m.get("spec") if isinstance(m.get("spec"), dict) else {}
    fetch = spec.get("fetch")
    asked = fetch.get("allow_private") if isinstance(fetch, dict) else None
    if asked:
        shown = ", ".join(map(str, asked)) if isinstance(asked, list) else str(asked)
        ctx.out.warn("source_settings_ignored",
                     f"the release's spec.fetch.allow_private ({shown[:200]}) was not used: source re-checks "
                     f"use the auditor's settings (private networks allowed: "
                     f"{', '.join(fetch_spec.allow_private) or 'none'}; passkit audit --allow-private)")
    try:
        image_spec = ImageSpec.model_validate(spec.get("image") or {})
    except ValueError:
        image_spec = ImageSpec()
    # the release may name a huge pixel budget: decoding what its URLs serve stays within the default one
    image_spec = image_spec.model_copy(update={"max_pixels": min(image_spec.max_pixels, ImageSpec().max_pixels)})
    cols = ["key", "shard", "source_url", "landing_url", "license", "phash"]
    try:
        # the rows sorted by key, as positions: only the picked rows are read as Python objects
        keys = pq.read_table(ctx.root / INDEX, columns=["key"]).column("key")
        by_key = pc.array_sort_indices(keys, order="ascending", null_placement="at_end")
        del keys
        at = random.Random(ctx.seed).sample(range(len(by_key)), min(ctx.check_sources, len(by_key)))
        want = by_key.take(pa.array(at, pa.int64())).to_pylist()  # row numbers, in the order picked
        got: dict[int, dict[str, Any]] = {}
        start = 0
        for batch in open_parquet(ctx.root / INDEX).iter_batches(columns=cols):
            mine = [r for r in want if start <= r < start + batch.num_rows]
            if mine:
                rows = batch.take(pa.array([r - start for r in mine], pa.int64())).to_pylist()
                got.update(zip(mine, rows, strict=True))
            start += batch.num_rows
        picked = [got[r] for r in want]
    except Exception as e:
        ctx.add("index_unreadable", f"{INDEX} cannot be read for --check-sources: {e}")
        return
    fetcher = Fetcher(fetch_spec)

    def warn(code: str, msg: str, r: dict[str, Any]) -> None:
        ctx.out.warn(code, msg, r.get("shard"), r["key"])

    def one(r: dict[str, Any]) -> None:
        res = fetcher.fetch(r["source_url"]) if r.get("source_url") else None
        if res is None or not res.ok:
            why = "no source URL" if res is None else f"{res.reason}: {res.detail}"
            warn("source_unreachable", f"{r.get('source_url')}: {why}", r)
        else:
            try:
                ph = images.check(res.data, image_spec).info.phash
            except images.ImageReject as e:
                warn("source_changed", f"{r['source_url']} no longer decodes as an image ({e.reason})", r)
            else:
                d = hamming(ph, r["phash"]) if r.get("phash") else 64
                if d > SOURCE_PHASH_CHANGED:
                    warn("source_changed", f"{r['source_url']} now serves another image (pHash distance {d})", r)
        if not r.get("landing_url"):
            warn("source_license_unverified", "the sample has no landing page", r)
            return
        text, why = landing_page(fetcher, r["landing_url"])
        if text is None:
            warn("source_license_unverified", f"{r['landing_url']}: {why}", r)
            return
        found = page_licenses(text)
        if not found:
            warn("source_license_unverified", f"{r['landing_url']} links to no Creative Commons licence", r)
        elif r.get("license") not in found:
            ctx.add("source_license_changed",
                    f"{r['landing_url']} now names {', '.join(sorted(found))}, the sample says {r.get('license')}",
                    r.get("shard"), r["key"])

    for r in picked:
        one(r)

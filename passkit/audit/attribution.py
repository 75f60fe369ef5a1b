"""Licence and credit: each sample's licence against the registry and the policy, its TASL and
attribution sentence (the gate's own rules, licenses.missing_attribution and credit_sentence), and
attribution.csv against the samples."""

from __future__ import annotations

from typing import Any

from passkit import licenses
from passkit.audit.context import AuditContext, nonempty, short


def check_attribution(ctx: AuditContext, rel: str, key: str, meta: dict[str, Any]) -> None:
    add = ctx.add
    lid = meta.get("license")
    lic: licenses.License | None = None
    if not nonempty(lid):
        add("license_missing", "no licence id in its json", rel, key)
    else:
        try:
            lic = licenses.by_id(lid)
        except licenses.LicenseError as e:
            add("license_unknown", f"licence {lid!r}: {e.detail}", rel, key)
    if lic is not None:
        if ctx.policy is not None and not ctx.policy.allows(lic):
            add("license_not_allowed", f"{lic.id} is not allowed by policy {ctx.policy.name!r}", rel, key)
        problems = []
        url = meta.get("license_url")
        if nonempty(url):
            try:
                if licenses.from_url(url).id != lic.id:
                    problems.append(f"license_url {url!r} is not {lic.id}")
            except licenses.LicenseError:
                problems.append(f"license_url {url!r} is not a CC licence URL")
        name = meta.get("license_name")
        if name is not None and name != lic.name:
            problems.append(f"license_name {name!r} is not {lic.name!r}")
        if problems:
            add("license_inconsistent", "; ".join(problems), rel, key)

    empty = licenses.missing_attribution(meta, lic)
    if empty:
        add("attribution_incomplete", f"empty required field(s): {', '.join(empty)}", rel, key)

    if lic is not None:
        expected = licenses.credit_sentence(meta, lic)
        if meta.get("attribution") != expected:
            add(
                "attribution_mismatch",
                f"attribution {meta.get('attribution')!r} but the fields give {expected!r}",
                rel,
                key,
            )


def check_attribution_csv(ctx: AuditContext) -> None:
    """attribution.csv: the credit lines redistributors copy must be the samples' own. Read as the
    release writes it (passkit.release.escape): a cell's formula-guard quote is not part of its value."""
    import csv

    from passkit.release.escape import read_csv

    path = ctx.root / "attribution.csv"
    if ctx.index is None or not path.is_file():
        return
    try:
        rows = {r.get("key"): r for r in read_csv(path)}
    except (UnicodeDecodeError, csv.Error) as e:
        ctx.add("attribution_file", f"attribution.csv cannot be read: {e}")
        return
    missing = sorted(set(ctx.index) - set(rows))
    extra = sorted(k for k in set(rows) - set(ctx.index) if k)
    if missing:
        ctx.add("attribution_file", f"attribution.csv lacks {len(missing)} sample(s): {short(missing)}")
    if extra:
        ctx.add("attribution_file", f"attribution.csv credits {len(extra)} key(s) not in the release: {short(extra)}")
    for k, r in sorted(rows.items(), key=lambda kv: str(kv[0])):
        want = (ctx.index.get(k) or {}).get("attribution") if k in ctx.index else None
        if want is not None and "attribution" in r and r["attribution"] != want:
            ctx.add("attribution_file", f"attribution.csv credit line differs from the sample's: {r['attribution']!r}",
                    (ctx.index.get(k) or {}).get("shard"), k)

"""Licence and credit: each sample's licence against the registry and the policy, its TASL and
attribution sentence (the gate's own rules, licenses.missing_attribution and credit_sentence), and
attribution.csv against the samples."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from passkit import licenses
from passkit.audit.context import AuditContext, nonempty
from passkit.audit.index import smallest
from passkit.audit.keyhash import ABSENT, NONE, hashes, isin

if TYPE_CHECKING:
    from passkit.audit.shards import ShardScan


def check_attribution(sc: ShardScan, key: str, meta: dict[str, Any]) -> None:
    add = sc.add
    policy = sc.shared.policy
    lid = meta.get("license")
    lic: licenses.License | None = None
    if not nonempty(lid):
        add("license_missing", "no licence id in its json", key)
    else:
        try:
            lic = licenses.by_id(lid)
        except licenses.LicenseError as e:
            add("license_unknown", f"licence {lid!r}: {e.detail}", key)
    if lic is not None:
        if policy is not None and not policy.allows(lic):
            add("license_not_allowed", f"{lic.id} is not allowed by policy {policy.name!r}", key)
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
            add("license_inconsistent", "; ".join(problems), key)

    empty = licenses.missing_attribution(meta, lic)
    if empty:
        add("attribution_incomplete", f"empty required field(s): {', '.join(empty)}", key)

    if lic is not None:
        expected = licenses.credit_sentence(meta, lic)
        if meta.get("attribution") != expected:
            add(
                "attribution_mismatch",
                f"attribution {meta.get('attribution')!r} but the fields give {expected!r}",
                key,
            )


def check_attribution_csv(ctx: AuditContext) -> None:
    """attribution.csv: the credit lines redistributors copy must be the samples' own. Read as the
    release writes it (passkit.release.escape): a cell's formula-guard quote is not part of its value.

    Streamed twice, holding ~20 bytes per line: as a dict of its lines would, the last line of a key
    counts; keys and credit lines are compared through their salted hashes (keyhash), and only the
    lines a finding quotes are read back as text.
    """
    import csv

    ix = ctx.ix
    path = ctx.root / "attribution.csv"
    if ix is None or not path.is_file():
        return
    first = ix.first_rows()
    index_keys = np.unique(ix.sorted_hash[first[ix.order]])
    key_h: list[np.ndarray] = []
    attr_h: list[np.ndarray] = []
    extra_h: list[np.ndarray] = []
    extra_top: list[str] = []
    has_attr = False
    try:
        for keys, creds, has_attr in _csv_chunks(path):
            kh = hashes(keys, ctx.salt)
            key_h.append(kh)
            attr_h.append(hashes(creds, ctx.salt) if has_attr else np.full(len(keys), ABSENT, dtype=np.uint64))
            out = ~isin(kh, index_keys)
            if out.any():
                named = [k for k, o in zip(keys, out, strict=True) if o and k]
                extra_h.append(hashes(named, ctx.salt))
                extra_top = smallest([*extra_top, *named], 5)
    except (UnicodeDecodeError, csv.Error) as e:
        ctx.add("attribution_file", f"attribution.csv cannot be read: {e}")
        return
    kh_all = np.concatenate(key_h) if key_h else np.zeros(0, dtype=np.uint64)
    # the last line of each key: unique over the reversed lines finds each key's last one
    uniq, rev_first = np.unique(kh_all[::-1], return_index=True)
    last = len(kh_all) - 1 - rev_first  # line numbers, one per distinct key hash
    lacking = ~isin(ix.sorted_hash, uniq) & first[ix.order]
    n_missing = int(lacking.sum())
    if n_missing:
        rows = np.sort(ix.order[lacking])
        top = smallest((str(row["key"]) for _, row in ix.keys_at(rows)), 5)
        ctx.add("attribution_file", f"attribution.csv lacks {n_missing} sample(s): {_short_n(top, n_missing)}")
    n_extra = len(np.unique(np.concatenate(extra_h))) if extra_h else 0
    if n_extra:
        ctx.add("attribution_file", f"attribution.csv credits {n_extra} key(s) not in the release: "
                + _short_n(extra_top, n_extra))
    if not has_attr or not len(last):
        return
    # credit lines that differ from their sample's (the index's attribution, where it has one)
    line_attr = np.concatenate(attr_h)[last]
    pos = np.searchsorted(ix.sorted_hash, uniq)
    pos[pos == len(ix.sorted_hash)] = 0
    found = ix.sorted_hash[pos] == uniq
    # the key's row: the first of its equal hashes in file order (order is stable), skipping duplicates
    row = ix.order[pos]
    want = np.where(found, ix.attr_hash[row], ABSENT)
    differs = found & (want != ABSENT) & (want != NONE) & (want != line_attr)
    bad_lines = np.sort(last[differs])
    if not len(bad_lines):
        return
    line_row = dict(zip(last[differs].tolist(), row[differs].tolist(), strict=True))
    picked = []
    for n, (key, cred) in _csv_lines(path, bad_lines):
        picked.append((str(key), key, cred, line_row[n]))
    picked.sort(key=lambda t: t[0])
    for _, key, cred, r in picked:
        shard = ix.shard_names[int(ix.row_shard[r])]
        ctx.add("attribution_file", f"attribution.csv credit line differs from the sample's: {cred!r}", shard, key)


def _short_n(top: list[str], n: int) -> str:
    """`short` of n strings of which only the smallest five are at hand."""
    return ", ".join(top[:5]) + (f" and {n - 5} more" if n > 5 else "")


def _csv_chunks(path: Any, size: int = 65_536) -> Any:
    """(keys, credit lines, whether there is an attribution column) for each chunk of lines."""
    import csv

    from passkit.release.escape import csv_value

    def val(v: Any) -> Any:
        return csv_value(v) if isinstance(v, str) else v

    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        keys: list[Any] = []
        creds: list[Any] = []
        has_attr = False
        for r in reader:
            has_attr = "attribution" in r
            keys.append(val(r.get("key")))
            creds.append(val(r.get("attribution")))
            if len(keys) >= size:
                yield keys, creds, has_attr
                keys, creds = [], []
        if keys:
            yield keys, creds, has_attr


def _csv_lines(path: Any, lines: np.ndarray) -> Any:
    """(line number, (key, credit line)) of the given data lines (sorted numbers)."""
    n = 0
    want = iter(lines.tolist())
    nxt = next(want, None)
    for keys, creds, _ in _csv_chunks(path):
        for k, c in zip(keys, creds, strict=True):
            if n == nxt:
                yield n, (k, c)
                nxt = next(want, None)
            n += 1
        if nxt is None:
            return

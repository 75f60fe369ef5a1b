"""Licence and credit: each sample's licence against the registry and the policy, its TASL and
attribution sentence (the gate's own rules, licenses.missing_attribution and credit_sentence), and
attribution.csv against the samples."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from passkit import licenses
from passkit.audit.context import AuditContext, nonempty
from passkit.audit.index import concat_refs, refs, smallest
from passkit.audit.keyhash import ABSENT, NONE, h64, hashes, isin
from passkit.audit.spill import Buckets

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


CSV_CHUNK_LINES = 8192  # lines of attribution.csv held as Python strings at a time
# one line of attribution.csv on disk: salted key hash, line number, credit line hash (ABSENT: no such column)
CREDIT = np.dtype([("h", "<u8"), ("line", "<i8"), ("attr", "<u8")])
# a credit line that differs from its sample's: the line, and where the index row is
DIFFERS = np.dtype([("line", "<i8"), ("row", "<i8"), ("shard", "<i4")])


def check_attribution_csv(ctx: AuditContext) -> None:
    """attribution.csv: the credit lines redistributors copy must be the samples' own. Read as the
    release writes it (passkit.release.escape): a cell's formula-guard quote is not part of its value.

    As a dict of its lines would, the last line of a key counts. Keys and credit lines are compared
    through their salted hashes (keyhash), written to disk by range of key hash (spill.Buckets), and
    compared with the index's a range at a time; only the lines a finding quotes are read back as text.
    """
    import csv

    ix = ctx.ix
    path = ctx.root / "attribution.csv"
    if ix is None or not path.is_file():
        return
    assert ctx.scratch is not None
    lines = Buckets(ctx.scratch / "attribution", CREDIT, ix.records.bits)
    try:
        has_attr = _spill_csv(path, ctx.salt, lines)
    except (UnicodeDecodeError, csv.Error) as e:
        ctx.add("attribution_file", f"attribution.csv cannot be read: {e}")
        return
    unnamed = np.asarray([NONE, h64("", ctx.salt)], dtype=np.uint64)  # keys a finding cannot name
    lacking: list[np.ndarray] = []
    extra: list[np.ndarray] = []
    n_extra = 0
    differs: list[np.ndarray] = []
    for i, rows in enumerate(ix.ranges()):
        cred = lines.load(i)
        keys, last = _last_lines(cred)
        lacking.append(refs(rows[~isin(rows["h"], keys)]))
        out = cred[~isin(cred["h"], rows["h"]) & ~np.isin(cred["h"], unnamed)]
        n_extra += len(np.unique(out["h"]))
        extra.append(out["line"])
        if has_attr:
            differs.append(_differing(rows, keys, last))
    missing = concat_refs(lacking)
    if len(missing):
        top = smallest((str(row["key"]) for _, row in ix.keys_at(missing)), 5)
        ctx.add("attribution_file", f"attribution.csv lacks {len(missing)} sample(s): {_short_n(top, len(missing))}")
    if n_extra:
        top = smallest((key for _, (key, _) in _csv_lines(path, np.sort(np.concatenate(extra)))), 5)
        ctx.add("attribution_file", f"attribution.csv credits {n_extra} key(s) not in the release: "
                + _short_n(top, n_extra))
    bad = np.sort(np.concatenate(differs), order="line") if differs else np.zeros(0, dtype=DIFFERS)
    if not len(bad):
        return
    where = dict(zip(bad["line"].tolist(), bad["shard"].tolist(), strict=True))
    picked = [(str(key), key, cred, where[n]) for n, (key, cred) in _csv_lines(path, bad["line"])]
    picked.sort(key=lambda t: t[0])
    for _, key, cred, sid in picked:
        ctx.add("attribution_file", f"attribution.csv credit line differs from the sample's: {cred!r}",
                ix.shard_names[sid], key)


def _spill_csv(path: Path, salt: bytes, lines: Buckets) -> bool:
    """Every line's CREDIT record into `lines`; whether the file has an attribution column."""
    has_attr = False
    start = 0
    for keys, creds, has_attr in _csv_chunks(path):
        recs = np.zeros(len(keys), dtype=CREDIT)
        recs["h"] = hashes(keys, salt, len(keys))
        recs["line"] = np.arange(start, start + len(keys))
        recs["attr"] = hashes(creds, salt, len(creds)) if has_attr else ABSENT
        lines.add(recs)
        start += len(keys)
    lines.flush()
    return has_attr


def _last_lines(cred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct key hashes of a range's lines (sorted), and the last line of each (a CREDIT record)."""
    keys, rev_first = np.unique(cred["h"][::-1], return_index=True)
    return keys, cred[len(cred) - 1 - rev_first]


def _differing(rows: np.ndarray, keys: np.ndarray, last: np.ndarray) -> np.ndarray:
    """DIFFERS records of the lines whose credit is not their index row's attribution (where it has one)."""
    pos = np.searchsorted(rows["h"], keys)
    pos[pos == len(rows)] = 0
    found = rows["h"][pos] == keys if len(rows) else np.zeros(len(keys), dtype=bool)
    want = np.where(found, rows["attr"][pos] if len(rows) else ABSENT, ABSENT)
    bad = found & (want != ABSENT) & (want != NONE) & (want != last["attr"])
    out = np.zeros(int(bad.sum()), dtype=DIFFERS)
    out["line"], out["row"], out["shard"] = last["line"][bad], rows["row"][pos[bad]], rows["shard"][pos[bad]]
    return out


def _short_n(top: list[str], n: int) -> str:
    """`short` of n strings of which only the smallest five are at hand."""
    return ", ".join(top[:5]) + (f" and {n - 5} more" if n > 5 else "")


def _csv_chunks(path: Any) -> Any:
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
            if len(keys) >= CSV_CHUNK_LINES:
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

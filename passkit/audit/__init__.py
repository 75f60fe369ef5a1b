"""Verify a release against its manifest and its licence policy.

`audit(release_dir)` re-reads a release the way a sceptical third party would and returns an
`AuditReport`: a list of `Finding`s, each with a stable `code`, a human message and, where it
applies, the shard and the sample key it is about. A release is `ok` when there is no finding.

What is checked (codes in `CODES`):

- the manifest exists, is JSON and validates against manifests/manifest.schema.json;
- every listed shard exists with the size and sha256 the manifest records, and no other file lies in
  shards/; a shard whose sha256 differs is scanned to name the samples whose bytes changed;
- every shard is a safe, flat tar (passkit.shards.check_tar): nothing is ever extracted to disk;
- every shard has its index file (shards/<name>.idx, DALI's webdataset index, listed in
  manifest["files"]), equal to the one derived from the tar's headers; a release built before
  index files has none, which is a warning (`shard_index_absent`), not a failure;
- every sample has exactly a `.jpg` and a `.json`, the json parses and names the member key, the
  JPEG's sha256 equals the json's and index.parquet's, the JPEG header parses, its size matches the
  json, and it carries no EXIF/XMP/ICC/comment block;
- the licence is in the registry, allowed by the manifest's policy, and its URL and name agree
  with the id; TASL is complete and the attribution sentence equals the one recomputed from the
  fields, by the licence gate's own rules (licenses.missing_attribution, licenses.credit_sentence);
- keys are unique and sorted across the release; per-shard sample counts match the manifest;
  index.parquet has exactly the samples found, in the right shards, with the same attribution;
- keys listed in the manifest's removals are absent, and so is any image whose sha256 a removal
  records (the same photo re-added under another key); the other files in manifest["files"] match
  their sha256 and size, and croissant.json describes the same shards and tables (sha256, size);
- every JPEG decodes completely (not just its header);
- optional, `rescan=True`: the people detectors the manifest names run again on every image
  (`people_detected`); `check_sources=N`: N random samples' source URLs are fetched again and their
  landing pages searched for the licence (`source_license_changed`; unreachable or changed sources are
  warnings, which do not fail the audit: links rot, licences granted stay granted). Those fetches use
  the auditor's network settings (`fetch_spec`, default: no private networks), never the release's.

`write_html(report, path)` renders the report as a self-contained page (templates/audit.html.j2).

Layout: each check is a function over one `AuditContext` (context.py), in the module of what it
checks: manifest.py (manifest, release files, shard list), index.py, shards.py (shard bytes, tar
safety; the per-shard check and the merge), samples.py (members, json, JPEG), attribution.py
(licence, TASL, attribution.csv), rescan.py, sources.py; findings.py holds the codes and the
report, htmlreport.py the HTML page, parallel.py the executors, keyhash.py the key hashes and the keys
met in the shards, spill.py the per-sample records on disk.
`audit()` runs the checks in order, so the findings come out in the same order on every run.

Scale and memory: an audit's memory does not grow with the number of samples. Nothing holds the
release's rows, keys or credit lines, as Python objects or as per-sample arrays. index.parquet is
read once in batches of 2,048 rows: each shard's rows go to a small Arrow file in a scratch folder
(its slice), and each row's salted key and attribution hashes to disk by hash range (spill.py,
keyhash.py). Each shard is then checked on its own, one sample in memory at a time, against its
slice only. The checks that span shards compare hashes one range at a time: keys in two shards
(a key above every key met so far is new without a look at the disk, so a release in key order
never reads them back), index rows no shard holds, attribution.csv (read in chunks of 8,192
lines). Memory is held per shard and per batch instead; the manifest and a few facts per shard
(its entry, its slice files) are what grows, ~1 KB a shard. Measured peak RSS of the auditing
process (2 workers): ~190 MiB at 18,000 samples, ~200 MiB at 180,000 and at 1.8 million; a worker
~85-110 MiB. `--check-sources` still sorts the index's key column in memory to pick its samples.

Parallel: `workers=N` checks N shards at once in local processes, `executor="ray"` as Ray tasks.
Each shard's check returns its findings as operations in the order a single pass would make them;
the parent replays them in shard order, adding the cross-shard findings, so the report (order,
messages, stats, the per-code `limit`) is the same for any number of workers.

Sampled (`sample=f`, with `seed`): a seeded f of the shards (at least one) is read sample by sample;
every shard's size and sha256, the manifest, the index and attribution.csv are still checked in
full, and a shard whose sha256 differs is read anyway. `report.sample` records it, `report.complete`
is False, and the report and the CLI say the release is not fully verified.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from passkit import process
from passkit.audit import remote
from passkit.audit.attribution import check_attribution_csv
from passkit.audit.context import INDEX, MANIFEST, AuditContext
from passkit.audit.croissant import check_croissant
from passkit.audit.findings import CODES, AuditReport, AuditStats, Collector, Finding
from passkit.audit.htmlreport import render_html, write_html
from passkit.audit.index import INDEX_COMPARED, INDEX_REQUIRED, check_index, check_index_rows
from passkit.audit.manifest import (
    SHARD_PATH_RE,
    check_manifest,
    check_release_files,
    check_shard_indexes,
    check_shard_list,
    load_schema,
    schema_errors,
)
from passkit.audit.samples import KEY_RE, METADATA_BLOCKS
from passkit.audit.shards import check_shards, start_shard_checks
from passkit.audit.sources import (
    CC_LINK,
    LANDING_MAX_BYTES,
    SOURCE_PHASH_CHANGED,
    page_licenses,
    recheck_sources,
)
from passkit.release.manifest import schema_path
from passkit.remote import is_remote
from passkit.shards.reader import DEFAULT_MAX_MEMBER

__all__ = [
    "CC_LINK", "CODES", "INDEX", "INDEX_COMPARED", "INDEX_REQUIRED", "KEY_RE", "LANDING_MAX_BYTES", "MANIFEST",
    "METADATA_BLOCKS", "SHARD_PATH_RE", "SOURCE_PHASH_CHANGED", "AuditContext", "AuditReport", "AuditStats",
    "Finding", "audit", "load_schema", "page_licenses", "render_html", "schema_errors", "schema_path", "write_html",
]

# What runs once the manifest has been read, in this order: the workers start first (they come up while
# the rest is read), the index before the shards (samples are checked against it), the leftover index rows
# and attribution.csv after them (they need every key seen).
CHECKS: tuple[Callable[[AuditContext], None], ...] = (
    start_shard_checks,
    check_release_files,
    check_croissant,
    check_shard_list,
    check_shard_indexes,
    check_index,
    check_shards,
    check_index_rows,
    check_attribution_csv,
    recheck_sources,
)


def audit(
    release_dir: Path | str,
    *,
    limit: int | None = 1000,
    max_member: int = DEFAULT_MAX_MEMBER,
    rescan: bool = False,
    check_sources: int = 0,
    seed: int = 0,
    fetch_spec: Any = None,
    models_dir: Path | None = None,
    workers: int | None = 1,
    executor: str = "local",
    address: str | None = None,
    sample: float | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> AuditReport:
    """Check a release folder, or a release at a URL (s3://, gs://, hf://, http(s)://; see remote.py);
    `limit` caps stored findings per code (the rest are counted).

    `max_member`: tar members over this many bytes make a shard unsafe. `rescan`: rerun the people
    detectors. `check_sources`: re-check this many random sources (`seed` picks them; `fetch_spec`, a
    passkit.config.FetchSpec, is the auditor's: its defaults when None, never the manifest's, so a
    release cannot open private networks to the machine that audits it). `workers`: shards checked
    at once, in local processes, or as Ray tasks with `executor="ray"` (on `address`, or a local
    Ray; workers None: as many as it has CPUs). `sample`: the fraction of shards read sample by
    sample (`seed` picks them). `on_progress(done, total)` is called as each shard is merged.
    """
    if sample is not None and not 0 < sample <= 1:
        raise ValueError(f"sample must be in (0, 1], not {sample}")
    if executor not in ("local", "ray"):
        raise ValueError(f"executor must be 'local' or 'ray', not {executor!r}")
    t0 = time.perf_counter()
    process.skip_pandas_probe()  # pyarrow would import pandas (a second) only to learn nothing here is a DataFrame
    url = str(release_dir).rstrip("/") if is_remote(str(release_dir)) else None
    root = Path(release_dir) if url is None else Path()
    report = AuditReport(url or root)
    ctx = AuditContext(root, report, Collector(report, limit), max_member=max_member,
                       check_sources=check_sources, seed=seed, fetch_spec=fetch_spec, rescan=rescan,
                       models_dir=models_dir, workers=workers if executor == "ray" else (workers or 1),
                       executor=executor, address=address, sample=sample, on_progress=on_progress, remote=url)
    ctx.scratch = Path(tempfile.mkdtemp(prefix="passkit-audit-"))
    try:
        if url is not None:
            ctx.root = remote.stage_manifest(url, ctx.scratch / "release")
        check_manifest(ctx)
        if ctx.m is not None:  # nothing else can be checked without it
            if url is not None:
                remote.stage_files(url, ctx.root, ctx.m)
                ctx.shard_listing = remote.shard_listing(url)
            for check in CHECKS:
                check(ctx)
    finally:
        if ctx.runner is not None:
            ctx.runner.close()
        shutil.rmtree(ctx.scratch, ignore_errors=True)
        report.stats.seconds = round(time.perf_counter() - t0, 3)
    if sample is not None:
        report.sample = {"fraction": sample, "seed": seed, "shards": report.stats.shards,
                         "shards_checked": report.stats.shards_read, "samples_checked": report.stats.samples}
    return report

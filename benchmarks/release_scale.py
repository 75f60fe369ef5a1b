"""Time and measure the release step (`passkit build` over finished units, then `passkit audit`) at scale.

The release step reads every ledger row of a build. Its cost only shows at tens of millions of
candidates, and a real crawl of that size takes days, so this synthesises the work folder a finished
url-list build would have left: the url list, and per work unit the staging tar, ledger and people
sidecar, with the pipeline's own functions where a row's content is decided (licenses.gate,
ledger.ledger_row, Unit.fingerprint, Sample.meta, the image check's encoder and hashes, write_tar),
so `passkit build` finds every unit done (same fingerprint) and goes straight to the release; the
licence-refused rows, nine in ten, are built by column for speed, and tests/release/
test_release_memory.py proves them equal to ledger_row's. A build that downloaded anything is an
error: it would mean the synthesis drifted from the pipeline.

The data is shaped like a large CC crawl: `--keep-fraction` of the candidates kept (small JPEGs
with distinct bytes and pHashes far apart, except one kept sample in ten, which is a near copy of an
earlier one: the release's dedup has real work), the others refused at the licence gate (NC, ND, SA,
unknown or missing licence) without staging; titles of about 40 characters, creators of about 15,
URLs of about 80, K/20 creators with Zipf-like counts.

Each build and audit runs in its own process tree; a poller reads /proc every 0.2 s and reports the
largest single-process peak (VmHWM, and the root's ru_maxrss) and the largest summed RSS of the tree.

    python benchmarks/release_scale.py [--sizes 200000 2000000] [--keep-fraction 0.1] [--runs 1]
                                       [--work-dir $TMPDIR/passkit-release-scale] [--synth-only]

The last lines: the largest size against the smallest (peak RSS and build time per million
candidates, as ratios), and `release peak RSS MiB at 20M candidates: X (200k: Y)`, where a peak is
the largest single process of the build and the audit.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python benchmarks/release_scale.py` from a checkout
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

LIST_NAME = "urls.parquet"
SPEC_NAME = "spec.yaml"
MARKER = "synth.json"  # the parameters a synthesised folder was made with; a match is reused
LIST_SCHEMA = pa.schema([(c, pa.string()) for c in
                         ("id", "url", "license_url", "title", "creator", "creator_url", "landing_url")])
LIST_ROW_GROUP = 65_536

KEPT_LICENSES = (  # (licence URL, share of the kept)
    ("https://creativecommons.org/licenses/by/2.0/", 0.80),
    ("https://creativecommons.org/licenses/by/4.0/", 0.15),
    ("https://creativecommons.org/publicdomain/zero/1.0/", 0.05),
)
REFUSED_LICENSES = (  # refused by the by-or-public-domain policy; None: no licence given
    ("https://creativecommons.org/licenses/by-nc/2.0/", 0.35),
    ("https://creativecommons.org/licenses/by-nc-sa/2.0/", 0.25),
    ("https://creativecommons.org/licenses/by-nc-nd/2.0/", 0.15),
    ("https://creativecommons.org/licenses/by-sa/2.0/", 0.10),
    ("https://creativecommons.org/licenses/by-nd/4.0/", 0.05),
    ("https://www.example-photos.org/help/all-rights-reserved", 0.05),
    (None, 0.05),
)
ADJ = ("misty", "golden", "quiet", "frozen", "sunlit", "ancient", "windy", "rusty", "hidden", "autumn",
       "northern", "narrow", "empty", "distant", "painted", "stormy")
NOUN = ("harbour", "lighthouse", "meadow", "bridge", "valley", "cathedral", "orchard", "canal", "glacier",
        "market hall", "railway", "waterfall", "vineyard", "castle", "dune", "library")
PLACE = ("Lisbon", "Kyoto", "Valparaiso", "Tromso", "Marrakesh", "Hobart", "Tbilisi", "Quebec", "Bergen",
         "Cusco", "Ljubljana", "Galway")
FIRST = ("Anna", "Bruno", "Chen", "Dara", "Emil", "Fatima", "Goran", "Hana", "Ines", "Jonas", "Kofi",
         "Lena", "Mateo", "Nadia", "Oskar", "Priya")
LAST = ("Berg", "Costa", "Dubois", "Eriksen", "Fischer", "Garcia", "Haddad", "Ito", "Jensen", "Kowalski",
        "Lindqvist", "Moreau", "Novak", "Okafor", "Petrov", "Quinn")
ZIPF_EXPONENT = 1.1
NEAR_COPY_EVERY = 10  # kept sample j is a near copy of an earlier kept one when j % 10 == 9
NEAR_COPY_REACH = 1000
FIELD = 16  # side of the random colour field a picture is smoothed from
NOISE_POOL, NOISE_SHIFTS = 64, 16  # noise arrays a worker holds, and offsets in each along x and y
NOISE_LAYERS = NOISE_POOL * NOISE_SHIFTS**2  # > NEAR_COPY_EVERY * NEAR_COPY_REACH  # ... of one up to this many near-copy periods back (often in another unit)


@dataclass(frozen=True)
class Plan:
    """Everything the synthesised folder depends on; equal plans give identical folders."""

    candidates: int
    kept: int
    unit_size: int = 1024
    seed: int = 0
    workers: int = 2  # the spec's work.workers (the build's idle worker pool is part of its tree)

    @property
    def units(self) -> int:
        return -(-self.candidates // self.unit_size)

    @property
    def creators(self) -> int:
        return max(1, self.kept // 20)


def spec_data(root: Path, plan: Plan) -> dict[str, Any]:
    """The spec a real build of the list would use; people filter off, so no weights are needed."""
    return {
        "name": "scale", "version": "1.0.0", "description": "synthetic url-list build (benchmarks/release_scale.py)",
        "source": {"kind": "urllist", "paths": [str(root / LIST_NAME)], "provider": "example-photos"},
        "license": {"policy": "by-or-public-domain"},
        "people": {"enabled": False},
        "work": {"dir": str(root / "work"), "unit_size": plan.unit_size, "workers": plan.workers},
        "release": {"dir": str(root / "releases")},
    }


# ------------------------------------------------------------------ one work unit (in a pool worker)

_CTX: dict[str, Any] = {}


def _init(root: str, plan: Plan) -> None:
    """Per worker process: the spec, policy and lookup tables every unit uses."""
    from passkit import images, licenses
    from passkit.config import parse_spec
    from passkit.pipeline import stage_settings
    from passkit.records import Candidate

    spec = parse_spec(spec_data(Path(root), plan))
    settings = stage_settings(spec)
    policy = spec.license.build()
    refused = {}
    for url, _ in REFUSED_LICENSES:  # a refused licence's (reason, detail) depends on the licence only
        g = licenses.gate(Candidate("urllist", "x", "https://x.org/x.jpg", license_url=url, title="t",
                                    creator="c", landing_url="https://x.org/"), policy)
        assert isinstance(g, tuple), f"{url} is not refused by the policy"
        refused[url] = g
    weights = 1.0 / np.arange(1, plan.creators + 1) ** ZIPF_EXPONENT
    # Durability is the pipeline's concern, not this scratch data's: write_tar fsyncs each tar,
    # which on a shared disk cost more than the rest of a unit.
    os.fsync = lambda fd: None
    noise = np.random.default_rng([plan.seed, 1 << 20]).integers(
        -6, 7, size=(NOISE_POOL, 96 + NOISE_SHIFTS, 96 + NOISE_SHIFTS, 3), dtype=np.int16)
    _CTX.update(
        plan=plan, root=Path(root), spec=spec, settings=settings, policy=policy, refused=refused,
        digest=hashlib.sha256(settings.encode()).hexdigest().encode(),
        query=spec.source.paths[0],
        modification=images.modification_note(spec.image), creator_cdf=np.cumsum(weights) / weights.sum(), noise=noise,
    )


def _choose(table: tuple[tuple[str | None, float], ...], u: float) -> str | None:
    acc = 0.0
    for value, share in table:
        acc += share
        if u < acc:
            return value
    return table[-1][0]


def is_kept(plan: Plan, g: int) -> bool:
    """Exactly plan.kept of the candidates, evenly spread: candidate g is the ordinal (g*K)//N-th kept."""
    return ((g + 1) * plan.kept) // plan.candidates > (g * plan.kept) // plan.candidates


def image_base(j: int) -> int:
    """The kept ordinal whose picture kept sample j shows: itself, or for a near copy an earlier
    sample that is not a near copy itself (j - 1 - 10m has j's remainder minus one)."""
    if j % NEAR_COPY_EVERY != NEAR_COPY_EVERY - 1:
        return j
    span = min(NEAR_COPY_REACH, (j - 1) // NEAR_COPY_EVERY + 1)
    m = int.from_bytes(hashlib.blake2b(j.to_bytes(8, "little"), digest_size=4).digest(), "little") % span
    return j - 1 - NEAR_COPY_EVERY * m


def make_image(seed: int, j: int) -> Any:
    """Kept sample j's checked image, as images.check would describe it (RGB path, same encoder).

    The picture is a 16x16 colour field drawn from (seed, base), smoothed up to 64..96 px, plus a
    layer of fine noise: distinct fields give pHashes as far apart as random 64-bit ones (a coarser
    field made hashes within 8 bits a thousand times likelier), a near copy (same field, brighter,
    another noise layer) the same pHash or one a few bits off. The noise layer is j's own among the
    NOISE_LAYERS (no two near copies of one base are that many samples apart), so every sample has
    its own bytes."""
    import cv2
    import simplejpeg

    from passkit.filters.quality import flat_fraction
    from passkit.images import phash, thumbnail
    from passkit.records import ImageInfo

    base = image_base(j)
    d = hashlib.shake_128(f"{seed}:{base}".encode()).digest(2 + FIELD * FIELD * 3)
    w, h = 64 + d[0] % 33, 64 + d[1] % 33
    field = np.frombuffer(d[2:], np.uint8).reshape(FIELD, FIELD, 3)
    img = cv2.resize(field, (w, h), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    layer = j % NOISE_LAYERS
    dy, dx = (layer // NOISE_SHIFTS) % NOISE_SHIFTS, layer % NOISE_SHIFTS
    img += _CTX["noise"][layer // NOISE_SHIFTS**2, dy : dy + h, dx : dx + w]
    if base != j:
        img += 5
    rgb = np.ascontiguousarray(img.clip(0, 255).astype(np.uint8))
    jpeg = simplejpeg.encode_jpeg(rgb, quality=_CTX["spec"].image.jpeg_quality, colorspace="RGB",
                                  colorsubsampling="420")
    thumb = thumbnail(rgb, 64)
    flat, colour = flat_fraction(thumb)
    sha = hashlib.sha256(jpeg).hexdigest()
    # source_sha256: as if the source served this very JPEG (nothing downstream compares it to bytes)
    return ImageInfo(jpeg=jpeg, sha256=sha, source_sha256=sha, phash=phash(thumb), width=w, height=h,
                     orig_width=w, orig_height=h, orig_format="JPEG", source_bytes=len(jpeg),
                     flat_fraction=flat, flat_colour=colour)


def list_columns(plan: Plan, lo: int, hi: int, lic_u: np.ndarray, creators: np.ndarray,
                 words: np.ndarray) -> dict[str, list[str | None]]:
    """Candidates lo..hi-1 of the url list, by column (the columns the urllist source reads)."""
    ids = [str(40_000_000_000 + g * 7) for g in range(lo, hi)]
    first = [FIRST[c % len(FIRST)] for c in creators.tolist()]
    last = [f"{LAST[(c // len(FIRST)) % len(LAST)]}{c // 256 or ''}" for c in creators.tolist()]
    people = [f"u{c:08d}" for c in creators.tolist()]
    lic = [_choose(KEPT_LICENSES if is_kept(plan, g) else REFUSED_LICENSES, u)
           for g, u in zip(range(lo, hi), lic_u.tolist(), strict=True)]
    return {
        "id": ids,
        "url": [f"https://images.example-photos.org/originals/{g % 4096:03x}/{sid}_"
                f"{(g * 2654435761 + plan.seed) & 0xFFFFFFFFFF:010x}_large.jpg" for g, sid in zip(range(lo, hi), ids, strict=True)],
        "license_url": lic,
        "title": [f"{ADJ[a].capitalize()} {NOUN[n]} near {PLACE[p]}, view {g % 9973}"
                  for g, (a, n, p) in zip(range(lo, hi), words.tolist(), strict=True)],
        "creator": [f"{f} {la}" for f, la in zip(first, last, strict=True)],
        "creator_url": [f"https://www.example-photos.org/people/{p}/" for p in people],
        "landing_url": [f"https://www.example-photos.org/photos/{p}/{sid}/" for p, sid in zip(people, ids, strict=True)],
    }


def unit_ledger(u: int) -> tuple[pa.Table, list[tuple[str, bytes]], dict[str, list[str | None]], dict[str, int]]:
    """Unit u as UnitRunner.run would leave it: its ledger (with the metadata write_ledger writes),
    staging tar members (sorted by key), its rows of the url list, and counts.

    Licence-refused rows, nine in ten, are built by column: what ledger_row gives a candidate the
    gate refused (tests/release/test_release_memory.py compares the two); kept rows go through the
    pipeline's own functions."""
    from passkit import ledger, licenses
    from passkit.ledger import DETECTORS_META, FINGERPRINT_META, LEDGER_SCHEMA, SETTINGS_META
    from passkit.pipeline import Unit
    from passkit.records import Candidate, Decision, Sample, Status, make_key

    plan: Plan = _CTX["plan"]
    lo, hi = u * plan.unit_size, min(plan.candidates, (u + 1) * plan.unit_size)
    n = hi - lo
    rng = np.random.default_rng([plan.seed, u])
    lic_u = rng.random(n)
    creators = np.searchsorted(_CTX["creator_cdf"], rng.random(n)).clip(0, plan.creators - 1)
    words = np.stack([rng.integers(0, len(ADJ), n), rng.integers(0, len(NOUN), n),
                      rng.integers(0, len(PLACE), n)], axis=1)
    lst = list_columns(plan, lo, hi, lic_u, creators, words)
    query, provider = _CTX["query"], _CTX["spec"].source.provider
    cands = [Candidate("urllist", sid, url, license_url=lic, title=t, creator=cr, creator_url=cu, landing_url=lu,
                       provider=provider, query=query, extra={"line": g + 1})
             for g, sid, url, lic, t, cr, cu, lu in zip(range(lo, hi), *(lst[c] for c in LIST_SCHEMA.names),
                                                        strict=True)]
    keys = [make_key("urllist", sid) for sid in lst["id"]]
    refused = [_CTX["refused"].get(lic, (None, None)) for lic in lst["license_url"]]  # kept rows: set below
    cols: dict[str, list[Any]] = {name: [None] * n for name in LEDGER_SCHEMA.names}
    cols.update(
        unit=[u] * n, seq=list(range(n)), key=keys, source=["urllist"] * n, source_id=lst["id"], query=[query] * n,
        url=lst["url"], status=[str(Status.REJECTED)] * n, stage=["license"] * n, reason=[r[0] for r in refused],
        detail=[r[1] for r in refused], transient=[False] * n, scores=[[]] * n, title=lst["title"],
        creator=lst["creator"], creator_url=lst["creator_url"], landing_url=lst["landing_url"], provider=[provider] * n,
        license_raw=lst["license_url"], license_url=lst["license_url"],
    )
    members: list[tuple[str, list[tuple[str, bytes]]]] = []
    near = 0
    for i, g in enumerate(range(lo, hi)):
        if not is_kept(plan, g):
            continue
        c = cands[i]
        a = licenses.gate(c, _CTX["policy"])
        assert not isinstance(a, tuple), a
        j = (g * plan.kept) // plan.candidates
        near += image_base(j) != j
        info = make_image(plan.seed, j)
        s = Sample(keys[i], c, a, info, _CTX["modification"], {})
        meta = json.dumps(s.meta(), sort_keys=True, ensure_ascii=False).encode()
        members.append((keys[i], [(f"{keys[i]}.jpg", info.jpeg), (f"{keys[i]}.json", meta)]))
        row = ledger.ledger_row(u, i, c, Decision(Status.KEPT, None, None, None, {}), a, info, False, {})
        for name, v in row.items():
            cols[name][i] = v
    table = pa.Table.from_pydict(cols, schema=LEDGER_SCHEMA).replace_schema_metadata({
        FINGERPRINT_META: Unit(u, cands).fingerprint(_CTX["settings"]).encode(),
        SETTINGS_META: _CTX["digest"],
        DETECTORS_META: json.dumps({"detectors": [], "skipped": []}, sort_keys=True).encode(),
    })
    tar = [m for _, mem in sorted(members, key=lambda km: km[0]) for m in mem]
    return table, tar, lst, {"candidates": n, "kept": len(members), "near_copies": near}


def write_unit(u: int) -> tuple[pa.RecordBatch, dict[str, int]]:
    """Write unit u's staging tar, people sidecar and ledger (last, as the pipeline does); returns
    its rows of the url list (the parent writes the list in unit order) and counts."""
    from passkit import ledger
    from passkit.atomic import atomic_path
    from passkit.shards import write_tar

    table, tar, lst, counts = unit_ledger(u)
    tar_path, ledger_path = ledger.unit_paths(_CTX["root"] / "work" / "units", u)
    write_tar(tar_path, tar)
    ledger.write_people_sidecar(ledger_path, {}, [])
    with atomic_path(ledger_path) as tmp:
        pq.write_table(table, tmp)
    return pa.RecordBatch.from_pydict(lst, schema=LIST_SCHEMA), counts


# ------------------------------------------------------------------ the whole folder


def synthesise(root: Path, plan: Plan, processes: int | None = None, log: Any = None) -> dict[str, Any]:
    """Write (or reuse) `root`: url list, spec and finished work units for `plan`. Returns the marker:
    the plan, counts and the seconds the synthesis took."""
    root = Path(root)
    marker = root / MARKER
    if marker.exists():
        old = json.loads(marker.read_text())
        if old.get("plan") == asdict(plan):
            return old
    if root.exists():
        shutil.rmtree(root)
    (root / "work" / "units").mkdir(parents=True)
    t0 = time.perf_counter()
    processes = processes or min(os.cpu_count() or 1, 8)
    counts = {"candidates": 0, "kept": 0, "near_copies": 0}
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    ctx = multiprocessing.get_context("fork")
    with pq.ParquetWriter(root / LIST_NAME, LIST_SCHEMA) as writer, \
            ctx.Pool(processes, initializer=_init, initargs=(str(root), plan)) as pool:
        for done, (batch, c) in enumerate(pool.imap(write_unit, range(plan.units), chunksize=4), 1):
            pending.append(batch)
            pending_rows += batch.num_rows
            if pending_rows >= LIST_ROW_GROUP:
                writer.write_table(pa.Table.from_batches(pending), row_group_size=LIST_ROW_GROUP)
                pending, pending_rows = [], 0
            for k, v in c.items():
                counts[k] += v
            if log and (done % max(1, plan.units // 20) == 0 or done == plan.units):
                log(f"  synthesised {done}/{plan.units} units ({counts['candidates']:,} candidates) "
                    f"in {time.perf_counter() - t0:.0f} s")
        if pending:
            writer.write_table(pa.Table.from_batches(pending), row_group_size=LIST_ROW_GROUP)
    (root / SPEC_NAME).write_text(json.dumps(spec_data(root, plan), indent=2) + "\n")  # JSON is YAML
    out = {"plan": asdict(plan), "counts": counts, "seconds": round(time.perf_counter() - t0, 2)}
    marker.write_text(json.dumps(out, indent=2) + "\n")
    return out


# ------------------------------------------------------------------ measuring a process tree


def _tree(root_pid: int) -> list[int]:
    """root_pid and its descendants, from /proc/*/stat."""
    parent: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            parent[int(d)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, todo = [], [root_pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(c for c, pp in parent.items() if pp == p)
    return out


def _status_kib(pid: int) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) in KiB, or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            text = f.read()
    except OSError:
        return None
    vals = {}
    for line in text.splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            k, v = line.split(":", 1)
            vals[k] = int(v.split()[0])
    return vals.get("VmRSS", 0), vals.get("VmHWM", 0)


@dataclass
class Measured:
    wall: float
    cpu: float  # user + sys of the process and the descendants it reaped
    peak_single_mib: float  # largest VmHWM of any process in the tree (and the root's ru_maxrss)
    peak_tree_mib: float  # largest sum of VmRSS over the tree at one poll
    processes: int  # distinct processes seen in the tree
    returncode: int


# Linux carries a process's peak RSS (ru_maxrss) across fork and exec: a command started from a big
# process (a test session) reports that process's peak as its own. So the command runs under a small
# launcher, whose children start clean, and the launcher writes the command's own ru_maxrss and CPU
# time (its reaped descendants included) to a file.
_LAUNCHER = (
    "import os, subprocess, sys\n"
    "p = subprocess.Popen(sys.argv[2:])\n"
    "_, status, ru = os.wait4(p.pid, 0)\n"
    "open(sys.argv[1], 'w').write(f'{ru.ru_maxrss} {ru.ru_utime + ru.ru_stime}')\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


def measure(cmd: list[str], env: dict[str, str] | None = None, stdout: Any = None, interval: float = 0.2) -> Measured:
    """Run `cmd`, polling its process tree's memory every `interval` seconds until it ends."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="passkit-measure-") as d:
        report = Path(d) / "rusage"
        proc = subprocess.Popen([sys.executable, "-c", _LAUNCHER, str(report), *cmd], env=env, stdout=stdout,
                                stderr=subprocess.STDOUT)
        hwm: dict[int, int] = {}
        tree_max = 0
        stop = threading.Event()

        def poll() -> None:
            nonlocal tree_max
            while not stop.is_set():
                total = 0
                for pid in _tree(proc.pid)[1:]:  # the launcher itself is not measured
                    s = _status_kib(pid)
                    if s is not None:
                        total += s[0]
                        hwm[pid] = max(hwm.get(pid, 0), s[1])
                tree_max = max(tree_max, total)
                stop.wait(interval)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        proc.wait()
        wall = time.perf_counter() - t0
        stop.set()
        poller.join()
        maxrss, cpu = (float(x) for x in report.read_text().split()) if report.exists() else (0.0, 0.0)
    single = max([maxrss, *hwm.values()])
    return Measured(wall, cpu, single / 1024, tree_max / 1024, len(hwm), proc.returncode)


def passkit_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "passkit.cli", *args]


def passkit_env() -> dict[str, str]:
    """This checkout's passkit first, whatever is installed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


def release_dir(root: Path) -> Path:
    return root / "releases" / "scale-1.0.0"


def build_once(root: Path, log_path: Path) -> Measured:
    """`passkit build` of a synthesised folder (every unit resumed, so only the release step runs);
    raises if the build failed or fetched anything."""
    shutil.rmtree(release_dir(root), ignore_errors=True)
    with log_path.open("w") as log:
        m = measure(passkit_cmd("build", str(root / SPEC_NAME)), env=passkit_env(), stdout=log)
    if m.returncode != 0:
        raise RuntimeError(f"passkit build failed ({m.returncode}); see {log_path}:\n{log_path.read_text()[-3000:]}")
    stats = json.loads((root / "work" / "stats.json").read_text())
    if stats["fetched"] or stats["units_resumed"] != stats["units"]:
        raise RuntimeError(f"the build crawled: {stats['units'] - stats['units_resumed']} units not resumed, "
                           f"{stats['fetched']} fetched; the synthesis no longer matches the pipeline")
    return m


def audit_once(root: Path, log_path: Path) -> Measured:
    extra = ["--workers", "2"] if "--workers" in _audit_help() else []
    with log_path.open("w") as log:
        return measure(passkit_cmd("audit", str(release_dir(root)), *extra), env=passkit_env(), stdout=log)


def _audit_help() -> str:
    return subprocess.run(passkit_cmd("audit", "--help"), env=passkit_env(), capture_output=True, text=True).stdout


# ------------------------------------------------------------------ the benchmark


def _mib(x: float) -> str:
    return f"{x:,.0f}"


def _label(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k" if n % 1000 == 0 else str(n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[200_000, 2_000_000], help="candidates per build")
    ap.add_argument("--keep-fraction", type=float, default=0.1)
    ap.add_argument("--unit-size", type=int, default=1024)
    ap.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "passkit-release-scale")
    ap.add_argument("--runs", type=int, default=1, help="builds and audits per size; the table shows medians")
    ap.add_argument("--processes", type=int, default=None, help="synthesis processes (default: cores, at most 8)")
    ap.add_argument("--synth-only", action="store_true", help="synthesise (and time it), measure nothing")
    ap.add_argument("--no-audit", action="store_true")
    args = ap.parse_args()

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    peaks: dict[int, float] = {}
    per_m: dict[int, float] = {}
    for n in args.sizes:
        plan = Plan(candidates=n, kept=round(n * args.keep_fraction), unit_size=args.unit_size)
        root = args.work_dir / f"n{n}"
        log(f"{_label(n)}: synthesising {n:,} candidates ({plan.kept:,} kept, {plan.units:,} units) in {root}")
        syn = synthesise(root, plan, args.processes, log)
        log(f"{_label(n)}: synthesis {syn['seconds']:.1f} s (as recorded in {root / MARKER}), counts {syn['counts']}")
        if args.synth_only:
            print(f"{_label(n)}: synthesis {syn['seconds']:.1f} s, "
                  f"{du_mib(root):,.0f} MiB on disk, counts {syn['counts']}")
            continue
        builds, audits = [], []
        for r in range(args.runs):
            log(f"{_label(n)}: passkit build, run {r + 1}/{args.runs}")
            builds.append(build_once(root, root / "build.log"))
            log(f"  {builds[-1]}")
            if not args.no_audit:
                log(f"{_label(n)}: passkit audit, run {r + 1}/{args.runs}")
                audits.append(audit_once(root, root / "audit.log"))
                log(f"  {audits[-1]}")
        man = json.loads((release_dir(root) / "manifest.json").read_text())
        med = statistics.median
        print(f"\n{_label(n)} candidates ({n:,}; {man['counts']['kept']:,} released; "
              f"{plan.units:,} units; synthesis {syn['seconds']:.0f} s; medians of {args.runs})")
        print(f"  rejections by reason: {json.dumps(man['counts']['by_reason'], sort_keys=True)}")
        print(f"  {'step':<14}{'wall s':>9}{'CPU s':>9}{'peak RSS MiB':>14}{'tree RSS MiB':>14}{'s / M cand':>12}")
        for name, ms in (("passkit build", builds), ("passkit audit", audits)):
            if not ms:
                continue
            wall = med(m.wall for m in ms)
            print(f"  {name:<14}{wall:>9.1f}{med(m.cpu for m in ms):>9.1f}"
                  f"{_mib(med(m.peak_single_mib for m in ms)):>14}{_mib(med(m.peak_tree_mib for m in ms)):>14}"
                  f"{wall / (n / 1e6):>12.1f}")
            if ms[0].returncode and name == "passkit audit":
                print(f"  (the audit exited {ms[0].returncode}; see {root / 'audit.log'})")
        # the largest single passkit process of the build and the audit: the memory bound
        peaks[n] = max(med(m.peak_single_mib for m in ms) for ms in (builds, audits) if ms)
        per_m[n] = med(m.wall for m in builds) / (n / 1e6)
    if peaks:
        big, small = max(peaks), min(peaks)
        if big != small:
            print(f"\n{_label(big)} against {_label(small)}: peak RSS {peaks[big] / peaks[small]:.2f}x (goal <= 1.3x), "
                  f"build time per million candidates {per_m[big] / per_m[small]:.2f}x (goal <= 1.5x)")
        at = "20M candidates" if big == 20_000_000 else f"{_label(big)} candidates (largest measured; 20M not run)"
        print(f"release peak RSS MiB at {at}: {peaks[big]:,.0f} ({_label(small)}: {peaks[small]:,.0f})")


def du_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


if __name__ == "__main__":
    main()

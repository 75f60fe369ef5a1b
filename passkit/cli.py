"""The `passkit` command. Thin: parse, call the library, print."""

from __future__ import annotations

import argparse
import errno
import json
import os
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

console = Console(stderr=True)
out = Console()


# WorkSpec.workers' default and upper bound, for _early_pool, which runs before passkit.config is
# imported (tests/test_cli.py keeps them equal to the spec's); the flag itself is checked by the spec's field.
DEFAULT_WORKERS = 2
MAX_WORKERS = 256


DEFAULT_QUERY_ROWS = 1000  # rows `passkit query` shows as a table unless --max-rows says otherwise

def _error(message: object) -> int:
    """`error: <message>` on stderr, on one line; returns the exit code 2. The message is printed as
    text, never as rich markup: it may quote a spec, a file name, a release or a source's metadata,
    where "[/]" would crash the print and "[link=...]" or "[blink]" would act on the terminal."""
    console.print(Text.assemble(("error:", "red"), " ", str(message)), soft_wrap=True, highlight=False)
    return 2


def _early_pool(args: argparse.Namespace) -> Any:
    """The worker pool, started before the spec is validated, or None.

    Its fork server imports the pipeline (half a second) while this process imports pydantic and
    the rest; starting it only after validation kept the workers a fifth of a second later. The
    worker count comes from --workers or a plain read of the YAML; _build corrects a wrong guess
    (a spec that fails validation, Ray, a single worker) and run_local a wrong size."""
    if args.executor == "ray":
        return None
    workers = args.workers
    if workers is None:
        try:
            import yaml

            work = (yaml.safe_load(Path(args.spec).read_text(encoding="utf-8")) or {}).get("work") or {}
            if work.get("executor", "local") != "local":
                return None
            workers = work.get("workers", DEFAULT_WORKERS)
        except Exception:  # unreadable or odd: load_spec says what is wrong
            return None
    if not isinstance(workers, int) or isinstance(workers, bool) or not 1 < workers <= MAX_WORKERS:
        return None
    from passkit.executors.local import WorkerPool

    return WorkerPool(workers)


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def _disk_full(e: OSError) -> bool:
    # some writers (pyarrow) raise an OSError that carries the message but no errno
    return e.errno in _DISK_FULL or any(os.strerror(n) in str(e) for n in _DISK_FULL)


def _cmd_build(args: argparse.Namespace) -> int:
    pool = _early_pool(args)
    try:
        return _build(args, pool)
    except OSError as e:
        if not _disk_full(e):
            raise
        where = f" writing {e.filename}" if e.filename else ""
        return _error(f"the disk is full ({e.strerror or e}{where}); free space on it, or set work.dir and "
                     "release.dir in the spec to a disk with room, and rerun the same command: finished work "
                     "units are kept")
    finally:
        if pool is not None:
            pool.shutdown()


def _build(args: argparse.Namespace, pool: Any) -> int:
    from passkit.config import InputError, SpecError, WorkSpec, check_field, load_spec

    if args.workers is not None:  # checked by the spec's own field: the two cannot disagree
        try:
            check_field(WorkSpec, "workers", args.workers, "--workers")
        except InputError as e:
            return _error(str(e))
    try:
        spec = load_spec(args.spec)
    except SpecError as e:
        return _error(e)
    workers = args.workers if args.workers is not None else spec.work.workers
    local = (args.executor or spec.work.executor) == "local"
    if pool is not None and not (local and workers > 1):
        pool.close()  # a wrong guess: nothing ran on it (_cmd_build stops its fork server)
        pool = None
    if pool is None and local and workers > 1:
        from passkit.executors.local import WorkerPool

        pool = WorkerPool(workers)
    from passkit.build import BuildProgress, build
    from passkit.ledger import UnitResult

    console.print(f"[bold]passkit build[/] {spec.release_name}  ({args.spec})")
    with Progress(
        TextColumn("[bold blue]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), console=console, transient=False,
        refresh_per_second=4,  # units finish every second or two; redrawing faster only takes CPU from the workers
    ) as bar:
        units = bar.add_task("units", total=None, stats="")
        shards = bar.add_task("release", total=None, stats="", visible=False)

        def on_unit(p: BuildProgress, r: UnitResult) -> None:
            top = ", ".join(f"{reason} {v}" for reason, v in p.top_failures(3)) or "none"
            bar.update(units, completed=p.units_done,
                       stats=f"{p.images_per_second:.1f} img/s · {p.kept}/{p.candidates} kept "
                             f"({100 * p.success_rate:.0f}%) · failures: {top}")

        def on_step(step: str, done: int, total: int) -> None:
            bar.update(shards, completed=done, total=total, visible=True, stats=step)

        from passkit.executors import ExecutorError
        from passkit.filters.dedup import HashListError

        try:
            result = build(spec, workers=args.workers, on_unit=on_unit, on_step=on_step,
                           executor=args.executor, address=args.address, retry_failed=args.retry_failed,
                           pool=pool)
        except (ExecutorError, HashListError) as e:
            return _error(e)
        except InputError as e:
            return _error(str(e))
        finally:
            if pool is not None:
                pool.shutdown()
    _print_build_summary(result)
    return 0


def _print_build_summary(result: Any) -> None:
    rel, p = result.release, result.progress
    t = Table(title=f"{rel.path.name}", show_header=True, header_style="bold")
    t.add_column("")
    t.add_column("count", justify="right")
    t.add_row("candidates", str(rel.candidates))
    for reason, n in sorted(rel.by_reason.items(), key=lambda kv: (-kv[1], kv[0])):
        t.add_row(f"  rejected: {reason}", str(n))
    t.add_row("[bold]kept", f"[bold]{rel.kept}")
    t.add_row("shards", str(rel.shards))
    t.add_row("work units (resumed)", f"{p.units_done} ({p.units_skipped})")
    if p.units_retried:
        t.add_row("work units retried (--retry-failed)", str(p.units_retried))
    t.add_row("downloaded this run", str(p.fetched))
    t.add_row("transient failures (--retry-failed)", str(p.transient))
    t.add_row("seconds", f"{result.seconds:.1f}")
    t.add_row("images/s", f"{p.fetched / max(result.seconds, 1e-9):.1f}")
    out.print(t)
    ran = ", ".join(f"{d['name']} (threshold {d['threshold']}, {d['weights']})" for d in rel.detectors) or "none"
    out.print(f"people detectors that ran: {ran}", highlight=False)
    for s in rel.detectors_skipped:
        out.print(f"  skipped {s['name']}: {s['why']}", highlight=False)
    out.print(f"release written to {rel.path}", highlight=False)


def _cmd_audit(args: argparse.Namespace) -> int:
    from passkit.audit import audit, write_html

    fetch_spec = None
    if args.check_sources or args.allow_private:
        from pydantic import ValidationError

        from passkit.config import FetchSpec

        try:  # the auditor's own network settings; the release's are never used
            fetch_spec = FetchSpec(allow_private=args.allow_private)
        except ValidationError as e:
            return _error(f"--allow-private: {e.errors()[0]['msg']}")
    from passkit.executors.ray import ExecutorError

    # progress on stderr (stdout may be --json); the ETA counts shards, which are of even size
    with Progress(TextColumn("[bold blue]audit"), BarColumn(), MofNCompleteColumn(), TextColumn("shards"),
                  TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console,
                  refresh_per_second=4) as bar:
        task = bar.add_task("shards", total=None)

        def on_progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        from passkit.audit.remote import RemoteReleaseError
        from passkit.remote import is_remote

        release: Path | str = args.release if is_remote(args.release) else Path(args.release)
        try:
            report = audit(release, rescan=args.rescan, check_sources=args.check_sources,
                           seed=args.seed, fetch_spec=fetch_spec, workers=args.workers, executor=args.executor,
                           address=args.address, sample=args.sample, on_progress=on_progress)
        except (ExecutorError, RemoteReleaseError) as e:
            return _error(e)
    if args.html:
        write_html(report, Path(args.html))
    if args.json:
        out.print_json(json.dumps(report.to_dict()))
    else:
        # Findings quote the release (keys, URLs, licence text): printed as text, never as rich markup.
        for label, colour, found in (("FAIL", "red", report.findings), ("WARN", "yellow", report.warnings)):
            for f in found:
                where = " ".join(x for x in (f.shard, f.key) if x)
                out.print(Text.assemble((label, colour), f" {f.code}: {where + ': ' if where else ''}{f.message}"),
                          highlight=False)
        if args.check_sources and fetch_spec is not None:
            out.print(f"source re-checks used this machine's network settings, not the release's (private "
                      f"networks allowed: {', '.join(fetch_spec.allow_private) or 'none'})",
                      markup=False, highlight=False, soft_wrap=True)
        s = report.stats
        verdict = ("OK", "green") if report.ok else (f"{len(report.findings)} finding(s)", "red")
        if report.ok and not report.complete:
            verdict = ("OK in the sampled shards", "yellow")
        out.print(Text.assemble(f"audit {args.release}: ", verdict, f" — {s.get('shards', 0)} shards, "
                                f"{s.get('samples', 0)} samples checked in {s.get('seconds', 0):.1f}s"),
                  highlight=False)
        if not report.complete:
            out.print(Text.assemble(("SAMPLED", "yellow"), report.scope().removeprefix("SAMPLED")), highlight=False)
        if args.html:
            out.print(f"HTML report written to {args.html}", markup=False, highlight=False)
    return 0 if report.ok else 1


def _cmd_publish(args: argparse.Namespace) -> int:
    from rich.progress import DownloadColumn, TransferSpeedColumn

    from passkit.publish import PublishError, publish

    with Progress(TextColumn("[bold blue]publish"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  TextColumn("ETA"), TimeRemainingColumn(), console=console, refresh_per_second=4) as bar:
        task = bar.add_task("bytes", total=None)

        def on_progress(event: str, value: object) -> None:
            if event == "plan":
                bar.update(task, total=int(value))  # type: ignore[call-overload]
            elif event == "bytes":
                bar.advance(task, int(value))  # type: ignore[call-overload]

        try:
            report = publish(Path(args.release), args.url, workers=args.workers, on_progress=on_progress)
        except PublishError as e:
            return _error(e)
    if args.json:
        out.print_json(json.dumps({"url": report.url, "uploaded": report.uploaded, "skipped": report.skipped,
                                   "extra": report.extra, "bytes_uploaded": report.bytes_uploaded,
                                   "replaced_manifest": report.replaced_manifest}))
        return 0
    # the URL and object names are the user's and the release's text: printed plainly, never as markup
    out.print(f"published {args.release} to {report.url}: {len(report.uploaded)} object(s) uploaded "
              f"({report.bytes_uploaded / 1e6:.1f} MB) and verified, {len(report.skipped)} already there",
              markup=False, highlight=False, soft_wrap=True)
    if report.replaced_manifest:
        out.print("a different manifest.json was there: it was taken down first and replaced last",
                  markup=False, highlight=False)
    if report.extra:
        shown = ", ".join(report.extra[:5]) + (f" and {len(report.extra) - 5} more" if len(report.extra) > 5 else "")
        out.print(f"left in place, not part of this release: {shown}", markup=False, highlight=False, soft_wrap=True)
    out.print(f"check it there: passkit audit {report.url}", markup=False, highlight=False, soft_wrap=True)
    return 0


def _cmd_takedown(args: argparse.Namespace) -> int:
    from passkit.config import TakedownSpec
    from passkit.release.takedown import TakedownError, takedown

    requests = [TakedownSpec(key=k, reason=args.reason) for k in args.key]
    requests += [TakedownSpec(creator=c, reason=args.reason) for c in args.creator]
    requests += [TakedownSpec(source_url=u, reason=args.reason) for u in args.source_url]
    try:
        res = takedown(Path(args.release), requests, version=args.version,
                       out_dir=Path(args.out) if args.out else None)
    except (TakedownError, FileNotFoundError) as e:
        return _error(e)
    t = Table(title=Text(f"{res.path.name}: {len(res.removed)} sample(s) removed"), header_style="bold")
    t.add_column("key")
    t.add_column("shard")
    t.add_column("reason")
    for r in res.removed:
        t.add_row(*_cells(r["key"], r["shard"], r["reason"]))
    out.print(t)
    out.print(f"shards unchanged (same bytes): {len(res.shards_kept)} · rewritten: {len(res.shards_rewritten)} · "
              f"dropped (empty): {len(res.shards_dropped)}", highlight=False)
    out.print(f"new version written to {res.path}; rebuilding from staging? add these to the spec's "
              "release.takedowns so the removal survives a rebuild", highlight=False)
    return 0


def _cmd_views_generate(args: argparse.Namespace) -> int:
    from passkit.views.derive import GenViewError, generate_views
    from passkit.views.unclip import GenViewUnavailable

    with Progress(TextColumn("generating views"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=console, transient=True) as bar:
        task = bar.add_task("views", total=None)
        try:
            res = generate_views(Path(args.release), Path(args.model), device=args.device, version=args.version,
                                 out_dir=Path(args.out) if args.out else None, seed=args.seed, steps=args.steps,
                                 batch_size=args.batch_size, fit_images=args.fit_images,
                                 models_dir=os.environ.get("PASSKIT_MODELS"),
                                 on_progress=lambda done, total: bar.update(task, completed=done, total=total))
        except (GenViewError, GenViewUnavailable, FileNotFoundError) as e:
            return _error(e)
    out.print(f"{res.path}: {res.generated} variation(s) released in {res.shards} shard(s), {res.rejected} rejected "
              f"by the people filter, {res.resumed_shards} source shard(s) resumed from an earlier run, "
              f"{res.seconds:.1f} s; check it with `passkit audit {res.path}`", highlight=False)
    return 0


def _cmd_diff(args: argparse.Namespace) -> int:
    from passkit.release.diff import diff

    try:
        d = diff(Path(args.a), Path(args.b))
    except FileNotFoundError as e:
        return _error(e)
    if args.json:
        out.print_json(json.dumps(d.to_dict()))
        return 0
    t = Table(title=Text(f"{d.a} -> {d.b}"), header_style="bold")
    t.add_column("change")
    t.add_column("key")
    t.add_column("detail")
    for k in d.added:
        t.add_row(Text("added", "green"), *_cells(k, ""))
    for r in d.removed:
        t.add_row(Text("removed", "red"), *_cells(r["key"], r["reason"]))
    for c in d.changed:
        t.add_row(Text("changed", "yellow"), *_cells(c["key"], ", ".join(c["fields"])))
    out.print(t)
    out.print(f"added {len(d.added)} · removed {len(d.removed)} · changed {len(d.changed)} · "
              f"unchanged {d.unchanged}; shards: same {len(d.shards_same)}, changed {len(d.shards_changed)}, "
              f"added {len(d.shards_added)}, removed {len(d.shards_removed)}", highlight=False)
    return 0


def _cmd_query(args: argparse.Namespace) -> int:
    from passkit.query import QueryError, query

    try:
        # A table on a terminal stops at --max-rows (a SELECT * over 20 million rejections would
        # print for hours); --json, for tools, gives every row unless told otherwise.
        limit = args.max_rows if args.max_rows is not None else (None if args.json else DEFAULT_QUERY_ROWS)
        res = query(Path(args.release), args.sql, max_rows=limit or None)
    except (QueryError, FileNotFoundError, ValueError) as e:
        return _error(e)
    if args.json:
        out.print_json(json.dumps(res.to_dicts(), default=str))
        return 0
    t = Table(header_style="bold")
    for c in res.columns:
        t.add_column(Text(c))
    for r in res.rows:
        t.add_row(*_cells(*r))
    out.print(t)
    more = " (more rows matched: --max-rows N shows more, 0 shows all)" if res.truncated else ""
    out.print(f"{len(res.rows)} row(s){more}", highlight=False)
    return 0


def _cells(*values: object) -> list[Text]:
    """Table cells shown literally (rich would read a plain string cell as markup)."""
    return [Text("" if v is None else str(v)) for v in values]


def _cmd_info(args: argparse.Namespace) -> int:
    from passkit.release.info import summarize

    try:
        info = summarize(Path(args.release))
    except (FileNotFoundError, KeyError, ValueError) as e:
        return _error(f"{args.release} is not a readable release ({type(e).__name__}: {e}); "
                      "run `passkit audit` on it for details")
    if args.json:
        out.print_json(json.dumps(info))
        return 0
    # Every value may come from a stranger's release (its name, providers, licence names): shown as text
    t = Table(title=Text(str(info["release"])), show_header=False)
    t.add_column(style="bold")
    t.add_column()
    c = info["counts"]
    for k, v in [
        ("created", info["created"]), ("policy", info["policy"]),
        ("detectors", ", ".join(info["detectors"]) or "none"),
        ("candidates", c["candidates"]), ("kept", c["kept"]), ("rejected", c["rejected"]),
        ("rejected by reason", ", ".join(f"{k} {v}" for k, v in c["by_reason"].items())),
        ("shards", info["shards"]), ("size", f"{info['bytes'] / 1e6:.1f} MB"),
        ("licences", ", ".join(f"{k} {v}" for k, v in info["licenses"].items())),
        ("providers", ", ".join(f"{k} {v}" for k, v in info["providers"].items())),
        ("removals", info["removals"]),
    ]:
        t.add_row(*_cells(k, v))
    out.print(t)
    return 0


def _cmd_license(args: argparse.Namespace) -> int:
    """Normalise licence spellings as a source would give them, and say what a policy does with each."""
    from passkit import licenses

    pol = licenses.policy(args.policy, args.allow, args.deny)
    rows: list[dict[str, Any]] = []
    for text in args.text:
        url = text if "creativecommons.org" in text.lower() or "://" in text else args.url
        name = None if url is text else text
        try:
            lic = licenses.normalise(name, args.version, url)
        except licenses.LicenseError as e:
            rows.append({"input": text, "id": None, "reason": e.reason, "detail": e.detail, "allowed": False})
            continue
        rows.append({"input": text, "id": lic.id, "name": lic.name, "url": lic.url, "allowed": pol.allows(lic)})
    if args.json:
        out.print_json(json.dumps(rows))
    else:
        t = Table(title=f"licences under policy {pol.name!r}")
        for col in ("input", "registry id", "name / reason", f"passes {pol.name}"):
            t.add_column(col)
        for r in rows:
            why = Text(r["name"]) if r.get("name") else Text.assemble((r["reason"], "red"), f": {r['detail']}")
            t.add_row(Text(r["input"]), r["id"] or "-", why, Text("yes", "green") if r["allowed"] else Text("no", "red"))
        out.print(t)
    return 0 if all(r["id"] for r in rows) else 1


# ----------------------------------------------------------------------------- people filter


def _tv_files(m: Any, status: dict[str, str]) -> list[dict[str, str]]:
    """A torchvision release file as `models list --json` shows files (pinned by torchvision's hash prefix)."""
    if "tv_weights" not in m.extra:
        return []
    e = m.extra
    return [{"path": e["file"], "sha256_prefix": e["sha256_prefix"], "url": e["url"], "role": "weights",
             "weights": e["tv_weights"], "status": status[e["file"]]}]


def _cmd_models(args: argparse.Namespace) -> int:
    from passkit import models

    base = Path(args.dir).expanduser() if args.dir else models.models_dir()
    if args.set and args.set not in models.SETS:
        return _error(f"unknown set {args.set!r}; known: {', '.join(sorted(models.SETS))}")
    in_sets = {n for members in models.SETS.values() for n in members}
    # a plain `fetch` gets the default models only: the sets' files are large (hundreds of MB, for GPUs)
    everything = sorted(n for n in models.REGISTRY if args.action != "fetch" or n not in in_sets)
    names = [*args.names, *(models.SETS[args.set] if args.set else ())] or everything
    unknown = [n for n in names if n not in models.REGISTRY]
    if unknown:
        return _error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(sorted(models.REGISTRY))}")
    if args.action == "list" and args.json:
        out.print_json(json.dumps([
            {"name": n, "task": models.REGISTRY[n].task, "license": models.REGISTRY[n].license,
             "source": models.REGISTRY[n].source, "package": models.REGISTRY[n].package,
             "files": [{"path": f.path, "sha256": f.sha256, "size": f.size, "url": f.url, "role": f.role,
                        "status": models.verify(n, base)[f.path]} for f in models.REGISTRY[n].files]
             + _tv_files(models.REGISTRY[n], models.verify(n, base))}
            for n in names
        ]))
        return 0
    if args.action == "list":
        t = Table(title=f"detector models (folder: {base})", header_style="bold")
        for c in ("name", "task", "licence", "sha256 / package", "files", "source"):
            t.add_column(c, overflow="fold")
        for n in names:
            m = models.REGISTRY[n]
            pin = m.main.sha256 if m.main else f"{m.package} {models.package_version(m) or 'not installed'}"
            if "sha256_prefix" in m.extra:
                pin = f"{m.extra['sha256_prefix']}... (torchvision's prefix); {pin}"
            files = ", ".join(f"{Path(k).name}: {v}" for k, v in models.verify(n, base).items())
            t.add_row(n, m.task, m.license, pin, files or "(inside the package)", m.source)
        out.print(t)
        return 0
    if args.action == "verify":
        bad = 0
        for n in names:
            for path, st in models.verify(n, base).items():
                # a mismatch always fails; a missing file fails only when that model was asked for
                bad += st.startswith("sha256") or (st == "missing" and bool(args.names or args.set))
                colour = {"ok": "green", "missing": "yellow"}.get(st, "red")
                out.print(f"[{colour}]{st}[/] {n}: {base / path}", highlight=False)
        return 1 if bad else 0
    failed = 0
    for n in names:
        try:
            res = models.fetch(n, base, mirror=args.mirror)
        except models.FetchError as e:
            _error(e)
            failed += 1
            if "no internet" in str(e):
                break
            continue
        for path, st in res.items():
            out.print(f"{st}: {n} {path}", highlight=False)
    return 1 if failed else 0


def _cmd_filter_eval(args: argparse.Namespace) -> int:
    from passkit.config import PeopleSpec, SpecError, load_spec
    from passkit.filters.eval import EvalError, evaluate, plot

    people, image = PeopleSpec(), None
    if args.spec:
        try:
            spec = load_spec(args.spec)
        except SpecError as e:
            return _error(e)
        people, image = spec.people, spec.image
    with Progress(TextColumn("[bold blue]eval"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("eval", total=None)
        try:
            rep = evaluate(Path(args.folder), people, image, threads=args.threads,
                           on_progress=lambda d, t: bar.update(task, completed=d, total=t),
                           boxes=Path(args.boxes) if args.boxes else None, frr_budget=args.frr_budget,
                           folds=args.folds, seed=args.seed)
        except EvalError as e:
            return _error(e)
    png: Path | None = Path(args.png) if args.png else Path(Path(args.folder).resolve().name + "-people-eval.png")
    try:
        plot(rep, png)  # type: ignore[arg-type]
    except OSError as e:
        console.print(f"[yellow]warning:[/] could not write the curve to {png}: {e}", highlight=False)
        png = None
    if args.json:
        d = rep.to_dict(items=args.items)
        d["png"] = str(png) if png else None
        out.print_json(json.dumps(d))
        return 0
    t = Table(title=f"{rep.folder}: {rep.positives} person / {rep.negatives} no-person images"
                    + (f", {rep.errors} unreadable" if rep.errors else ""), header_style="bold")
    for c in ("detector", "threshold", "review", "recall", "recall+review", "FRR", "precision", "review rate"):
        t.add_column(c, justify="left" if c == "detector" else "right")
    th = {d["name"]: d for d in rep.detectors}
    for name, m in [*rep.per_detector.items(), ("ensemble", rep.ensemble)]:
        d = th.get(name, {})
        t.add_row(f"[bold]{name}" if name == "ensemble" else name, str(d.get("threshold", "")),
                  str(d.get("review", "")), f"{m.recall:.3f}", f"{m.recall_with_review:.3f}", f"{m.frr:.3f}",
                  f"{m.precision:.3f}", f"{m.review_rate:.3f}")
    out.print(t)
    sw = Table(title="threshold sweep (each detector alone; ensemble = every threshold x factor)",
               header_style="bold")
    for c in ("detector", "threshold / factor", "recall", "recall+review", "FRR", "precision"):
        sw.add_column(c)
    for r in rep.sweep:
        sw.add_row(r["detector"], str(r.get("threshold", f"x{r.get('factor')}")), f"{r['recall']:.3f}",
                   f"{r['recall_with_review']:.3f}", f"{r['frr']:.3f}", f"{r['precision']:.3f}")
    out.print(sw)
    _print_choice_and_sizes(rep)
    for s in rep.skipped:
        out.print(f"  skipped {s['name']}: {s['why']}", highlight=False)
    out.print(f"throughput: {rep.images_per_second:.1f} images/s (filter only, {rep.seconds:.1f} s)"
              + (f"; curve written to {png}" if png else ""), highlight=False)
    return 0


def _print_choice_and_sizes(rep: Any) -> None:
    """The eval's fitted vs cross-validated thresholds and its recall by person size, as tables."""
    ch = rep.threshold_choice
    if ch:
        cv = f"{ch['folds']}-fold CV (seed {ch['seed']})" if ch["folds"] else "no CV"
        t = Table(title=f"threshold at FRR <= {ch['frr_budget']:g}: fitted on all images vs {cv}",
                  header_style="bold")
        for c in ("detector", "fitted threshold", "recall", "recall+review", "FRR", "CV thresholds",
                  "CV recall", "CV recall+review", "CV FRR", "CV review rate"):
            t.add_column(c, justify="left" if c == "detector" else "right")
        for r in ch["rows"]:
            f, c = r["fitted"], r.get("cv")
            fit_t = f.get("factor", f.get("threshold"))
            fit_s = "-" if fit_t is None else (f"x{fit_t:.3f}" if "factor" in f else f"{fit_t:.3f}")
            if "grid" in f:
                fit_s = " ".join("off" if v is None else f"{v:g}" for v in f["grid"].values())
            cvs = ["", "", "", "", ""]
            if c:
                ths = ", ".join("-" if v is None else "/".join("off" if x is None else f"{x:g}" for x in v.values())
                                if isinstance(v, dict) else f"{v:.3f}" for v in c["thresholds"])
                cvs = [ths, f"{c['recall']:.3f}", f"{c['recall_with_review']:.3f}", f"{c['frr']:.3f}",
                       f"{c['review_rate']:.3f}"]
            t.add_row(f"[bold]{r['detector']}" if r["detector"] == "ensemble" else r["detector"], fit_s,
                      f"{f['recall']:.3f}", f"{f['recall_with_review']:.3f}", f"{f['frr']:.3f}", *cvs)
        out.print(t)
        if ch.get("note"):
            out.print(f"  {ch['note']}", highlight=False)
    if rep.by_size:
        b = rep.by_size
        keys = [k for k in b["buckets"][0] if k not in ("bucket", "images")] if b["buckets"] else []
        t = Table(title=f"recall by tallest person / image height (boxes: {b['boxes']}; ensemble = spec "
                        "thresholds, _fitted / _cv = chosen at the FRR budget)", header_style="bold")
        for c in ("size", "person images", *keys):
            t.add_column(c, justify="left" if c == "size" else "right")
        for r in b["buckets"]:
            t.add_row(r["bucket"], str(r["images"]), *("-" if r[k] is None else f"{r[k]:.3f}" for k in keys))
        out.print(t)
        if b["conflicts"]:
            out.print(f"  {len(b['conflicts'])} no-person image(s) have person boxes, e.g. {b['conflicts'][0]}",
                      highlight=False)


def _cmd_review(args: argparse.Namespace) -> int:
    from passkit.review.server import ReviewError, serve

    try:
        serve(Path(args.workdir), host=args.host, port=args.port, sample=args.sample, seed=args.seed,
              reviewer=args.reviewer, log=lambda m: console.print(m, highlight=False, markup=False))
    except ReviewError as e:
        return _error(e)
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from passkit.recipes.engine import EngineError
    from passkit.recipes.validate import validate

    try:
        r = validate(Path(args.release), recipe=args.recipe, preset=args.preset, eval_spec=args.eval,
                     seed=args.seed, device=args.device, work_dir=Path(args.work) if args.work else None,
                     steps=args.steps, loader=args.loader, genview=args.genview, genview_prob=args.genview_prob,
                     quality_loss=args.quality_loss, quality_gamma=args.quality_gamma,
                     quality_scorer=args.quality_scorer)
    except (FileNotFoundError, ValueError, EngineError) as e:
        return _error(e)
    t = Table(title=f"validate {args.release} ({args.recipe}, {args.preset})", header_style="bold")
    for col in ("check", "value", "rule", "status"):
        t.add_column(col)
    for c in r.entry["checks"]:
        v = c.get("value")
        colour = {"pass": "green", "fail": "red"}.get(c["status"], "yellow")
        t.add_row(c["name"], "" if v is None else f"{v:.3f}", c["rule"], f"[{colour}]{c['status']}[/]")
    out.print(t)
    ev = r.entry.get("eval") or {}
    for k in sorted(ev.get("pretrained") or {}):
        out.print(f"{k}: pretrained {ev['pretrained'][k]:.3f} · random init {ev['random_init'][k]:.3f}", highlight=False)
    tr = r.entry["train"]
    out.print(f"{r.entry['settings']['steps']} steps in {tr['seconds']:.1f}s ({tr['images_per_s']:.1f} images/s on "
              f"{tr['device']}); results in {r.out_dir}", highlight=False)
    return 0 if r.ok else 1


def _workers(text: str) -> int:
    """argparse type: a whole number, 1 or more."""
    n = _count(text)
    if n < 1:
        raise argparse.ArgumentTypeError("use 1 or more workers")
    return n


def _fraction(text: str) -> float:
    """argparse type: a fraction in (0, 1]."""
    try:
        f = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < f <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not in (0, 1]: e.g. 0.05 reads 5% of the shards")
    return f


def _count(text: str) -> int:
    """argparse type: a whole number, 0 or more (a negative count has no meaning, and crashed)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"{n} is negative; use 0 or more")
    return n


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="passkit", description="Build, audit and serve people-free, CC-licensed image datasets.")
    sub = ap.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build a release from a pipeline spec")
    b.add_argument("spec", help="pipeline spec YAML, e.g. pipelines/demo.yaml")
    b.add_argument("--workers", type=int, default=None,
                   help="worker processes, within the bounds of the spec's work.workers (default: its value)")
    b.add_argument("--retry-failed", action="store_true",
                   help="refetch only the candidates that ended in transient failures (timeouts, 5xx, 429, "
                        "resets), then rebuild the release; permanent rejections stay as they are")
    b.add_argument("--executor", choices=["local", "ray"], default=None,
                   help="run work units on a local process pool or on Ray (default: the spec's work.executor)")
    b.add_argument("--address", default=None,
                   help="Ray cluster address for --executor ray, e.g. ray://head:10001 or auto")
    b.set_defaults(func=_cmd_build)
    a = sub.add_parser("audit", help="verify a release against its manifest and policy")
    a.add_argument("release", help="release folder, e.g. releases/demo-1.0.0, or the URL of a published one "
                                   "(s3://bucket/prefix, gs://..., hf://datasets/owner/name, https://...)")
    a.add_argument("--json", action="store_true", help="machine-readable output")
    a.add_argument("--html", metavar="FILE", help="also write the report as a self-contained HTML page")
    a.add_argument("--rescan", action="store_true", help="rerun the manifest's people detectors on every image")
    a.add_argument("--check-sources", type=_count, default=0, metavar="N",
                   help="fetch N random samples' source URLs and landing pages again and compare image and "
                        "licence, with this machine's network settings (never the release's own fetch settings: "
                        "private and loopback addresses are refused unless --allow-private names them)")
    a.add_argument("--allow-private", action="append", default=[], metavar="HOST|IP|CIDR",
                   help="exempt this host, IP or network from the SSRF guard for --check-sources (repeatable), "
                        "e.g. 127.0.0.1 or 10.1.0.0/16")
    a.add_argument("--seed", type=int, default=0, help="which random samples --check-sources and shards --sample pick")
    a.add_argument("--workers", type=_workers, default=None, metavar="N",
                   help="check N shards at once in local processes (default 1), or at most N Ray tasks at once "
                        "with --executor ray (default: the cluster's CPUs); the report is the same for any N")
    a.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="check shards in local processes or as Ray tasks (default: local)")
    a.add_argument("--address", default=None,
                   help="Ray cluster address for --executor ray, e.g. ray://head:10001 or auto (default: a local "
                        "Ray); the release folder must be at the same path on every node")
    a.add_argument("--sample", type=_fraction, default=None, metavar="FRACTION",
                   help="a fast, sampled audit: read only this fraction (0 < f <= 1) of the shards sample by "
                        "sample, picked by --seed; every shard's size and sha256, the manifest, index and "
                        "attribution files are still checked. The report says it is sampled: it never vouches "
                        "for the whole release")
    a.set_defaults(func=_cmd_audit)
    pb = sub.add_parser("publish", help="upload a release to object storage (any fsspec URL), resumable and verified")
    pb.add_argument("release", help="release folder, e.g. releases/demo-1.0.0")
    pb.add_argument("url", help="destination: s3://bucket/prefix, gs://bucket/prefix, hf://datasets/owner/name, "
                                "or a local folder; credentials come from the backend's usual environment and files")
    pb.add_argument("--workers", type=_workers, default=8, metavar="N", help="objects uploaded at once (default 8)")
    pb.add_argument("--json", action="store_true", help="machine-readable output")
    pb.set_defaults(func=_cmd_publish)
    td = sub.add_parser("takedown", help="write a new version of a release without the requested samples")
    td.add_argument("release", help="release folder, e.g. releases/demo-1.0.0")
    td.add_argument("--key", action="append", default=[], help="sample key to remove (repeatable)")
    td.add_argument("--creator", action="append", default=[], help="creator name or URL (repeatable)")
    td.add_argument("--source-url", action="append", default=[], help="image or landing page URL (repeatable)")
    td.add_argument("--reason", required=True, help="why, as recorded in the manifest's removals")
    td.add_argument("--version", help="the new version (default: the old one with its last number plus one)")
    td.add_argument("--out", help="the new release folder (default: beside the old one, <name>-<version>)")
    td.set_defaults(func=_cmd_takedown)
    df = sub.add_parser("diff", help="samples added, removed and changed between two releases")
    df.add_argument("a", help="older release folder")
    df.add_argument("b", help="newer release folder")
    df.add_argument("--json", action="store_true", help="machine-readable output")
    df.set_defaults(func=_cmd_diff)
    q = sub.add_parser("query", help="SQL over a release's index with DuckDB (views: samples, rejected, shards, removals)")
    q.add_argument("release", help="release folder")
    q.add_argument("sql", help='e.g. "SELECT license, count(*) FROM samples GROUP BY 1"')
    q.add_argument("--json", action="store_true", help="rows as JSON objects")
    q.add_argument("--max-rows", type=int, default=None,
                   help=f"rows to show (default {DEFAULT_QUERY_ROWS} as a table, all as --json; 0: all)")
    q.set_defaults(func=_cmd_query)
    i = sub.add_parser("info", help="summarise a release")
    i.add_argument("release")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.set_defaults(func=_cmd_info)
    from passkit.recipes.registry import PRESETS, RECIPES  # names only: imports no recipe (nor torch)

    v = sub.add_parser("validate", help="pretrain a reference recipe on a release and check that it learned")
    v.add_argument("release")
    v.add_argument("--recipe", default="moco_v2", choices=list(RECIPES))
    v.add_argument("--preset", default="smoke", choices=list(PRESETS))
    v.add_argument("--eval", default=None, metavar="LABELLED",
                   help="labelled set for kNN/linear probe: 'synthetic' or a folder of class folders")
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--device", default="auto", help="auto, cpu, cuda")
    v.add_argument("--steps", type=int, default=None, help="override the preset's number of steps")
    v.add_argument("--loader", default="auto", choices=["auto", "cpu", "device", "dali"],
                   help="input pipeline: cpu (workers decode and augment), device (workers read, the training "
                        "device decodes and augments), dali; auto: device on CUDA, cpu elsewhere")
    v.add_argument("--genview", default=None, metavar="DERIVED",
                   help="moco_v2: the release's GenView variations (passkit views generate); one view per sample "
                        "from its variation (cpu input path)")
    v.add_argument("--genview-prob", type=float, default=1.0, metavar="P",
                   help="with --genview: chance that a sample's chosen view is its variation (default 1.0)")
    v.add_argument("--quality-loss", action="store_true",
                   help="moco_v2: GenView's quality-driven loss (InfoNCE weighted by pair quality; scored by "
                        "--quality-scorer)")
    v.add_argument("--quality-gamma", type=float, default=None, help="with --quality-loss: softmax gamma (default 1.0)")
    v.add_argument("--quality-scorer", default=None, metavar="SCORER",
                   help="with --quality-loss: the scoring network, 'momentum' (default: the recipe's momentum encoder, "
                        "no weights needed) or 'open_clip:ARCH:WEIGHTS_FILE' (a frozen open_clip ConvNeXt from a local "
                        "file, as the reference: e.g. open_clip:convnext_base_w:models/open_clip_pytorch_model.bin)")
    v.add_argument("--work", default=None, help="checkpoint folder (default work/validate/<release>/<run>)")
    v.set_defaults(func=_cmd_validate)
    lc = sub.add_parser("license", help="normalise licence spellings (names, codes, URLs, flickr:<id>) and check a policy")
    lc.add_argument("text", nargs="+", help='e.g. "CC BY-SA 3.0 de", "Attribution License", flickr:4, a CC URL')
    lc.add_argument("--version", default=None, help="licence version given beside the name (Openverse)")
    lc.add_argument("--url", default=None, help="licence URL given beside the name")
    lc.add_argument("--policy", default="cc-by", choices=["cc-by", "by-or-public-domain", "custom"])
    lc.add_argument("--allow", action="append", default=[], help="registry id to allow (repeatable)")
    lc.add_argument("--deny", action="append", default=[], help="registry id to deny (repeatable)")
    lc.add_argument("--json", action="store_true", help="machine-readable output")
    lc.set_defaults(func=_cmd_license)
    # people filter: detector weights, filter eval, the human review queue
    mo = sub.add_parser("models", help="detector weights: list, verify against pinned sha256, fetch")
    mo.add_argument("action", choices=["list", "verify", "fetch"])
    mo.add_argument("names", nargs="*", help="models (default: all)")
    mo.add_argument("--dir", help="models folder (default: $PASSKIT_MODELS or ~/.cache/passkit/models)")
    mo.add_argument("--mirror", help="fetch from this URL laid out like the models folder instead of the "
                                     "public source URLs")
    mo.add_argument("--json", action="store_true", help="list: machine-readable output")
    mo.add_argument("--set", help="a named set of models, e.g. strong: torchvision's Faster R-CNN v2 and "
                                  "Keypoint R-CNN for GPU machines (about 400 MB; not in a plain `fetch`)")
    mo.set_defaults(func=_cmd_models)
    fl = sub.add_parser("filter", help="people filter tools")
    flsub = fl.add_subparsers(dest="filter_command", required=True)
    fe = flsub.add_parser("eval", help="recall, false rejections, precision, speed and a threshold sweep "
                                       "on a folder with labels.csv (file,has_person)")
    fe.add_argument("folder", help="labelled folder, e.g. ../shared/data/person_dev_coco")
    fe.add_argument("--spec", help="pipeline spec whose people: and image: sections to evaluate "
                                   "(default: the default ensemble at 512 px)")
    fe.add_argument("--json", action="store_true", help="machine-readable output")
    fe.add_argument("--items", action="store_true", help="with --json: every image's scores and verdict")
    fe.add_argument("--png", help="where to write the recall/FRR curve (default: <folder>-people-eval.png)")
    fe.add_argument("--threads", type=int, default=None, help="intra-op threads per detector")
    fe.add_argument("--boxes", help="YOLO labels folder (one .txt per image, 'class cx cy w h', class 0 = "
                                    "person) for recall by person size (default: FOLDER/labels if present)")
    fe.add_argument("--frr-budget", type=float, default=0.10,
                    help="false-rejection budget of the threshold choice (default 0.10)")
    fe.add_argument("--folds", type=int, default=5,
                    help="cross-validation folds of the threshold choice, stratified by label (default 5; 0: off)")
    fe.add_argument("--seed", type=int, default=0, help="seed of the cross-validation folds (default 0)")
    fe.set_defaults(func=_cmd_filter_eval)
    vw = sub.add_parser("views", help="generated views of a release (GenView)")
    vsub = vw.add_subparsers(dest="views_command", required=True)
    vg = vsub.add_parser("generate", help="write <name>-genview-<version>: one AI-generated variation of each sample, "
                                          "credited to the original and people-filtered again")
    vg.add_argument("release", help="the source release folder")
    vg.add_argument("--model", required=True, help="a local diffusers StableUnCLIPImg2ImgPipeline folder "
                                                   "(e.g. stable-diffusion-2-1-unclip)")
    vg.add_argument("--device", default="cpu", help="torch device (default cpu; cuda runs fp16)")
    vg.add_argument("--version", help="version of the derived release (default: the source's)")
    vg.add_argument("--out", help="write the derived release here instead of beside the source")
    vg.add_argument("--seed", type=int, default=0, help="run seed; each sample's seed derives from it and its key")
    vg.add_argument("--steps", type=int, default=20, help="denoising steps (default 20)")
    vg.add_argument("--batch-size", type=int, default=8, help="images per generation batch (default 8)")
    vg.add_argument("--fit-images", type=int, default=1024,
                    help="images the foreground's principal direction is fitted on (default 1024)")
    vg.set_defaults(func=_cmd_views_generate)
    rv = sub.add_parser("review", help="serve the human review queue of a build's work folder on 127.0.0.1")
    rv.add_argument("workdir", help="the build's work folder, e.g. work/demo (holds units/)")
    rv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    rv.add_argument("--port", type=int, default=8765, help="port (0: any free port)")
    rv.add_argument("--sample", type=int, default=0, metavar="N",
                    help="also queue N random kept images for a spot check")
    rv.add_argument("--seed", type=int, default=0, help="which kept images --sample draws")
    rv.add_argument("--reviewer", default="", help="name recorded with each decision")
    rv.set_defaults(func=_cmd_review)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: rerun the same command to resume; finished work units are kept")
        return 130


def run() -> None:
    """The `passkit` console script: main(), then exit without tearing the interpreter down
    (passkit.process.exit_without_teardown says why)."""
    code = main()
    from passkit.process import exit_without_teardown

    exit_without_teardown(code)


if __name__ == "__main__":
    run()

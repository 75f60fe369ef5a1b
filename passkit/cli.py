"""The `passkit` command. Thin: parse, call the library, print."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console(stderr=True)
out = Console()


def _cmd_build(args: argparse.Namespace) -> int:
    from passkit.build import BuildProgress, build
    from passkit.config import SpecError, load_spec
    from passkit.pipeline import UnitResult

    try:
        spec = load_spec(args.spec)
    except SpecError as e:
        console.print(f"[red]error:[/] {e}", highlight=False)
        return 2
    console.print(f"[bold]passkit build[/] {spec.release_name}  ({args.spec})")
    with Progress(
        TextColumn("[bold blue]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), console=console, transient=False,
    ) as bar:
        units = bar.add_task("units", total=None, stats="")
        shards = bar.add_task("release", total=None, stats="", visible=False)

        def on_unit(p: BuildProgress, r: UnitResult) -> None:
            top = ", ".join(f"{reason} {v}" for reason, v in p.top_failures(3)) or "none"
            bar.update(units, completed=p.units_done,
                       stats=f"{p.images_per_second:.1f} img/s · {p.kept}/{p.candidates} kept "
                             f"({100 * p.success_rate:.0f}%) · failures: {top}")

        def on_shard(done: int, total: int) -> None:
            bar.update(shards, completed=done, total=total, visible=True, stats="shards")

        from passkit.executors import ExecutorError
        from passkit.filters.dedup import HashListError

        try:
            result = build(spec, workers=args.workers, on_unit=on_unit, on_shard=on_shard,
                           executor=args.executor, address=args.address, retry_failed=args.retry_failed)
        except (ExecutorError, HashListError) as e:
            console.print(f"[red]error:[/] {e}", highlight=False)
            return 2
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

    report = audit(Path(args.release), rescan=args.rescan, check_sources=args.check_sources, seed=args.seed)
    if args.html:
        write_html(report, Path(args.html))
    if args.json:
        out.print_json(json.dumps(report.to_dict()))
    else:
        for f in report.findings:
            where = " ".join(x for x in (f.shard, f.key) if x)
            out.print(f"[red]FAIL[/] {f.code}: {where + ': ' if where else ''}{f.message}", highlight=False)
        for f in report.warnings:
            where = " ".join(x for x in (f.shard, f.key) if x)
            out.print(f"[yellow]WARN[/] {f.code}: {where + ': ' if where else ''}{f.message}", highlight=False)
        s = report.stats
        verdict = "[green]OK[/]" if report.ok else f"[red]{len(report.findings)} finding(s)[/]"
        out.print(f"audit {args.release}: {verdict} — {s.get('shards', 0)} shards, "
                  f"{s.get('samples', 0)} samples checked in {s.get('seconds', 0):.1f}s", highlight=False)
        if args.html:
            out.print(f"HTML report written to {args.html}", highlight=False)
    return 0 if report.ok else 1


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
        console.print(f"[red]error:[/] {e}", highlight=False)
        return 2
    t = Table(title=f"{res.path.name}: {len(res.removed)} sample(s) removed", header_style="bold")
    t.add_column("key")
    t.add_column("shard")
    t.add_column("reason")
    for r in res.removed:
        t.add_row(r["key"], r["shard"], r["reason"])
    out.print(t)
    out.print(f"shards unchanged (same bytes): {len(res.shards_kept)} · rewritten: {len(res.shards_rewritten)} · "
              f"dropped (empty): {len(res.shards_dropped)}", highlight=False)
    out.print(f"new version written to {res.path}; rebuilding from staging? add these to the spec's "
              "release.takedowns so the removal survives a rebuild", highlight=False)
    return 0


def _cmd_diff(args: argparse.Namespace) -> int:
    from passkit.release.diff import diff

    try:
        d = diff(Path(args.a), Path(args.b))
    except FileNotFoundError as e:
        console.print(f"[red]error:[/] {e}", highlight=False)
        return 2
    if args.json:
        out.print_json(json.dumps(d.to_dict()))
        return 0
    t = Table(title=f"{d.a} -> {d.b}", header_style="bold")
    t.add_column("change")
    t.add_column("key")
    t.add_column("detail")
    for k in d.added:
        t.add_row("[green]added", k, "")
    for r in d.removed:
        t.add_row("[red]removed", r["key"], r["reason"])
    for c in d.changed:
        t.add_row("[yellow]changed", c["key"], ", ".join(c["fields"]))
    out.print(t)
    out.print(f"added {len(d.added)} · removed {len(d.removed)} · changed {len(d.changed)} · "
              f"unchanged {d.unchanged}; shards: same {len(d.shards_same)}, changed {len(d.shards_changed)}, "
              f"added {len(d.shards_added)}, removed {len(d.shards_removed)}", highlight=False)
    return 0


def _cmd_query(args: argparse.Namespace) -> int:
    from passkit.query import QueryError, query

    try:
        res = query(Path(args.release), args.sql)
    except (QueryError, FileNotFoundError) as e:
        console.print(f"[red]error:[/] {e}", highlight=False)
        return 2
    if args.json:
        out.print_json(json.dumps(res.to_dicts(), default=str))
        return 0
    t = Table(header_style="bold")
    for c in res.columns:
        t.add_column(c)
    for r in res.rows:
        t.add_row(*("" if v is None else str(v) for v in r))
    out.print(t)
    out.print(f"{len(res.rows)} row(s)", highlight=False)
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from passkit.release.info import summarize

    try:
        info = summarize(Path(args.release))
    except (FileNotFoundError, KeyError, ValueError) as e:
        console.print(f"[red]error:[/] {args.release} is not a readable release ({type(e).__name__}: {e}); "
                      "run `passkit audit` on it for details", highlight=False)
        return 2
    if args.json:
        out.print_json(json.dumps(info))
        return 0
    t = Table(title=info["release"], show_header=False)
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
        t.add_row(k, str(v))
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
            t.add_row(r["input"], r["id"] or "-", r.get("name") or f"[red]{r['reason']}[/]: {r['detail']}",
                      "[green]yes[/]" if r["allowed"] else "[red]no[/]")
        out.print(t)
    return 0 if all(r["id"] for r in rows) else 1


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="passkit", description="Build, audit and serve people-free, CC-licensed image datasets.")
    sub = ap.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build a release from a pipeline spec")
    b.add_argument("spec", help="pipeline spec YAML, e.g. pipelines/demo.yaml")
    b.add_argument("--workers", type=int, default=None, help="worker processes (default: the spec's work.workers)")
    b.add_argument("--retry-failed", action="store_true",
                   help="refetch only the candidates that ended in transient failures (timeouts, 5xx, 429, "
                        "resets), then rebuild the release; permanent rejections stay as they are")
    b.add_argument("--executor", choices=["local", "ray"], default=None,
                   help="run work units on a local process pool or on Ray (default: the spec's work.executor)")
    b.add_argument("--address", default=None,
                   help="Ray cluster address for --executor ray, e.g. ray://head:10001 or auto")
    b.set_defaults(func=_cmd_build)
    a = sub.add_parser("audit", help="verify a release against its manifest and policy")
    a.add_argument("release", help="release folder, e.g. releases/demo-1.0.0")
    a.add_argument("--json", action="store_true", help="machine-readable output")
    a.add_argument("--html", metavar="FILE", help="also write the report as a self-contained HTML page")
    a.add_argument("--rescan", action="store_true", help="rerun the manifest's people detectors on every image")
    a.add_argument("--check-sources", type=int, default=0, metavar="N",
                   help="fetch N random samples' source URLs and landing pages again and compare image and licence")
    a.add_argument("--seed", type=int, default=0, help="which random samples --check-sources picks")
    a.set_defaults(func=_cmd_audit)
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
    q.set_defaults(func=_cmd_query)
    i = sub.add_parser("info", help="summarise a release")
    i.add_argument("release")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.set_defaults(func=_cmd_info)
    lc = sub.add_parser("license", help="normalise licence spellings (names, codes, URLs, flickr:<id>) and check a policy")
    lc.add_argument("text", nargs="+", help='e.g. "CC BY-SA 3.0 de", "Attribution License", flickr:4, a CC URL')
    lc.add_argument("--version", default=None, help="licence version given beside the name (Openverse)")
    lc.add_argument("--url", default=None, help="licence URL given beside the name")
    lc.add_argument("--policy", default="cc-by", choices=["cc-by", "by-or-public-domain", "custom"])
    lc.add_argument("--allow", action="append", default=[], help="registry id to allow (repeatable)")
    lc.add_argument("--deny", action="append", default=[], help="registry id to deny (repeatable)")
    lc.add_argument("--json", action="store_true", help="machine-readable output")
    lc.set_defaults(func=_cmd_license)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: rerun the same command to resume; finished work units are kept")
        return 130


if __name__ == "__main__":
    sys.exit(main())

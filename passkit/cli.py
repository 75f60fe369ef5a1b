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

        try:
            result = build(spec, workers=args.workers, on_unit=on_unit, on_shard=on_shard,
                           executor=args.executor, address=args.address, retry_failed=args.retry_failed)
        except ExecutorError as e:
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
    from passkit.audit import audit

    report = audit(Path(args.release))
    if args.json:
        out.print_json(json.dumps(report.to_dict()))
    else:
        for f in report.findings:
            where = " ".join(x for x in (f.shard, f.key) if x)
            out.print(f"[red]FAIL[/] {f.code}: {where + ': ' if where else ''}{f.message}", highlight=False)
        s = report.stats
        verdict = "[green]OK[/]" if report.ok else f"[red]{len(report.findings)} finding(s)[/]"
        out.print(f"audit {args.release}: {verdict} — {s.get('shards', 0)} shards, "
                  f"{s.get('samples', 0)} samples checked in {s.get('seconds', 0):.1f}s", highlight=False)
    return 0 if report.ok else 1


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
    a.set_defaults(func=_cmd_audit)
    i = sub.add_parser("info", help="summarise a release")
    i.add_argument("release")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.set_defaults(func=_cmd_info)
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

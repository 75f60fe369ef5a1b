"""The audit report as one self-contained HTML page (release/templates/audit.html.j2)."""

from __future__ import annotations

from pathlib import Path

from passkit.audit.findings import CODES, AuditReport


def render_html(report: AuditReport) -> str:
    """The audit report as one self-contained HTML page."""
    from passkit.release.templates import render

    return render("audit.html.j2", r=report, d=report.to_dict(), codes=CODES)


def write_html(report: AuditReport, path: Path) -> None:
    Path(path).write_text(render_html(report), encoding="utf-8")

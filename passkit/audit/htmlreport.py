"""The audit report as one self-contained HTML page (release/templates/audit.html.j2).

A sampled audit must not read as a verified release: its page opens with a banner saying what
was checked, and its "no finding" line speaks of the sampled shards only.
"""

from __future__ import annotations

from pathlib import Path

from markupsafe import escape

from passkit.audit.findings import CODES, AuditReport

_CLEAN = "no finding: the release matches its manifest and policy"


def render_html(report: AuditReport) -> str:
    """The audit report as one self-contained HTML page."""
    from passkit.release.templates import render

    page = render("audit.html.j2", r=report, d=report.to_dict(), codes=CODES)
    if report.complete:
        return page
    banner = (f'<section class="sampled"><h2 class="bad">Sampled audit — not a full verification</h2>'
              f"<p>{escape(report.scope())}</p></section>\n")
    page = page.replace("<main>\n", "<main>\n" + banner, 1)
    return page.replace(_CLEAN, "no finding in the sampled shards; the shards not read were only checked for their "
                                "size and sha256")


def write_html(report: AuditReport, path: Path) -> None:
    Path(path).write_text(render_html(report), encoding="utf-8")

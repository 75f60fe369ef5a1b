"""`--check-sources` takes no network permissions from the release it audits.

A stranger's release can name internal networks in its manifest (spec.fetch.allow_private) and point
its index at internal addresses; auditing it must not make the auditor's machine connect to them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from passkit import cli
from passkit.audit import audit
from tests.helpers.releases import load_manifest, save_manifest
from tests.helpers.staging import basic_items, png_bytes, staged_release

PAGE = '<html><body><a rel="license" href="{}">licence</a></body></html>'
LICENCE_URL = {"cc-by-4.0": "https://creativecommons.org/licenses/by/4.0/",
               "cc-by-2.0": "https://creativecommons.org/licenses/by/2.0/",
               "cc0-1.0": "https://creativecommons.org/publicdomain/zero/1.0/"}


@pytest.fixture
def hostile_release(tmp_path: Path, http_server) -> Path:
    """A release whose index points at the loopback server and whose manifest allows 127.0.0.0/8."""
    items = basic_items(3)
    rel = staged_release(tmp_path, items, url_base=http_server.base)
    for it in items:
        http_server.serve_bytes(f"/img/{it.source_id}.png", png_bytes(it.image), "image/png")
        http_server.serve_bytes(f"/photos/{it.source_id}", PAGE.format(LICENCE_URL[it.license]).encode(), "text/html")
    m = load_manifest(rel)
    m["spec"]["fetch"].update(allow_private=["127.0.0.0/8"], robots=False, retries=0)
    save_manifest(rel, m)
    return rel


def test_the_manifests_allow_private_is_not_taken(hostile_release: Path, http_server) -> None:
    report = audit(hostile_release, check_sources=3)
    assert http_server.hits == {}  # nothing connected: not the images, not robots.txt, not the pages
    unreachable = [w for w in report.warnings if w.code == "source_unreachable"]
    assert len(unreachable) == 3 and all("ssrf_loopback" in w.message for w in unreachable)
    (ignored,) = [w for w in report.warnings if w.code == "source_settings_ignored"]
    assert "127.0.0.0/8" in ignored.message and "private networks allowed: none" in ignored.message


def test_the_auditors_allow_private_flag_is_what_opens_a_network(hostile_release: Path, http_server, capsys) -> None:
    cli.main(["audit", str(hostile_release), "--check-sources", "3"])
    assert http_server.hits == {}
    assert "not the release's (private networks allowed: none)" in capsys.readouterr().out
    cli.main(["audit", str(hostile_release), "--check-sources", "3", "--allow-private", "127.0.0.1"])
    assert sum(n for p, n in http_server.hits.items() if p.startswith("/img/")) == 3
    assert "private networks allowed: 127.0.0.1" in capsys.readouterr().out


def test_a_bad_allow_private_or_count_is_a_usage_error(hostile_release: Path, capsys) -> None:
    assert cli.main(["audit", str(hostile_release), "--check-sources", "1", "--allow-private", "10.0.0.0/99"]) == 2
    assert capsys.readouterr().err.startswith("error: --allow-private: ")
    with pytest.raises(SystemExit) as e:  # argparse: usage and the error, exit 2
        cli.main(["audit", str(hostile_release), "--check-sources", "-1"])
    assert e.value.code == 2 and "negative" in capsys.readouterr().err


def test_findings_are_printed_as_text_not_markup(monkeypatch, capsys, tmp_path: Path) -> None:
    """A finding quotes the release (keys, URLs): rich markup in it must not become links or styles."""
    from rich.console import Console

    import passkit.audit as audit_mod
    from passkit.audit import AuditReport, Finding

    hostile = "[link=https://evil.example]click[/link] [blink]x[/blink] [/]"
    report = AuditReport(tmp_path, findings=[Finding("license_unknown", hostile, key="k[bold]")],
                         warnings=[Finding("source_unreachable", hostile)])
    monkeypatch.setattr(audit_mod, "audit", lambda *a, **k: report)
    monkeypatch.setattr(cli, "out", Console(width=1000))  # no wrapping
    assert cli.main(["audit", str(tmp_path / "[red]rel")]) == 1
    out = capsys.readouterr().out
    assert out.count(hostile) == 2 and "k[bold]" in out and "[red]rel" in out

"""One list of rejection reasons: every reason passkit can record is registered in passkit.reasons and
documented in the README's table, and the table lists nothing else.

The reasons are found in the source, not in a hand-kept list: a parse (`ast`) of every module for the
places a reason is written (the carriers' reason argument, a source's (reason, detail) error pair,
a `"reason": ...` row field, a `reason = ...` assignment), so a new reason written anywhere fails
here until it is registered and documented.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from passkit import images, licenses, reasons
from passkit.fetch import http
from passkit.reasons import REASONS, Rejection, lookup
from passkit.records import Stage
from passkit.release.curate import STAGE_ORDER
from tests.helpers import ROOT

PACKAGE = ROOT / "passkit"

# Callables that take a reason, by name, and the position of the reason argument. Subclasses of
# Rejection are found in the source and added (reason first).
CARRIERS = {
    "reject": 1,  # records.Decision.reject(stage, reason, detail)
    "Decision": 2,  # records.Decision(status, stage, reason, detail, scores)
    "Outcome": 1,  # release.curate.Outcome(stage, reason)
    "bad": 2, "_bad": 2,  # sources.yfcc100m: a malformed line (n, query, reason, detail)
    "QualityVerdict": 0,  # filters.quality
    "Rejection": 0,
}
SNAKE = re.compile(r"[a-z][a-z0-9_]*(<\w+>[a-z0-9_]*)*\Z")


def _name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _strings(node: ast.expr | None) -> list[str]:
    """The reason strings an expression can take; an f-string's fields become <name> placeholders
    (f"http_{r.status}" -> http_<status>). Values passed through from elsewhere give none."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.JoinedStr):
        parts = []
        for v in node.values:
            if isinstance(v, ast.Constant):
                parts.append(str(v.value))
            else:
                assert isinstance(v, ast.FormattedValue)
                parts.append(f"<{_name(v.value) or 'value'}>")
        return ["".join(parts)]
    if isinstance(node, ast.BoolOp):
        return [s for v in node.values for s in _strings(v)]
    if isinstance(node, ast.IfExp):
        return _strings(node.body) + _strings(node.orelse)
    return []


def _pair(node: ast.expr | None) -> list[str]:
    """The reason of a (reason, detail) pair literal."""
    if isinstance(node, ast.Tuple) and len(node.elts) == 2:
        first = node.elts[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str) and SNAKE.match(first.value):
            return [first.value]
    return []


def rejection_classes(trees: dict[Path, ast.Module]) -> set[str]:
    """Names of the classes that derive from Rejection, directly or not."""
    found = {"Rejection"}
    while True:
        more = {
            n.name for tree in trees.values() for n in ast.walk(tree)
            if isinstance(n, ast.ClassDef) and any(_name(b) in found for b in n.bases)
        } - found
        if not more:
            return found
        found |= more


def scan(trees: dict[Path, ast.Module]) -> dict[str, set[str]]:
    """Reason -> where it is written ("path:line")."""
    carriers = dict(CARRIERS)
    carriers.update({name: 0 for name in rejection_classes(trees)})
    out: dict[str, set[str]] = {}

    def add(found: list[str], path: Path, node: ast.AST) -> None:
        where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        for s in found:
            out.setdefault(s, set()).add(f"{where}:{getattr(node, 'lineno', 0)}")

    for path, tree in trees.items():
        in_sources = "sources" in path.parts
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                pos = carriers.get(_name(node.func) or "")
                if pos is not None and len(node.args) > pos:
                    add(_strings(node.args[pos]), path, node)
                for kw in node.keywords:
                    if kw.arg == "reason" and pos is not None:
                        add(_strings(kw.value), path, node)
                    elif kw.arg == "error":  # Candidate(..., error=(reason, detail))
                        add(_pair(kw.value), path, node)
            elif isinstance(node, ast.Dict):  # a ledger or release row: {"reason": ...}
                for k, v in zip(node.keys, node.values, strict=True):
                    if isinstance(k, ast.Constant) and k.value == "reason":
                        add(_strings(v), path, node)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(isinstance(t, ast.Name) and t.id == "reason" for t in targets):
                    add(_strings(node.value), path, node)
                if in_sources:  # err = (reason, detail)
                    add(_pair(node.value), path, node)
            elif isinstance(node, (ast.Return, ast.Yield)):
                value = node.value
                if isinstance(value, ast.Tuple) and len(value.elts) == 2 and in_sources:
                    add(_pair(value.elts[1]), path, node)  # yield n, (reason, detail)
                if in_sources or (path.name == "licenses.py"):  # licenses.gate: return reason, detail
                    add(_pair(value), path, node)
    return out


def _parse(paths: list[Path]) -> dict[Path, ast.Module]:
    return {p: ast.parse(p.read_text(encoding="utf-8"), str(p)) for p in paths}


def _registered(reason: str) -> bool:
    """A reason written in the source is registered: as itself, or as a family member
    (http_404 -> http_<status>), or a template whose every value must be (ssrf_<why>)."""
    if reason in REASONS or lookup(reason) is not None:
        return True
    if "<" in reason:
        pattern = re.compile(re.sub(r"<\w+>", r"[a-z0-9_]+", re.escape(reason)) + r"\Z")
        return any(pattern.match(k) for k in REASONS)
    return False


def _readme_table() -> dict[str, list[str]]:
    """The README's table of rejection reasons: reason -> its other cells."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    start = lines.index("| reason | stage | transient | meaning |")
    rows: dict[str, list[str]] = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        m = re.match(r"\|\s*`([^`]+)`\s*\|(.*)\|\s*$", line)
        assert m, f"README: not a row of the reasons table: {line!r}"
        assert m.group(1) not in rows, f"README: {m.group(1)} listed twice"
        rows[m.group(1)] = [c.strip() for c in m.group(2).split("|")]
    return rows


@pytest.fixture(scope="module")
def found() -> dict[str, set[str]]:
    return scan(_parse(sorted(PACKAGE.rglob("*.py"))))


def test_the_scan_finds_the_reasons_of_every_stage(found):
    for reason in ("license_not_allowed", "duplicate_url", "http_<status>", "ssrf_<why>", "too_small", "people",
                   "review", "pending_review", "blank", "single_colour", "near_eval_set", "near_duplicate",
                   "creator_cap", "takedown", "wrong_column_count", "missing_sidecar", "fetch_error"):
        assert reason in found, reason


def test_every_reason_written_in_passkit_is_registered(found):
    missing = {r: sorted(w) for r, w in found.items() if not _registered(r)}
    assert not missing, f"register these in passkit.reasons.REASONS: {missing}"


def test_every_registered_reason_is_written_somewhere(found):
    """No stale entries: each registered reason is produced by some stage (a template such as
    ssrf_<why> in the source covers its registered values)."""
    templates = [re.compile(re.sub(r"<\w+>", r"[a-z0-9_]+", re.escape(r)) + r"\Z") for r in found if "<" in r]
    stale = [k for k in REASONS if k not in found and not any(t.match(k) for t in templates)]
    assert not stale, f"registered but produced nowhere: {stale}"


def test_an_unregistered_reason_fails_the_scan(tmp_path):
    bogus = tmp_path / "passkit" / "sources" / "bogus.py"
    bogus.parent.mkdir(parents=True)
    bogus.write_text(
        "from passkit.images import ImageReject\n"
        "class Odd(ImageReject):\n    pass\n"
        "def f(n):\n"
        "    raise Odd('bogus_one', 'x')\n"
        "def g(stage):\n"
        "    return Decision.reject(stage, f'bogus_{n}', 'x'), Candidate('s', 'i', '', error=('bogus_two', 'y'))\n"
        "def h():\n"
        "    yield 1, ('bogus_three', f'{1}')\n"
    )
    trees = _parse(sorted(PACKAGE.rglob("*.py")))
    trees[bogus] = ast.parse(bogus.read_text())
    new = scan(trees)
    assert {"bogus_one", "bogus_<n>", "bogus_two", "bogus_three"} <= set(new)
    assert not any(_registered(r) for r in ("bogus_one", "bogus_<n>", "bogus_two", "bogus_three"))


def test_the_readme_documents_exactly_the_registered_reasons():
    table = _readme_table()
    assert set(table) == set(REASONS), (
        f"README table: missing {sorted(set(REASONS) - set(table))}, unknown {sorted(set(table) - set(REASONS))}"
    )
    for reason, cells in table.items():
        stages = ", ".join(str(s) for s in REASONS[reason].stages)
        assert cells[0] == stages, f"{reason}: README says stage {cells[0]!r}, the registry {stages!r}"


def test_every_stage_has_reasons_and_the_funnel_follows_the_enum():
    used = {s for r in REASONS.values() for s in r.stages}
    assert used == set(Stage)
    funnel = ("source", "license", "fetch", "image", "people", "quality", "decontamination", "dedup",
              "creator_cap", "takedown")
    assert tuple(str(s) for s in Stage) == funnel
    assert funnel == STAGE_ORDER


def test_the_carriers_are_rejections():
    for cls in (images.ImageReject, licenses.LicenseError, http._Fail):
        assert issubclass(cls, Rejection)
    assert issubclass(licenses.LicenseError, ValueError)  # spec validation still reports it as one
    e = images.ImageReject("too_small", "10x10")
    assert (e.reason, e.detail, e.transient, str(e)) == ("too_small", "10x10", False, "too_small: 10x10")
    f = http._Fail("timeout", "slow", transient=True, retry_after=2.0)
    assert (f.reason, f.detail, f.transient, f.retry_after) == ("timeout", "slow", True, 2.0)
    assert reasons.lookup("http_503") is REASONS["http_<status>"]
    assert reasons.lookup("no_such_reason") is None

"""Escaping for each format a release's documents are written in: Markdown and CSV.

Titles, creators and providers come from strangers. The licence gate has already decoded their HTML
entities and removed control and bidirectional characters; what is left is plain text, and each
writer escapes it for its own format, once, at the moment it writes it (HTML: the templates'
autoescaping; Markdown and CSV: here). Ordinary text comes out unchanged wherever it can, so a
release of ordinary metadata keeps its bytes.
"""

from __future__ import annotations

import csv
import io
import re
from typing import Any

# Markdown that could make text into markup: backslash escapes, code spans, emphasis, links and images
# ([...](...)), raw HTML and autolinks (<...>), table cells (|), and character references (&lt; would
# render as <: a "&" is escaped only where it starts one, so "Tom & Jerry" stays as it is).
_MD_SPECIAL = re.compile(r"[\\`*_\[\]<>|]|&(?=#?[0-9A-Za-z]+;)")
# A line break inside a field would end its list item or table row and start a block of its own (a
# heading, raw HTML, a table): any control or separator character becomes a space.
_MD_BREAKS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def markdown_text(value: Any) -> str:
    """`value` as Markdown that renders as exactly this text (None: empty), on one line."""
    s = _MD_BREAKS.sub(" ", "" if value is None else str(value))
    return _MD_SPECIAL.sub(lambda m: "\\" + m.group(0), s)


# CSV injection: spreadsheet programs read a cell starting with =, +, -, @ (also after spaces), a tab
# or a carriage return as a formula. OWASP's advice: start such a cell with a single quote, which the
# spreadsheet shows as text. A cell starting with quotes before such a character gets one more, so the
# reader can always tell an added quote from one in the data (csv_value inverts csv_cell exactly).
_FORMULA = re.compile(r"'*\s*[=+\-@\t\r]")
FORMULA_PREFIX = "'"
# The longest cell attribution.csv is written with: Python's csv default field limit, which the audit
# reads it with. The licence gate caps every text field far below it; a longer cell (an image URL, or
# staging made by an older passkit) is cut, so the file stays readable and the audit reports the cut.
CSV_FIELD_LIMIT = 131072
_CUT = "\u2026"


def csv_cell(value: Any) -> str:
    """`value` as an attribution.csv cell: text, with FORMULA_PREFIX before what a spreadsheet would run."""
    s = "" if value is None else str(value)
    if len(s) > CSV_FIELD_LIMIT - len(FORMULA_PREFIX):
        s = s[: CSV_FIELD_LIMIT - len(FORMULA_PREFIX) - len(_CUT)] + _CUT
    return FORMULA_PREFIX + s if _FORMULA.match(s) else s


def csv_value(cell: str) -> str:
    """The text a cell written by `csv_cell` holds (its formula prefix removed)."""
    return cell[1:] if cell.startswith(FORMULA_PREFIX) and _FORMULA.match(cell, 1) else cell


def is_formula(value: Any) -> bool:
    """Whether `csv_cell` writes `value` with a FORMULA_PREFIX."""
    return value is not None and _FORMULA.match(str(value)) is not None


def write_csv(path: Any, columns: list[str], rows: list[dict[str, Any]]) -> None:
    """Rows as CSV lines ending in "\n", every cell through `csv_cell`.

    csv quotes a cell only for the characters of its line terminator, so with "\n" a cell holding a
    lone carriage return would be written bare and read back as two records. Each row is formatted
    with "\r\n" (quoting cells with either character) and written with "\n": ordinary rows come out
    exactly as a "\n" writer makes them."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    with open(path, "w", newline="", encoding="utf-8") as f:
        for values in [columns, *([csv_cell(r.get(c) or "") for c in columns] for r in rows)]:
            buf.seek(0)
            buf.truncate()
            w.writerow(values)
            f.write(buf.getvalue()[:-2] + "\n")


def read_csv(path: Any) -> list[dict[str, str]]:
    """attribution.csv's rows as the values written (formula prefixes removed).

    Raises csv.Error (a cell over the limit, bad quoting) and UnicodeDecodeError like csv does."""
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: csv_value(v) if isinstance(v, str) else v for k, v in r.items()} for r in csv.DictReader(f)]

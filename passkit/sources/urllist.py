"""A list of image URLs with licence and attribution columns, as a source.

Reads csv, tsv, jsonl or parquet, plain or compressed (.gz, .bz2, .xz, .zst), from a local path or
any fsspec URL, one row at a time: a list of millions of rows is never held in memory. Column names
default to the candidate field names (id, url, license, license_version, license_url, title, creator,
creator_url, landing_url, provider) and `columns` maps the ones named differently.

A row that cannot be read (wrong number of fields, a line the CSV reader cannot split, bytes that
are not UTF-8, no URL, a URL that is not http(s), a JSON line that is not an object) becomes a
candidate with `error` set and source id `line:<n>`, so the unit rejects it with that reason and the
build goes on. A CSV/TSV row is one line: a quoted field cannot span lines, so a stray quote costs its
own row (`bad_csv_row`) and never swallows the rows after it. Licences are not judged here: an
unknown one is refused by the licence gate, with its reason, like any other.

What stops the whole list (a missing file, one that is not UTF-8 text, a header without the URL
column) is an `InputError`, found by `check()` when the source opens, before the crawl starts.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import lzma
import re
import zlib
from collections.abc import Iterator
from typing import IO, Any

from passkit.config import InputError
from passkit.records import Candidate
from passkit.sources.urllist_spec import COMPRESSIONS, URLLIST_FIELDS, UrlListSourceSpec, detect_format

__all__ = ["COMPRESSIONS", "UrlListSource", "detect_format", "open_binary", "open_urllist"]

_SURROGATE = re.compile("[\udc80-\udcff]")
FIELD_LIMIT = 16 * 1024 * 1024
csv.field_size_limit(FIELD_LIMIT)
# What reading a list can raise besides a row's own faults: I/O, truncated or corrupt compression,
# a Parquet file that does not parse (pyarrow's errors are ValueErrors).
_READ_ERRORS = (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError)
# UTF-16 and UTF-32 byte order marks (the UTF-32 LE one starts like UTF-16 LE's)
_WIDE_BOMS = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")

Row = tuple[int, dict[str, Any] | tuple[str, str]]


@contextlib.contextmanager
def open_binary(path: str) -> Iterator[IO[bytes]]:
    """A binary stream of `path` (local or fsspec URL), decompressed according to its suffix."""
    import fsspec

    try:
        of = fsspec.open(path, "rb", compression="infer")
        f = of.open()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file; fix source.paths in the spec (relative paths are taken "
                         "from the folder passkit runs in)") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder; source.paths names list files") from None
    except PermissionError:
        raise InputError(f"{path}: not readable (permission denied); check its permissions") from None
    try:
        yield f
    finally:
        f.close()


def _not_utf8_text(path: str, first: bytes) -> None:
    """Refuse a list in UTF-16 or UTF-32, told by its first line: read as UTF-8 every row would be
    garbage, so it is one clear error instead of a million rejected rows."""
    if first.startswith(_WIDE_BOMS) or b"\x00" in first:
        raise InputError(f"{path}: looks like UTF-16 or UTF-32 text (NUL bytes or a byte order mark); passkit "
                         "reads UTF-8: convert it, e.g. iconv -f UTF-16 -t UTF-8 <file> > <file>.utf8.csv")


def _text(v: Any) -> str | None:
    if v is None:
        return None
    s = str(v).strip()
    return s or None


class _OneLine:
    """The CSV reader's input, one physical line at a time. The reader asks for a second line only
    when a quoted field is still open at the end of the first: that is how a stray quote is caught
    before it swallows the rows after it."""

    def __init__(self) -> None:
        self.line = ""
        self.asked = 0

    def feed(self, line: str) -> None:
        self.line, self.asked = line, 0

    def __iter__(self) -> _OneLine:
        return self

    def __next__(self) -> str:
        self.asked += 1
        if self.asked > 1:
            raise StopIteration
        return self.line


class UrlListSource:
    name = "urllist"

    def __init__(self, spec: UrlListSourceSpec) -> None:
        self.spec = spec
        self.cols = {f: spec.columns.get(f, f) for f in URLLIST_FIELDS}
        self.stats: dict[str, int] = {"rows": 0, "malformed": 0}

    # -- row readers: (row number, mapping or (reason, detail))

    def _lines(self, path: str, f: IO[bytes]) -> Iterator[tuple[int, str]]:
        """(line number, text without its line end); bytes that are not UTF-8 are kept as surrogates,
        so the row they are in is rejected (bad_encoding) and the others are read."""
        for n, raw in enumerate(f, 1):
            if n == 1:
                _not_utf8_text(path, raw)
            yield n, raw.rstrip(b"\r\n").decode("utf-8", errors="surrogateescape")

    def _csv(self, path: str, f: IO[bytes], delimiter: str) -> Iterator[Row]:
        feeder = _OneLine()
        reader = csv.reader(feeder, delimiter=delimiter)

        def split(line: str) -> list[str] | str:
            """The line's fields, or why it cannot be split on its own."""
            feeder.feed(line)
            try:
                fields = next(reader)
            except csv.Error as e:
                return f"the line cannot be split: {e}"
            if feeder.asked > 1:
                return "a quote opens a field that does not close on this line (a stray quote?)"
            return fields

        lines = self._lines(path, f)
        first = next(lines, None)
        if first is None:
            return
        header = split(first[1])
        if isinstance(header, str):
            raise InputError(f"{path}: the header line cannot be read: {header}; fix the file's first line")
        header = [h.strip().lstrip("\ufeff") for h in header]
        if self.cols["url"] not in header:
            raise InputError(
                f"{path}: no column {self.cols['url']!r} for the image URL; columns are {', '.join(header)}. "
                "Map it in the spec: columns: {url: <column>}"
            )
        for n, line in lines:
            if not line.strip():
                continue
            row = split(line)
            if isinstance(row, str):
                yield n, ("bad_csv_row", row)
                continue
            if len(row) != len(header):
                yield n, ("wrong_column_count", f"{len(row)} fields, the header has {len(header)}")
                continue
            yield n, dict(zip(header, row, strict=True))

    def _jsonl(self, path: str, f: IO[bytes]) -> Iterator[Row]:
        for n, raw in enumerate(f, 1):
            if n == 1:
                _not_utf8_text(path, raw)
                raw = raw.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte order mark is not part of the JSON
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield n, ("bad_encoding", f"not UTF-8 at byte {e.start}")
                continue
            try:
                obj = json.loads(line)
            except ValueError as e:
                yield n, ("bad_json", str(e)[:200])
                continue
            if not isinstance(obj, dict):
                yield n, ("bad_row", f"a JSON {type(obj).__name__}, not an object")
                continue
            yield n, obj

    def _parquet(self, path: str, f: IO[bytes]) -> Iterator[Row]:
        from passkit.parquetio import open_parquet

        pf = open_parquet(f)
        names = set(pf.schema_arrow.names)
        if self.cols["url"] not in names:
            raise InputError(f"{path}: no column {self.cols['url']!r}; columns are {', '.join(sorted(names))}. "
                             "Map it in the spec: columns: {url: <column>}")
        wanted = [c for c in self.cols.values() if c in names]
        n = 0
        for batch in pf.iter_batches(batch_size=4096, columns=wanted):
            for row in batch.to_pylist():
                n += 1
                yield n, row

    def _rows(self, path: str) -> Iterator[Row]:
        fmt = self.spec.format if self.spec.format != "auto" else detect_format(path)
        with open_binary(path) as f:
            if fmt == "parquet":
                yield from self._parquet(path, f if f.seekable() else io.BytesIO(f.read()))
            elif fmt == "jsonl":
                yield from self._jsonl(path, f)
            else:
                yield from self._csv(path, f, "," if fmt == "csv" else "\t")

    def _read(self, path: str) -> Iterator[Row]:
        """_rows, with a file that breaks off (truncated or corrupt compression, I/O errors) as an
        InputError that names the last row read: rows after it would otherwise go missing silently."""
        n = 0
        try:
            for n, row in self._rows(path):
                yield n, row
        except InputError:
            raise
        except _READ_ERRORS as e:
            where = f"after row {n}" if n else "at its start"
            raise InputError(f"{path}: cannot be read {where} ({type(e).__name__}: {str(e)[:200]}); fix or "
                             "replace the file and rerun: finished work units are kept") from None

    def check(self) -> None:
        """Open every file and read its header now: a missing or unreadable file, one in UTF-16, or a
        header without the URL column stops the build before the crawl rather than in the middle."""
        for path in self.spec.paths:
            rows = self._read(path)
            try:
                next(rows, None)
            finally:
                rows.close()

    # -- candidates

    def _candidate(self, sid_prefix: str, n: int, row: dict[str, Any] | tuple[str, str], query: str) -> Candidate:
        line_id = f"{sid_prefix}line:{n}"
        if isinstance(row, tuple):
            return Candidate(self.name, line_id, "", query=query, extra={"line": n}, error=row)
        for k, v in row.items():
            if isinstance(v, str) and _SURROGATE.search(v):
                return Candidate(self.name, line_id, "", query=query, extra={"line": n},
                                 error=("bad_encoding", f"column {k!r} is not valid UTF-8"))
        get = {f: _text(row.get(c)) for f, c in self.cols.items()}
        url = get["url"]
        if url is None:
            return Candidate(self.name, line_id, "", query=query, extra={"line": n},
                             error=("missing_url", f"column {self.cols['url']!r} is empty"))
        if not url.lower().startswith(("http://", "https://")):
            return Candidate(self.name, line_id, url, query=query, extra={"line": n},
                             error=("bad_url", f"not an http(s) URL: {url[:200]!r}"))
        has_id = self.cols["id"] in row
        if has_id and get["id"] is None:
            return Candidate(self.name, line_id, url, query=query, extra={"line": n},
                             error=("missing_id", f"column {self.cols['id']!r} is empty"))
        return Candidate(
            source=self.name,
            source_id=get["id"] or url,
            url=url,
            license=get["license"],
            license_version=get["license_version"],
            license_url=get["license_url"],
            title=get["title"],
            creator=get["creator"],
            creator_url=get["creator_url"],
            landing_url=get["landing_url"],
            provider=get["provider"] or self.spec.provider,
            query=query,
            extra={"line": n},
        )

    def candidates(self) -> Iterator[Candidate]:
        many = len(self.spec.paths) > 1
        for i, path in enumerate(self.spec.paths):
            prefix = f"{i}:" if many else ""
            for n, row in self._read(path):
                self.stats["rows"] += 1
                cand = self._candidate(prefix, n, row, path)
                if cand.error is not None:
                    self.stats["malformed"] += 1
                yield cand

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "urllist",
            "paths": list(self.spec.paths),
            "format": self.spec.format,
            "columns": dict(self.spec.columns),
            "stats": self.stats,
        }


@contextlib.contextmanager
def open_urllist(spec: UrlListSourceSpec) -> Iterator[UrlListSource]:
    src = UrlListSource(spec)
    src.check()
    yield src

"""A list of image URLs with licence and attribution columns, as a source.

Reads csv, tsv, jsonl or parquet, plain or compressed (.gz, .bz2, .xz, .zst), from a local path or
any fsspec URL, one row at a time: a list of millions of rows is never held in memory. Column names
default to the candidate field names (id, url, license, license_version, license_url, title, creator,
creator_url, landing_url, provider) and `columns` maps the ones named differently.

A row that cannot be read (wrong number of fields, bytes that are not UTF-8, no URL, a URL that is
not http(s), a JSON line that is not an object) becomes a candidate with `error` set and source id
`line:<n>`, so the unit rejects it with that reason and the build goes on. Licences are not judged
here: an unknown one is refused by the licence gate, with its reason, like any other.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import IO, Any

from passkit.records import Candidate
from passkit.sources.urllist_spec import URLLIST_FIELDS, UrlListSourceSpec

COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst", ".zstd")
_SURROGATE = re.compile("[\udc80-\udcff]")
csv.field_size_limit(16 * 1024 * 1024)


@contextlib.contextmanager
def open_binary(path: str) -> Iterator[IO[bytes]]:
    """A binary stream of `path` (local or fsspec URL), decompressed according to its suffix."""
    import fsspec

    try:
        of = fsspec.open(path, "rb", compression="infer")
        f = of.open()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    try:
        yield f
    finally:
        f.close()


def detect_format(path: str) -> str:
    name = PurePosixPath(path.split("?")[0]).name.lower()
    for c in COMPRESSIONS:
        name = name.removesuffix(c)
    for suffix, fmt in ((".csv", "csv"), (".tsv", "tsv"), (".tab", "tsv"), (".jsonl", "jsonl"),
                        (".ndjson", "jsonl"), (".json", "jsonl"), (".parquet", "parquet"), (".pq", "parquet")):
        if name.endswith(suffix):
            return fmt
    raise ValueError(f"{path}: cannot tell the format from the name; set format: csv|tsv|jsonl|parquet")


def _text(v: Any) -> str | None:
    if v is None:
        return None
    s = str(v).strip()
    return s or None


class UrlListSource:
    name = "urllist"

    def __init__(self, spec: UrlListSourceSpec) -> None:
        self.spec = spec
        self.cols = {f: spec.columns.get(f, f) for f in URLLIST_FIELDS}
        self.stats: dict[str, int] = {"rows": 0, "malformed": 0}

    # -- row readers: (row number, mapping or (reason, detail))

    def _lines(self, f: IO[bytes]) -> Iterator[str]:
        for raw in f:
            yield raw.decode("utf-8", errors="surrogateescape")

    def _csv(self, path: str, f: IO[bytes], delimiter: str) -> Iterator[tuple[int, dict[str, Any] | tuple[str, str]]]:
        reader = csv.reader(self._lines(f), delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            return
        header = [h.strip().lstrip("\ufeff") for h in header]
        if self.cols["url"] not in header:
            raise ValueError(
                f"{path}: no column {self.cols['url']!r} for the image URL; columns are {', '.join(header)}. "
                "Map it in the spec: columns: {url: <column>}"
            )
        for row in reader:
            n = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != len(header):
                yield n, ("wrong_column_count", f"{len(row)} fields, the header has {len(header)}")
                continue
            yield n, dict(zip(header, row, strict=True))

    def _jsonl(self, f: IO[bytes]) -> Iterator[tuple[int, dict[str, Any] | tuple[str, str]]]:
        for n, raw in enumerate(f, 1):
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

    def _parquet(self, path: str, f: IO[bytes]) -> Iterator[tuple[int, dict[str, Any] | tuple[str, str]]]:
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(f)
        names = set(pf.schema_arrow.names)
        if self.cols["url"] not in names:
            raise ValueError(f"{path}: no column {self.cols['url']!r}; columns are {', '.join(sorted(names))}")
        wanted = [c for c in self.cols.values() if c in names]
        n = 0
        for batch in pf.iter_batches(batch_size=4096, columns=wanted):
            for row in batch.to_pylist():
                n += 1
                yield n, row

    def _rows(self, path: str) -> Iterator[tuple[int, dict[str, Any] | tuple[str, str]]]:
        fmt = self.spec.format if self.spec.format != "auto" else detect_format(path)
        with open_binary(path) as f:
            if fmt == "parquet":
                yield from self._parquet(path, f if f.seekable() else io.BytesIO(f.read()))
            elif fmt == "jsonl":
                yield from self._jsonl(f)
            else:
                yield from self._csv(path, f, "," if fmt == "csv" else "\t")

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
            for n, row in self._rows(path):
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
    yield UrlListSource(spec)

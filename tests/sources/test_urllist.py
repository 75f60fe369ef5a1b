"""URL-list reader (csv, tsv, jsonl, parquet, gzip, column mapping, malformed rows) and a small build
end to end: malformed rows end in rejected.parquet with their reasons, good rows are kept."""

from __future__ import annotations

import gzip
import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from passkit.config import parse_spec
from passkit.sources.urllist import UrlListSource
from passkit.sources.urllist_spec import UrlListSourceSpec

HEADER = "id,url,license,license_version,license_url,title,creator,landing_url\n"
GOOD = [
    ("a1", "http://h/a1.jpg", "by", "4.0", "", "Stones", "Ann", "http://h/p/a1"),
    ("a2", "http://h/a2.jpg", "", "", "https://creativecommons.org/licenses/by/2.0/", "Bark", "Bo", "http://h/p/a2"),
]


def _csv(rows, sep=",") -> str:
    return HEADER.replace(",", sep) + "".join(sep.join(r) + "\n" for r in rows)


def _ids(spec: UrlListSourceSpec) -> list[tuple[str, str | None]]:
    return [(c.source_id, c.error[0] if c.error else None) for c in UrlListSource(spec).candidates()]


def test_csv_tsv_jsonl_parquet_and_gzip(tmp_path):
    (tmp_path / "l.csv").write_text(_csv(GOOD))
    (tmp_path / "l.tsv.gz").write_bytes(gzip.compress(_csv(GOOD, "\t").encode()))
    keys = HEADER.strip().split(",")
    (tmp_path / "l.jsonl").write_text("".join(json.dumps(dict(zip(keys, r, strict=True))) + "\n" for r in GOOD))
    pq.write_table(pa.Table.from_pylist([dict(zip(keys, r, strict=True)) for r in GOOD]), tmp_path / "l.parquet")
    want = [("a1", None), ("a2", None)]
    for name in ("l.csv", "l.tsv.gz", "l.jsonl", "l.parquet"):
        assert _ids(UrlListSourceSpec(paths=[str(tmp_path / name)])) == want, name
    c = next(UrlListSource(UrlListSourceSpec(paths=[str(tmp_path / "l.parquet")], provider="mine")).candidates())
    assert (c.source, c.url, c.license, c.license_version, c.title, c.creator, c.landing_url, c.provider) == (
        "urllist", "http://h/a1.jpg", "by", "4.0", "Stones", "Ann", "http://h/p/a1", "mine")
    assert c.query == str(tmp_path / "l.parquet") and c.extra["line"] == 1
    # fsspec URL, two files: ids of malformed rows stay unique across files
    both = UrlListSourceSpec(paths=[f"file://{tmp_path / 'l.csv'}", str(tmp_path / "l.jsonl")])
    assert len(_ids(both)) == 4


def test_column_mapping_and_spec(tmp_path):
    (tmp_path / "m.csv").write_text("image,lic,who,page\nhttp://h/x.jpg,CC BY 4.0,Cy,http://h/p/x\n")
    spec = parse_spec({"name": "u", "version": "1", "source": {
        "kind": "urllist", "paths": str(tmp_path / "m.csv"),
        "columns": {"url": "image", "license": "lic", "creator": "who", "landing_url": "page"}}}).source
    (c,) = UrlListSource(spec).candidates()
    assert (c.source_id, c.url, c.license, c.creator, c.landing_url) == (
        "http://h/x.jpg", "http://h/x.jpg", "CC BY 4.0", "Cy", "http://h/p/x")  # no id column: the URL is the id
    with pytest.raises(ValueError, match="no column 'url'"):
        list(UrlListSource(UrlListSourceSpec(paths=[str(tmp_path / "m.csv")])).candidates())
    with pytest.raises(ValueError, match="cannot tell the format"):
        list(UrlListSource(UrlListSourceSpec(paths=[str(tmp_path / "m.txt")])).candidates())


def _malformed_csv() -> bytes:
    lines = [HEADER.encode()]
    lines.append(b"g1,http://h/g1.jpg,by,4.0,,Good one,Ann,http://h/p/g1\n")  # line 2
    lines.append(b"w1,http://h/w1.jpg,by,4.0\n")  # 3: wrong column count
    lines.append("e1,http://h/e1.jpg,by,4.0,,Caf\xe9,Ann,http://h/p/e1\n".encode("latin-1"))  # 4: not UTF-8
    lines.append(b"m1,,by,4.0,,No url,Ann,http://h/p/m1\n")  # 5: missing URL
    lines.append(b"u1,http://h/u1.jpg,WTFPL,,,Unknown,Ann,http://h/p/u1\n")  # 6: unknown licence (gate)
    lines.append(b"f1,ftp://h/f1.jpg,by,4.0,,Ftp,Ann,http://h/p/f1\n")  # 7: not http(s)
    lines.append(b",http://h/n1.jpg,by,4.0,,No id,Ann,http://h/p/n1\n")  # 8: empty id
    lines.append(b"g2,http://h/g2.jpg,,,https://creativecommons.org/licenses/by/2.0/,Second,Bo,http://h/p/g2\n")
    return b"".join(lines)


def test_malformed_rows_have_reasons(tmp_path):
    (tmp_path / "bad.csv").write_bytes(_malformed_csv())
    assert _ids(UrlListSourceSpec(paths=[str(tmp_path / "bad.csv")])) == [
        ("g1", None), ("line:3", "wrong_column_count"), ("line:4", "bad_encoding"), ("line:5", "missing_url"),
        ("u1", None), ("line:7", "bad_url"), ("line:8", "missing_id"), ("g2", None)]
    (tmp_path / "bad.jsonl").write_bytes(b'{"url": "http://h/1.jpg", "id": "1"}\n[1]\n{nope\n\xff\xfe\n\n'
                                         b'{"id": "2"}\n')
    assert _ids(UrlListSourceSpec(paths=[str(tmp_path / "bad.jsonl")])) == [
        ("1", None), ("line:2", "bad_row"), ("line:3", "bad_json"), ("line:4", "bad_encoding"),
        ("line:6", "missing_url")]


def _jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:160, 0:200]
    img = np.stack([(x * 1.2 + seed * 40) % 255, (y * 1.5) % 255, rng.integers(0, 60, (160, 200))], -1)
    buf = io.BytesIO()
    Image.fromarray(img.astype(np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_build_end_to_end_records_malformed_rows(http_server, tmp_path):
    from passkit.build import build

    for name, seed in (("g1", 1), ("g2", 2), ("u1", 3)):
        http_server.serve_bytes(f"/{name}.jpg", _jpeg(seed))
    csv_bytes = _malformed_csv().replace(b"http://h/", http_server.base.encode() + b"/")
    (tmp_path / "list.csv").write_bytes(csv_bytes)
    spec = parse_spec({
        "name": "ul", "version": "1",
        "source": {"kind": "urllist", "paths": [str(tmp_path / "list.csv")]},
        "license": {"policy": "cc-by"},
        "fetch": {"threads": 2, "retries": 0, "robots": False, "allow_private": ["127.0.0.1"]},
        "people": {"enabled": False},
        "work": {"unit_size": 3, "workers": 1},
    })
    res = build(spec, base=tmp_path)
    rel = spec.release_dir(tmp_path)
    kept = pq.read_table(rel / "index.parquet").to_pylist()
    rej = {r["source_id"]: (r["stage"], r["reason"], r["detail"]) for r in pq.read_table(rel / "rejected.parquet").to_pylist()}
    assert sorted(r["source_id"] for r in kept) == ["g1", "g2"]
    assert {k: v[:2] for k, v in rej.items()} == {
        "line:3": ("source", "wrong_column_count"), "line:4": ("source", "bad_encoding"),
        "line:5": ("source", "missing_url"), "u1": ("license", "license_unknown"),
        "line:7": ("source", "bad_url"), "line:8": ("source", "missing_id")}
    assert rej["line:3"][2] == "4 fields, the header has 8"
    assert res.progress.candidates == 8 and res.progress.kept == 2
    g2 = next(r for r in kept if r["source_id"] == "g2")
    assert g2["license"] == "cc-by-2.0" and g2["attribution"].startswith('"Second" by Bo is licensed under CC BY 2.0')
    assert http_server.hits.get("/u1.jpg") is None  # an unusable licence is never downloaded
    manifest = json.loads((rel / "manifest.json").read_text())
    assert manifest["counts"]["kept"] == 2


# ----------------------------------------------------------------------------- lines the CSV reader cannot split

# Recorded-style rows: spreadsheet exports with a title that opens a quote and never closes it.
STRAY = [
    HEADER.encode(),
    b'q1,http://h/q1.jpg,by,4.0,,"Sunset,Ann,http://h/p/q1\n',  # 2: the quote opens the title, never closes
    b"q2,http://h/q2.jpg,by,4.0,,Beach,Bo,http://h/p/q2\n",  # 3: was swallowed into q1's title
    b'q3,http://h/q3.jpg,by,4.0,,"Dunes, at dawn",Cy,http://h/p/q3\n',  # 4: a quoted comma, fine
    b'q4,http://h/q4.jpg,by,4.0,,"The ""Big"" One",Di,http://h/p/q4\r\n',  # 5: doubled quotes, CRLF, fine
    b'q5,http://h/q5.jpg,by,4.0,,Tree,Ed,"http://h/p/q5\n',  # 6: a stray quote in the last field
    b"q6,http://h/q6.jpg,by,4.0,,Lake,Fa,http://h/p/q6\n",  # 7
    b"q7,http://h/q7.jpg,by,4.0,,Fog\rBank,Gu,http://h/p/q7\n",  # 8: a bare carriage return mid-line
    b'q8,http://h/q8.jpg,by,4.0,,Rock",Ha,http://h/p/q8\n',  # 9: a quote inside a field is only a character
]


@pytest.mark.parametrize("sep", [",", "\t"])
def test_a_stray_quote_costs_its_own_row_only(tmp_path, sep):
    data = b"".join(STRAY).replace(b",", sep.encode()).replace(b'"Dunes\t at dawn"', b'"Dunes, at dawn"')
    path = tmp_path / ("stray.csv" if sep == "," else "stray.tsv")
    path.write_bytes(data)
    cands = list(UrlListSource(UrlListSourceSpec(paths=[str(path)])).candidates())
    assert [(c.source_id, c.error[0] if c.error else None) for c in cands] == [
        ("line:2", "bad_csv_row"), ("q2", None), ("q3", None), ("q4", None), ("line:6", "bad_csv_row"),
        ("q6", None), ("line:8", "bad_csv_row"), ("q8", None)]
    assert "quote" in cands[0].error[1] and "new-line" in cands[6].error[1]
    titles = {c.source_id: c.title for c in cands if not c.error}
    assert titles["q3"] == "Dunes, at dawn" and titles["q4"] == 'The "Big" One' and titles["q8"] == 'Rock"'
    assert [c.extra["line"] for c in cands] == [2, 3, 4, 5, 6, 7, 8, 9]


def test_inputs_that_stop_the_list_are_input_errors_before_any_row(tmp_path):
    from passkit.config import InputError
    from passkit.sources.urllist import open_urllist

    def opened(name: str, data: bytes | None = None) -> None:
        if data is not None:
            (tmp_path / name).write_bytes(data)
        with open_urllist(UrlListSourceSpec(paths=[str(tmp_path / "ok.csv"), str(tmp_path / name)])):
            pass

    (tmp_path / "ok.csv").write_text(_csv(GOOD))
    with pytest.raises(InputError, match="missing.csv: no such file; fix source.paths"):
        opened("missing.csv")
    with pytest.raises(InputError, match="UTF-16 or UTF-32.*iconv"):
        opened("wide.csv", _csv(GOOD).encode("utf-16"))
    with pytest.raises(InputError, match="UTF-16 or UTF-32"):
        opened("wide.jsonl", '{"url": "http://h/1.jpg"}\n'.encode("utf-16-le"))
    with pytest.raises(InputError, match="header line cannot be read: a quote opens"):
        opened("head.csv", b'id,"url,license\nx,http://h/x.jpg,by\n')
    with pytest.raises(InputError, match="no column 'url'"):
        opened("nourl.csv", b"id,link\nx,http://h/x.jpg\n")
    (tmp_path / "folder.csv").mkdir()
    with pytest.raises(InputError, match="folder.csv"):
        opened("folder.csv")
    with pytest.raises(ValueError, match="cannot tell the format from the name"):  # refused with the spec
        UrlListSourceSpec(paths=[str(tmp_path / "list.txt")])


def test_a_list_that_breaks_off_is_an_input_error_naming_the_last_row(tmp_path):
    from passkit.config import InputError

    whole = gzip.compress(_csv(GOOD * 400).encode())
    (tmp_path / "cut.csv.gz").write_bytes(whole[: len(whole) // 2])
    src = UrlListSource(UrlListSourceSpec(paths=[str(tmp_path / "cut.csv.gz")]))
    src.check()  # the header reads fine
    with pytest.raises(InputError, match=r"cut.csv.gz: cannot be read after row \d+ .*finished work units are kept"):
        list(src.candidates())

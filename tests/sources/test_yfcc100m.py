"""YFCC100M reader: the recorded lines, both layouts, videos, the per-creator cap, malformed rows, flat memory."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from passkit import licenses as L
from passkit.config import parse_spec
from passkit.sources import open_source
from passkit.sources.yfcc100m import COLUMNS, Yfcc100mSource
from passkit.sources.yfcc100m_spec import Yfcc100mSourceSpec
from tests.helpers import ROOT


def _sample(fixtures_dir: Path) -> Path:
    return fixtures_dir / "yfcc100m" / "yfcc100m_dataset_sample_23col_4lines.tsv"


def _row(i: int, user: str = "u@N00", lic: str = "by", marker: str = "0", **over: str) -> list[str]:
    names = {"by": "Attribution License", "by-nc": "Attribution-NonCommercial License",
             "by-sa": "Attribution-ShareAlike License"}
    cols = dict.fromkeys(COLUMNS, "")
    cols.update(photo_id=str(1000 + i), user_nsid=user, user_nickname="Some+One", title=f"Photo+{i}",
                page_url=f"http://www.flickr.com/photos/{user}/{1000 + i}/",
                download_url=f"http://farm1.staticflickr.com/1/{1000 + i}_abc.jpg",
                license_name=names[lic], license_url=f"http://creativecommons.org/licenses/{lic}/2.0/",
                extension_original="jpg", marker=marker)
    cols.update(over)
    return [cols[c] for c in COLUMNS]


def _write(path: Path, rows: list[list[str] | bytes], gz: bool = False) -> Path:
    data = b"".join(r if isinstance(r, bytes) else ("\t".join(r) + "\n").encode() for r in rows)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def test_recorded_lines(fixtures_dir):
    src = Yfcc100mSource(Yfcc100mSourceSpec(paths=[str(_sample(fixtures_dir))]))
    cands = list(src.candidates())
    assert [c.source_id for c in cands] == ["7088065", "343224206", "6325727670", "10642543105"]
    c = cands[2]
    assert c.title == "Sunlight through the morning fog"
    assert c.creator == "Indigo Skies Photography"  # '+' decoded
    assert c.creator_url == "https://www.flickr.com/photos/61048402@N08/"
    assert c.landing_url == "http://www.flickr.com/photos/61048402@N08/6325727670/"
    assert c.url == "http://farm7.staticflickr.com/6097/6325727670_5192fe3be9.jpg"
    assert "b&w" in c.extra["tags"]  # %26 decoded
    assert all(x.source == "yfcc100m" and x.query == _sample(fixtures_dir).name for x in cands)
    pol = L.policy("cc-by")
    outcome = {x.source_id: L.gate(x, pol) for x in cands}
    assert outcome["7088065"][0] == "license_not_allowed"  # BY-NC
    assert outcome["6325727670"][0] == "license_not_allowed"  # BY-NC-ND
    assert outcome["343224206"].license == "cc-by-2.0"
    assert outcome["10642543105"].sentence.startswith('"0601 Young man" by GSofV is licensed under CC BY 2.0')


def test_25_column_layout_and_gzip(fixtures_dir, tmp_path):
    lines = _sample(fixtures_dir).read_text().splitlines()
    p = tmp_path / "yfcc100m_dataset.gz"
    p.write_bytes(gzip.compress("".join(f"{i}\tdeadbeef{i}\t{x}\n" for i, x in enumerate(lines)).encode()))
    src = Yfcc100mSource(Yfcc100mSourceSpec(paths=[str(p)]))
    assert [c.source_id for c in src.candidates()] == ["7088065", "343224206", "6325727670", "10642543105"]
    with pytest.raises(ValueError, match="23 or 25"):
        list(Yfcc100mSource(Yfcc100mSourceSpec(paths=[str(_write(tmp_path / "x.tsv", [b"a\tb\n"]))])).candidates())


def test_videos_cap_prefilter_and_malformed_rows(tmp_path):
    rows: list[list[str] | bytes] = [_row(i, user="a@N01") for i in range(5)]
    rows += [_row(10, user="b@N02", marker="1")]  # a video: skipped
    rows += [_row(11, user="b@N02", lic="by-nc")]  # pre-filtered when licenses: [by]
    rows += [_row(12, user="b@N02")[:20]]  # 20 columns
    rows += [("\t".join(_row(13, user="b@N02")).replace("Photo+13", "Photo\xff13") + "\n").encode("latin-1")]
    rows += [_row(14, user="b@N02", download_url="")]
    rows += [_row(15, user="b@N02", title="%FF%FE")]  # URL-encoded bytes that are not UTF-8
    rows += [_row(16, user="b@N02", marker="x")]
    rows += [_row(17, user="b@N02", license_name="Some+Licence", license_url="http://example.com/l")]
    path = _write(tmp_path / "d.tsv", rows)
    spec = Yfcc100mSourceSpec(paths=[str(path)], max_per_creator=3, licenses=["by"])
    src = Yfcc100mSource(spec)
    cands = list(src.candidates())
    errors = {c.source_id: c.error[0] for c in cands if c.error}
    assert errors == {
        "1003": "creator_cap", "1004": "creator_cap", "line:8": "wrong_column_count", "line:9": "bad_encoding",
        "line:10": "missing_url", "line:11": "bad_encoding", "line:12": "bad_marker",
    }
    ok = [c.source_id for c in cands if not c.error]
    assert ok == ["1000", "1001", "1002", "1017"]  # 1017: unknown licence is passed on for the gate to refuse
    assert L.gate(cands[-1], L.policy("cc-by"))[0] == "license_unknown"
    assert src.stats["videos"] == 1 and src.stats["license_prefilter"] == 1 and src.stats["creator_cap"] == 2
    assert len({c.key for c in cands}) == len(cands)  # malformed rows still have unique, stable keys


def test_spec_and_registry(tmp_path):
    spec = parse_spec({"name": "y", "version": "1", "source": {"kind": "yfcc100m", "paths": "x.tsv"}})
    assert spec.source.max_per_creator == 80 and spec.source.paths == ["x.tsv"]
    with pytest.raises(ValueError, match="neither a licence family"):
        Yfcc100mSourceSpec(paths=["x"], licenses=["cc-by-nc"])
    path = _write(tmp_path / "d.tsv", [_row(1)])
    with open_source(Yfcc100mSourceSpec(paths=[str(path)], limit=1)) as src:
        assert [c.source_id for c in src.candidates()] == ["1001"]
        assert src.describe()["stats"]["lines"] == 1


def test_pass_pipeline_spec_loads():
    from passkit.config import load_spec

    spec = load_spec(ROOT / "pipelines" / "pass-yfcc100m.yaml")
    assert spec.source.kind == "yfcc100m" and spec.source.max_per_creator == 80
    assert spec.license.policy == "cc-by" and spec.people.enabled
    from passkit.config import PeopleSpec

    assert spec.people.detectors == PeopleSpec().detectors  # the measured default, spelled out


_STREAM = textwrap.dedent(
    """
    import json, sys
    from passkit.sources.yfcc100m import Yfcc100mSource
    from passkit.sources.yfcc100m_spec import Yfcc100mSourceSpec

    def rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / 2**20

    path, checkpoints = sys.argv[1], [int(x) for x in sys.argv[2].split(",")]
    src = Yfcc100mSource(Yfcc100mSourceSpec(paths=[path], max_per_creator=80))
    marks = {}
    n = 0
    for c in src.candidates():
        n += 1
        if n in checkpoints:
            marks[n] = rss_mb()
    print(json.dumps({"n": n, "marks": marks, "stats": src.stats}))
    """
)


def write_synthetic(path: Path, rows: int, users: int = 5000) -> None:
    with path.open("w") as f:
        for i in range(rows):
            u = f"{i % users}@N0{i % 7}"
            f.write(f"{i}\t{u}\tuser+{i % users}\t2010-01-01 00:00:00.0\t1262304000\tCanon+EOS\tPhoto+number+{i}\t"
                    f"A+long+description+with+%C3%A9+and+more+text+{i}\tfoo,bar,baz\t\t1.0\t2.0\t16\t"
                    f"http://www.flickr.com/photos/{u}/{i}/\thttp://farm1.staticflickr.com/1/{i}_abc.jpg\t"
                    "Attribution License\thttp://creativecommons.org/licenses/by/2.0/\t1\t1\tabc\tabc\tjpg\t0\n")


def test_streaming_memory_is_flat(tmp_path):
    """300k rows stream through; RSS after 300k rows is within a few MB of RSS after 100k."""
    path = tmp_path / "yfcc.tsv"
    write_synthetic(path, 300_000)
    out = subprocess.run([sys.executable, "-c", _STREAM, str(path), "100000,300000"], capture_output=True,
                         text=True, check=True, cwd=ROOT, timeout=120)
    res = json.loads(out.stdout)
    assert res["n"] == 300_000 - 0 and res["stats"]["creator_cap"] == 0  # 60 rows per user < 80
    growth = res["marks"]["300000"] - res["marks"]["100000"]
    assert growth < 8, f"RSS grew {growth:.1f} MB between 100k and 300k rows"


def test_build_with_recorded_lines_and_malformed_rows(fixtures_dir, http_server, tmp_path):
    """The four recorded lines (image URLs pointed at 127.0.0.1) plus broken ones, built end to end."""
    import io

    import numpy as np
    import pyarrow.parquet as pq
    from PIL import Image

    from passkit.build import build

    lines = []
    for i, line in enumerate(_sample(fixtures_dir).read_text().splitlines()):
        cols = line.split("\t")
        buf = io.BytesIO()
        y, x = np.mgrid[0:100, 0:120]
        px = np.stack([(x * 2 + 50 * i) % 255, (y * 2) % 255, (x + y + 30 * i) % 255], -1).astype(np.uint8)
        Image.fromarray(px).save(buf, "JPEG", quality=90)
        cols[14] = http_server.serve_bytes(f"/{cols[0]}.jpg", buf.getvalue())
        lines.append("\t".join(cols))
    lines.append("\t".join(lines[1].split("\t")[:22]))  # line 5: 22 columns
    lines.append(lines[1].replace("343224206", "99").replace("Team+Muppet+Show", "Team%FF"))  # 6: bad encoding
    path = tmp_path / "yfcc100m_dataset"
    path.write_text("\n".join(lines) + "\n")
    spec = parse_spec({
        "name": "yf", "version": "1",
        "source": {"kind": "yfcc100m", "paths": [str(path)]},
        "fetch": {"robots": False, "allow_private": ["127.0.0.1"], "retries": 0},
        "people": {"enabled": False},  # the carte-de-visite portrait would go with people on
        "work": {"unit_size": 4, "workers": 1},
    })
    build(spec, base=tmp_path)
    rel = spec.release_dir(tmp_path)
    kept = pq.read_table(rel / "index.parquet").to_pylist()
    rej = {r["source_id"]: r["reason"] for r in pq.read_table(rel / "rejected.parquet").to_pylist()}
    assert sorted(r["source_id"] for r in kept) == ["10642543105", "343224206"]
    assert rej == {"7088065": "license_not_allowed", "6325727670": "license_not_allowed",
                   "line:5": "wrong_column_count", "line:6": "bad_encoding"}
    assert {r["license"] for r in kept} == {"cc-by-2.0"} and all(r["query"] == "yfcc100m_dataset" for r in kept)
    assert http_server.hits.get("/7088065.jpg") is None

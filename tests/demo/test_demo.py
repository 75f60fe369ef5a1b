"""The embedded demo catalog and the demo source, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import io
import json
import socket

import pytest
import requests
from PIL import Image

from passkit import licenses
from passkit.demo.catalog import BY_ID, CATALOG, EXPECTS, expected
from passkit.demo.server import DemoCatalog
from passkit.demo.source import DEMO_PORT, build_port
from passkit.records import Candidate
from passkit.sources import Source, UnknownSourceError, kinds, open_source
from passkit.sources.demo import DemoSourceSpec
from passkit.sources.openverse_format import iter_search, result_to_candidate
from tests.helpers import DATA

FIXTURES = DATA / "fixtures" / "openverse"


def _fixture(name: str) -> dict:
    # committed in tests/data: a missing file is a broken checkout, so it fails rather than skips
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture(scope="module")
def cat():
    with DemoCatalog() as c:
        yield c


@pytest.fixture(scope="module")
def http():
    with requests.Session() as s:
        yield s


def _search(http, cat, **params):
    r = http.get(cat.base_url + "/v1/images/", params=params, timeout=10)
    r.raise_for_status()
    return r.json()


def _get(http, cat, entry_id):
    return http.get(cat.result(entry_id)["url"], timeout=10)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


# ----------------------------------------------------------------------------- server


def test_starts_on_free_port_and_stops():
    c = DemoCatalog()
    with pytest.raises(RuntimeError):
        c.base_url  # noqa: B018 - not running yet
    c.start()
    port = int(c.base_url.rsplit(":", 1)[1])
    assert c.base_url.startswith("http://127.0.0.1:") and port > 0
    assert requests.get(c.base_url + "/robots.txt", timeout=5).status_code == 200
    c.stop()
    assert not c.running
    assert not _port_open(port)
    c.stop()  # idempotent


def test_two_catalogs_get_different_ports():
    with DemoCatalog() as a, DemoCatalog() as b:
        assert a.base_url != b.base_url


def test_robots_allows_everything(http, cat):
    r = http.get(cat.base_url + "/robots.txt", timeout=5)
    assert r.headers["Content-Type"].startswith("text/plain")
    assert "Allow: /" in r.text and "Disallow: /" not in r.text


# ----------------------------------------------------------------------------- catalog table


def test_catalog_table_is_consistent():
    ids = [e.id for e in CATALOG]
    assert len(ids) == len(set(ids))
    assert len({e.file for e in CATALOG}) == len(CATALOG)
    assert {e.expect for e in CATALOG} == set(EXPECTS)
    for e in CATALOG:
        licenses.get(e.license, e.license_version)  # every licence is in the registry
    # left out on purpose: no stated licence, human tissue, a known detector false positive (horse)
    for name in ("moon", "page", "motorcycle", "aero", "retina", "ihc", "coins", "horse"):
        assert not any(name in e.file for e in CATALOG)


def test_expected_under_policies():
    default = expected()
    assert default == {e.id: e.expect for e in CATALOG}
    strict = expected("cc-by")
    assert strict["demo-chelsea"] == "license" and strict["demo-astronaut"] == "license"
    assert strict["demo-china"] == "kept" and strict["demo-china-repost"] == "duplicate"


# ----------------------------------------------------------------------------- search format


def test_search_has_openverse_fields(http, cat):
    body = _search(http, cat, q="*", page=1, page_size=20)
    assert set(body) >= {"result_count", "page_count", "page_size", "page", "results"}
    assert body["result_count"] == len(CATALOG) and body["page_size"] == 20 and body["page"] == 1
    fixture = _fixture("openverse_v1_images_q-galah_2022-03-28_first7of20.json")
    fixture_fields = set(fixture["results"][0]) - {"related_url"}
    required = {
        "id", "title", "foreign_landing_url", "url", "creator", "creator_url", "license",
        "license_version", "license_url", "provider", "source", "tags", "attribution",
        "filesize", "filetype", "height", "width",
    }
    for res in body["results"]:
        assert set(res) >= required
        assert fixture_fields <= set(res)
        assert all(isinstance(t, dict) and t["name"] for t in res["tags"])
        assert licenses.normalise(res["license"], res["license_version"], res["license_url"])


def test_search_order_and_ids_are_stable(http, cat):
    body = _search(http, cat, q="", page=1, page_size=500)
    assert [r["id"] for r in body["results"]] == [e.id for e in CATALOG]
    assert _search(http, cat, q="", page=1, page_size=500) == body


def test_search_matches_title_and_tags(http, cat):
    body = _search(http, cat, q="cat")
    assert [r["id"] for r in body["results"]] == ["demo-chelsea"]
    assert set(body["results"][0]["fields_matched"]) == {"title", "tags.name"}
    assert {r["id"] for r in _search(http, cat, q="Texture")["results"]} == {
        "demo-brick", "demo-grass", "demo-gravel"
    }
    assert [r["id"] for r in _search(http, cat, q="gravel texture")["results"]] == ["demo-gravel"]
    empty = _search(http, cat, q="querywithnoresults")
    assert empty["result_count"] == 0 and empty["page_count"] == 0 and empty["results"] == []


def test_paging_walks_everything_once(http, cat):
    body = _search(http, cat, q="*", page=1, page_size=5)
    assert body["page_count"] == -(-len(CATALOG) // 5)
    ids = []
    for page in range(1, body["page_count"] + 1):
        ids += [r["id"] for r in _search(http, cat, q="*", page=page, page_size=5)["results"]]
    assert ids == [e.id for e in CATALOG]
    assert http.get(cat.base_url + "/v1/images/", params={"q": "*", "page": 99}, timeout=5).status_code == 400
    assert http.get(cat.base_url + "/v1/images/", params={"page_size": 0}, timeout=5).status_code == 400
    # the shared pager stops at page_count and honours max_pages
    walked = [r["id"] for r in iter_search(http, cat.base_url, "*", 5)]
    assert walked == [e.id for e in CATALOG]
    assert len(list(iter_search(http, cat.base_url, "*", 5, max_pages=2))) == 10


def test_detail_and_work_pages(http, cat):
    r = http.get(cat.base_url + "/v1/images/demo-chelsea/", timeout=5)
    assert r.json()["id"] == "demo-chelsea"
    assert http.get(cat.base_url + "/v1/images/nope/", timeout=5).status_code == 404
    page = http.get(cat.base_url + "/works/demo-chelsea", timeout=5)
    assert page.status_code == 200 and "text/html" in page.headers["Content-Type"]
    assert "Stefan van der Walt" in page.text and "CC0 1.0" in page.text
    assert BY_ID["demo-china"].landing_url == cat.result("demo-china")["foreign_landing_url"]
    assert cat.result("demo-gradient")["foreign_landing_url"] == cat.base_url + "/works/demo-gradient"
    assert http.get(cat.result("demo-gradient")["foreign_landing_url"], timeout=5).status_code == 200


# ----------------------------------------------------------------------------- special entries


def test_kept_images_decode_with_right_headers(http, cat):
    for e in CATALOG:
        if e.expect not in ("kept", "people", "optout"):
            continue
        r = _get(http, cat, e.id)
        assert r.status_code == 200, e.id
        ctype = "image/png" if e.file.endswith(".png") else "image/jpeg"
        assert r.headers["Content-Type"] == ctype
        assert int(r.headers["Content-Length"]) == len(r.content) == cat.result(e.id)["filesize"]
        with Image.open(io.BytesIO(r.content)) as im:
            im.load()
            assert im.size == (cat.result(e.id)["width"], cat.result(e.id)["height"])


def test_people_entries(cat):
    people = {e.id for e in CATALOG if e.expect == "people"}
    assert people == {"demo-astronaut", "demo-camera", "demo-grace-hopper", "demo-ascent"}
    assert "unverified" in cat.result("demo-grace-hopper")["description"]


def test_missing_is_404(http, cat):
    assert _get(http, cat, "demo-lighthouse").status_code == 404


def test_html_served_as_jpeg(http, cat):
    r = _get(http, cat, "demo-harbour")
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/jpeg"
    assert r.content.lstrip().lower().startswith(b"<!doctype html")
    with pytest.raises(Image.UnidentifiedImageError):
        Image.open(io.BytesIO(r.content))


def test_truncated_jpeg_fails_to_decode(http, cat):
    r = _get(http, cat, "demo-flower-truncated")
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/jpeg"
    assert r.content[:2] == b"\xff\xd8"
    res = cat.result("demo-flower-truncated")
    assert licenses.normalise(res["license"], res["license_version"], res["license_url"]).id == "cc-by-2.0"
    with pytest.raises(OSError), Image.open(io.BytesIO(r.content)) as im:
        im.load()


def test_noai_header(http, cat):
    r = _get(http, cat, "demo-gravel")
    assert r.status_code == 200 and r.headers["X-Robots-Tag"] == "noai"
    assert "X-Robots-Tag" not in _get(http, cat, "demo-chelsea").headers


def test_duplicate_has_identical_bytes(http, cat):
    a, b = _get(http, cat, "demo-china"), _get(http, cat, "demo-china-repost")
    assert a.content == b.content
    ra, rb = cat.result("demo-china"), cat.result("demo-china-repost")
    assert ra["url"] != rb["url"] and ra["title"] != rb["title"]


def test_nc_and_missing_creator(http, cat):
    nc = cat.result("demo-gradient")
    assert (nc["license"], nc["license_version"]) == ("by-nc", "2.0")
    assert nc["license_url"] == "https://creativecommons.org/licenses/by-nc/2.0/"
    assert nc["creator"] == "passkit demo generator"
    assert licenses.normalise(nc["license"], nc["license_version"], nc["license_url"]).non_commercial
    anon = cat.result("demo-rings")
    assert anon["creator"] is None and anon["license"] == "by"
    for eid in ("demo-gradient", "demo-rings"):  # generated images really are images
        with Image.open(io.BytesIO(_get(http, cat, eid).content)) as im:
            im.load()


def test_generated_bytes_are_deterministic(http, cat):
    with DemoCatalog() as other:
        for eid in ("demo-gradient", "demo-rings", "demo-ascent", "demo-flower-truncated"):
            r2 = requests.get(other.result(eid)["url"], timeout=5)
            assert _get(http, cat, eid).content == r2.content


# ----------------------------------------------------------------------------- source


def test_open_source_yields_candidates_with_provenance(monkeypatch):
    monkeypatch.setenv("PASSKIT_DEMO_PORT", "0")  # a free port, whatever else runs
    spec = DemoSourceSpec(queries=["*", "texture"], page_size=5)
    with open_source(spec) as src:
        assert isinstance(src, Source) and src.name == "demo"
        desc = src.describe()
        assert desc["kind"] == "demo" and desc["queries"] == ["*", "texture"]
        assert desc["base_url"].startswith("http://127.0.0.1:")
        cands = list(src.candidates())
        port = int(desc["base_url"].rsplit(":", 1)[1])
    assert not _port_open(port)
    assert [c.source_id for c in cands] == [e.id for e in CATALOG]  # de-duplicated across queries
    for c in cands:
        assert isinstance(c, Candidate)
        assert c.source == "demo" and c.query == "*" and c.url.startswith(desc["base_url"] + "/images/")
        assert c.license and c.license_version and c.license_url and c.landing_url and c.title
    china = cands[0]
    assert (china.creator, china.license, china.license_version) == ("danielbuechele", "by", "2.0")
    assert china.landing_url == "https://www.flickr.com/photos/danielbuechele/6061409035/"
    assert china.extra["tags"][0] == "architecture" and china.extra["filetype"] == "jpg"
    rings = next(c for c in cands if c.source_id == "demo-rings")
    assert rings.creator is None


def test_candidates_follow_query_order(monkeypatch):
    monkeypatch.setenv("PASSKIT_DEMO_PORT", "0")
    with open_source(DemoSourceSpec(queries=["texture", "cat", "texture"], page_size=2)) as src:
        got = [(c.source_id, c.query) for c in src.candidates()]
    assert got == [
        ("demo-brick", "texture"), ("demo-grass", "texture"), ("demo-gravel", "texture"), ("demo-chelsea", "cat")
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_builds_use_a_fixed_port(monkeypatch):
    monkeypatch.delenv("PASSKIT_DEMO_PORT", raising=False)
    assert build_port() == build_port(DemoSourceSpec()) == DEMO_PORT
    port = _free_port()
    monkeypatch.setenv("PASSKIT_DEMO_PORT", str(port))
    for _ in range(2):  # same URLs every time: units resume, shards are byte-identical
        with open_source(DemoSourceSpec()) as src:
            assert src.describe()["base_url"] == f"http://127.0.0.1:{port}"
            first = next(iter(src.candidates()))
            assert first.url == f"http://127.0.0.1:{port}/images/china.jpg"
    monkeypatch.setenv("PASSKIT_DEMO_PORT", "http")
    with pytest.raises(ValueError, match="PASSKIT_DEMO_PORT"):
        build_port()


def test_taken_port_falls_back_with_a_warning(monkeypatch):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        monkeypatch.setenv("PASSKIT_DEMO_PORT", str(taken))
        with pytest.warns(RuntimeWarning, match="taken"), open_source(DemoSourceSpec()) as src:
            assert not src.describe()["base_url"].endswith(f":{taken}")
            assert len(list(src.candidates())) == len(CATALOG)


def test_unknown_kind():
    assert "demo" in kinds()

    class Spec:
        kind = "nope"

    with pytest.raises(UnknownSourceError, match="known kinds: .*demo"):
        open_source(Spec())


def test_result_to_candidate_on_real_openverse_fixture():
    res = _fixture("openverse_v1_images_q-galah_2022-03-28_first7of20.json")["results"][0]
    c = result_to_candidate(res, "openverse", "galah")
    assert c.source_id == res["id"] and c.url == res["url"] and c.landing_url == res["foreign_landing_url"]
    assert (c.license, c.license_version, c.license_url) == ("by-sa", "2.0", res["license_url"])
    assert c.creator == "Graham Winterflood" and c.provider == "flickr" and c.query == "galah"
    assert "galah" in c.extra["tags"]
    assert result_to_candidate({**res, "creator": ""}, "openverse", "galah").creator is None

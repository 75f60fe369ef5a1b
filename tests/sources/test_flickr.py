"""Flickr reader against the recorded flickr.photos.search answer served on 127.0.0.1."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path

import pytest

from passkit import licenses as L
from passkit.sources import open_source
from passkit.sources.apiclient import ApiError
from passkit.sources.flickr import FlickrSource, photo_to_candidate
from passkit.sources.flickr_spec import FlickrSourceSpec


def _fx(fixtures_dir: Path, name: str) -> dict:
    return json.loads((fixtures_dir / "flickr" / name).read_text())


def _send(h, body: object) -> None:
    data = json.dumps(body).encode()
    h.send_response(200)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(data)))
    h.end_headers()
    h.wfile.write(data)


class Rest:
    def __init__(self, server, fixtures_dir: Path, pages: int = 1):
        self.search = _fx(fixtures_dir, "flickr_photos_search_extras_license_ownername.json")
        self.pages = pages
        self.log: list[dict[str, str]] = []
        server.routes["/services/rest/"] = self.handle

    def handle(self, h) -> None:
        q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(h.path).query))
        self.log.append(q)
        if q.get("api_key") != "KEY":
            _send(h, {"stat": "fail", "code": 100, "message": "Invalid API Key (Key has invalid format)"})
        elif q["method"] == "flickr.photos.licenses.getInfo":
            _send(h, {"stat": "ok", "licenses": {"license": [
                {"id": "1", "name": "Attribution-NonCommercial-ShareAlike License",
                 "url": "https://creativecommons.org/licenses/by-nc-sa/2.0/"},
                {"id": "11", "name": "CC BY 4.0", "url": "https://creativecommons.org/licenses/by/4.0/"}]}})
        else:
            page = int(q["page"])
            photos = self.search["photos"]["photo"]
            if page == 2:  # a second page: 10 of the same photos (Flickr repeats past its limit) + 2 new ones
                photos = photos[:10] + [dict(p, id=p["id"] + "0", license="11") for p in photos[:2]]
            body = {"photos": {**self.search["photos"], "page": page, "pages": str(self.pages),
                               "photo": photos}, "stat": "ok"}
            _send(h, body)


def _spec(server, **kw) -> FlickrSourceSpec:
    return FlickrSourceSpec(**{"api_url": server.url("/services/rest/"), "queries": ["church"],
                               "request_interval": 0, **kw})


def test_search_with_licences_extras_and_paging(http_server, fixtures_dir, monkeypatch):
    monkeypatch.setenv("FLICKR_API_KEY", "KEY")
    rest = Rest(http_server, fixtures_dir, pages=2)
    with open_source(_spec(http_server, licenses=["1", "4"], tags=["reef"], max_pages=2)) as src:
        cands = list(src.candidates())
        stats = src.describe()["stats"]
    q = rest.log[0]
    assert q["method"] == "flickr.photos.search" and q["text"] == "church" and q["license"] == "1,4"
    assert {"owner_name", "license", "url_l", "url_m"} <= set(q["extras"].split(","))
    assert q["format"] == "json" and q["nojsoncallback"] == "1" and q["per_page"] == "250"
    assert [(x.get("text") or x.get("tags"), x["page"]) for x in rest.log] == [
        ("church", "1"), ("church", "2"), ("reef", "1"), ("reef", "2")]
    assert len(cands) == 30 + 2  # page 2 repeats 10 photos; the tag search repeats them all
    assert stats["duplicates"] == 10 + 30 + 12
    c = next(x for x in cands if x.source_id == "49514824541")
    assert c.creator == "Marine Explorer" and c.creator_url == "https://www.flickr.com/photos/71925535@N03/"
    assert c.landing_url == "https://www.flickr.com/photos/71925535@N03/49514824541"
    assert c.url.endswith("_b.jpg")  # url_l preferred
    assert c.license == "flickr:1" and c.query == "church" and c.provider == "flickr"
    no_l = next(x for x in cands if x.source_id == "49515058172")  # no url_l in the answer: url_m
    rec = next(p for p in rest.search["photos"]["photo"] if p["id"] == "49515058172")
    assert "url_l" not in rec and no_l.url == rec["url_m"]
    pol = L.policy("cc-by")
    assert all(L.gate(x, pol)[0] == "license_not_allowed" for x in cands if x.license == "flickr:1")
    assert {L.gate(x, pol)[0] for x in cands if x.license == "flickr:11"} == {"license_unknown"}


def test_live_licence_table(http_server, fixtures_dir, monkeypatch):
    monkeypatch.setenv("FLICKR_API_KEY", "KEY")
    Rest(http_server, fixtures_dir, pages=2)
    src = FlickrSource(_spec(http_server, license_table="api", max_pages=2))
    cands = list(src.candidates())
    new = [x for x in cands if x.extra["flickr_license"] == "11"]
    assert len(new) == 2 and all(x.license_url == "https://creativecommons.org/licenses/by/4.0/" for x in new)
    a = L.gate(new[0], L.policy("cc-by"))
    assert isinstance(a, L.Attribution) and a.license == "cc-by-4.0"


def test_key_from_environment_only(http_server, fixtures_dir, monkeypatch):
    monkeypatch.delenv("FLICKR_API_KEY", raising=False)
    with pytest.raises(ValueError, match="FLICKR_API_KEY"):
        FlickrSource(_spec(http_server))
    monkeypatch.setenv("FLICKR_API_KEY", "WRONG")
    Rest(http_server, fixtures_dir)
    with pytest.raises(ApiError, match="code 100: Invalid API Key"):
        list(FlickrSource(_spec(http_server)).candidates())
    with pytest.raises(ValueError, match="queries or tags"):
        FlickrSourceSpec()


def test_single_record_and_missing_url(fixtures_dir):
    photo = _fx(fixtures_dir, "flickr_single_photo_record_with_content_type.json")
    c = photo_to_candidate(photo, "q", ["url_l", "url_m"])
    assert c.title.startswith("Surveying Ruperts Reef") and c.extra["description"].startswith("We had")
    assert L.normalise(c.license).id == "cc-by-nc-sa-2.0"
    bare = {k: v for k, v in photo.items() if not k.startswith("url_")}
    assert photo_to_candidate(bare, "q", ["url_l"]).error[0] == "missing_url"

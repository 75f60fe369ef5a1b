"""Commons reader against recorded MediaWiki answers served on 127.0.0.1: allimages without
continuation, a continued batch, HTML creators, missing LicenseUrl, AttributionRequired."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path

import pytest

from passkit import licenses as L
from passkit.sources import open_source
from passkit.sources.apiclient import ApiError
from passkit.sources.commons import CommonsSource, creator_from_html, page_to_candidate
from passkit.sources.commons_spec import CommonsSourceSpec


def _fx(fixtures_dir: Path, name: str) -> dict:
    return json.loads((fixtures_dir / "wikimedia" / name).read_text())


def _send(h, body: object, status: int = 200) -> None:
    data = json.dumps(body).encode()
    h.send_response(status)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(data)))
    h.end_headers()
    h.wfile.write(data)


class Wiki:
    def __init__(self, server, answers: list[dict]):
        self.answers = list(answers)
        self.log: list[dict[str, str]] = []
        self.agents: list[str] = []
        server.routes["/w/api.php"] = self.handle

    def handle(self, h) -> None:
        self.log.append(dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(h.path).query, keep_blank_values=True)))
        self.agents.append(h.headers.get("User-Agent", ""))
        _send(h, self.answers.pop(0) if self.answers else {"batchcomplete": "", "query": {"pages": {}}})


def _spec(server, **kw) -> CommonsSourceSpec:
    return CommonsSourceSpec(**{"api_url": server.url("/w/api.php"), "request_interval": 0, **kw})


def test_allimages_without_continuation(http_server, fixtures_dir):
    body = _fx(fixtures_dir, "commons_api_query_allimages_imageinfo_extmetadata_nocontinue.json")
    wiki = Wiki(http_server, [body])
    with open_source(_spec(http_server, user_agent="passkit-test/1 (+mailto:x@example.org)")) as src:
        cands = list(src.candidates())
    assert len(cands) == 28 and len(wiki.log) == 1
    q = wiki.log[0]
    assert q["generator"] == "allimages" and q["prop"] == "imageinfo" and "extmetadata" in q["iiprop"]
    assert "url" in q["iiprop"].split("|") and q["continue"] == "" and q["maxlag"] == "5"
    assert wiki.agents == ["passkit-test/1 (+mailto:x@example.org)"]
    by_id = {c.source_id: c for c in cands}
    c = by_id["44672185"]
    assert c.license == "CC BY-SA 3.0 de" and c.license_url.endswith("/by-sa/3.0/de/deed.en")
    assert c.creator == "Eckhard Henkel"  # HTML stripped
    assert c.creator_url == "https://commons.wikimedia.org/wiki/User:Hasenl%C3%A4ufer"  # kept, made absolute
    assert c.landing_url.startswith("https://commons.wikimedia.org/wiki/File:") and c.provider == "wikimedia_commons"
    assert c.extra["attribution_required"] == "true"
    pd = by_id["18263872"]  # "Public domain" without LicenseUrl
    assert pd.license == "Public domain" and pd.license_url is None and pd.extra["attribution_required"] == "false"
    assert pd.creator.startswith("The original uploader was Elvezio at Italian Wikipedia")
    assert by_id["44672214"].creator == "Unknown"  # <div class="fn value"><span>Unknown</span></div>

    # through the gate, under both policies
    cc_by, pdp = L.policy("cc-by"), L.policy("by-or-public-domain")
    outcomes = {}
    for x in cands:
        g = L.gate(x, pdp)
        outcomes[x.source_id] = g.license if isinstance(g, L.Attribution) else g[0]
        assert not isinstance(L.gate(x, cc_by), L.Attribution)  # no CC BY (plain) file in this batch
    assert outcomes["18263872"] == "pdm-1.0"
    assert outcomes["44672185"] == "license_not_allowed"  # BY-SA
    assert outcomes["42098895"] == "license_unsupported"  # "No restrictions"
    assert sum(v == "pdm-1.0" for v in outcomes.values()) == 10


def test_continuation_and_repeated_pages(http_server, fixtures_dir):
    first = _fx(fixtures_dir, "commons_api_query_imageinfo_extmetadata_with_continue.json")
    # the continued answer repeats the batch's pages (props of the same batch), then completes it
    second = {"batchcomplete": "", "continue": {"gaicontinue": "Z", "continue": "gaicontinue||"},
              "query": {"pages": first["query"]["pages"]}}
    third = _fx(fixtures_dir, "commons_api_query_allimages_imageinfo_extmetadata_nocontinue.json")
    wiki = Wiki(http_server, [first, second, third])
    src = CommonsSource(_spec(http_server))
    ids = [c.source_id for c in src.candidates()]
    assert len(wiki.log) == 3
    assert wiki.log[1]["gucontinue"] == first["continue"]["gucontinue"]
    assert wiki.log[1]["continue"] == "||imageinfo"
    assert wiki.log[2]["gaicontinue"] == "Z"
    assert len(ids[:9]) == 9 and len(set(ids[:9])) == 9  # the repeat inside the batch is not emitted twice
    assert len(ids) == 9 + 28  # a new batch after batchcomplete: its pages are new candidates


def test_category_and_limits(http_server, fixtures_dir):
    body = _fx(fixtures_dir, "commons_api_query_allimages_imageinfo_extmetadata_nocontinue.json")
    wiki = Wiki(http_server, [body])
    src = CommonsSource(_spec(http_server, category="Category:Niedercunnersdorf", max_images=5, maxlag=None))
    assert len(list(src.candidates())) == 5
    q = wiki.log[0]
    assert q["generator"] == "categorymembers" and q["gcmtitle"] == "Category:Niedercunnersdorf"
    assert q["gcmtype"] == "file" and "maxlag" not in q


def test_single_page_and_edge_cases(fixtures_dir):
    page = _fx(fixtures_dir, "commons_single_page_imageinfo_example.json")
    c = page_to_candidate(page, "allimages")
    assert c.creator == "PtrQs" and c.creator_url == "https://commons.wikimedia.org/wiki/User:PtrQs"
    assert c.title == "20120925 PlozevetBretagne LoneTree DSC07971 PtrQs"
    assert c.extra["attribution_text"] == "Photo by PtrQs" and c.extra["mediatype"] == "BITMAP"
    a = L.gate(c, L.policy("custom", allow=["cc-by-sa-4.0"]))
    assert a.license == "cc-by-sa-4.0" and a.creator_url == c.creator_url
    # no url: a rejected candidate; no imageinfo yet: nothing
    no_url = json.loads(json.dumps(page))
    del no_url["imageinfo"][0]["url"]
    assert page_to_candidate(no_url, None).error[0] == "missing_url"
    assert page_to_candidate({"pageid": 1, "title": "File:x.jpg"}, None) is None
    assert creator_from_html('<a href="//a/x">A</a> and <a href="//b/y">B</a>') == ("A and B", None)
    assert creator_from_html(None) == (None, None)


def test_non_bitmap_skipped_and_api_errors(http_server, fixtures_dir):
    page = _fx(fixtures_dir, "commons_single_page_imageinfo_example.json")
    video = json.loads(json.dumps(page))
    video["pageid"], video["imageinfo"][0]["mediatype"] = 2, "VIDEO"
    body = {"batchcomplete": "", "query": {"pages": {"1": page, "2": video}}}
    Wiki(http_server, [{"error": {"code": "maxlag", "info": "Waiting for db: 6 seconds lagged"}}, body])
    src = CommonsSource(_spec(http_server))
    waits: list[float] = []
    src.client.sleep = waits.append
    assert [c.source_id for c in src.candidates()] == ["81754323"]
    assert src.stats["skipped_media"] == 1 and waits == [5.0]
    Wiki(http_server, [{"error": {"code": "badvalue", "info": "Unrecognized value for parameter"}}])
    with pytest.raises(ApiError, match="badvalue"):
        list(CommonsSource(_spec(http_server)).candidates())

"""Openverse client against recorded API responses served on 127.0.0.1: paging, empty results, the
429 envelope, Retry-After, client-credentials tokens and the resumable page journal."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path

import pytest

from passkit import licenses as L
from passkit.sources import open_source
from passkit.sources.apiclient import ApiClient, ApiThrottled
from passkit.sources.openverse import OpenverseSource
from passkit.sources.openverse_spec import OpenverseSourceSpec


def _fx(fixtures_dir: Path, name: str) -> dict:
    return json.loads((fixtures_dir / "openverse" / name).read_text())


def _send(h, status: int, body: object, headers: dict[str, str] | None = None) -> None:
    data = json.dumps(body).encode()
    h.send_response(status)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(data)))
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    h.end_headers()
    h.wfile.write(data)


def _query(h) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(h.path).query))


class Api:
    """A programmable Openverse: pages per query, a queue of canned failures, request log."""

    def __init__(self, server, fixtures_dir: Path):
        self.galah = _fx(fixtures_dir, "openverse_v1_images_q-galah_2022-03-28_first7of20.json")
        self.horses = _fx(fixtures_dir, "openverse_v1_images_q-horses-snort-window_page3_2024-01-10_first3of20.json")
        self.empty = _fx(fixtures_dir, "openverse_v1_images_q-querywithnoresults_2024-01-02_empty.json")
        self.throttled = _fx(fixtures_dir, "openverse_v1_images_429_throttled_2023-07-10_envelope.json")
        self.failures: list[tuple[int, object, dict[str, str]]] = []
        self.log: list[dict[str, str]] = []
        self.auth: list[str | None] = []
        self.tokens = 0
        server.routes["/v1/images/"] = self.search
        server.routes["/v1/auth_tokens/token/"] = self.token

        def do_post(h):  # LocalServer only routes GET; the token endpoint is a POST
            n = int(h.headers.get("Content-Length", 0))
            h.form = dict(urllib.parse.parse_qsl(h.rfile.read(n).decode()))
            server.routes[h.path.split("?")[0]](h)

        server.httpd.RequestHandlerClass.do_POST = do_post

    def token(self, h) -> None:
        assert h.form == {"grant_type": "client_credentials", "client_id": "cid", "client_secret": "sec"}
        self.tokens += 1
        _send(h, 200, {"access_token": f"tok{self.tokens}", "scope": "read write", "expires_in": 36000,
                       "token_type": "Bearer"})

    def search(self, h) -> None:
        q = _query(h)
        self.log.append(q)
        self.auth.append(h.headers.get("Authorization"))
        if self.failures:
            status, body, headers = self.failures.pop(0)
            _send(h, status, body, headers)
            return
        page = int(q["page"])
        if q["q"] == "galah":
            # the recorded first page, re-served as pages 1-2 of a 2-page search with fresh ids on page 2
            body = dict(self.galah, page_count=2, page=page)
            if page == 2:
                body["results"] = [dict(r, id=r["id"] + "-p2") for r in self.galah["results"][:3]]
            _send(h, 200, body)
        elif q["q"] == "horses snort window":
            _send(h, 200, dict(self.horses, page=page, page_count=1))
        else:
            _send(h, 200, self.empty)


def _spec(server, **kw) -> OpenverseSourceSpec:
    base = {"api_url": server.base, "queries": ["galah"], "request_interval": 0, "max_retries": 2}
    return OpenverseSourceSpec(**{**base, **kw})


def _no_sleep(src: OpenverseSource) -> list[float]:
    waits: list[float] = []
    src.client.sleep = waits.append
    return waits


def test_pages_queries_and_provenance(http_server, fixtures_dir, monkeypatch):
    monkeypatch.delenv("OPENVERSE_CLIENT_ID", raising=False)
    monkeypatch.delenv("OPENVERSE_CLIENT_SECRET", raising=False)
    api = Api(http_server, fixtures_dir)
    spec = _spec(http_server, queries=["galah", "horses snort window", "querywithnoresults", "galah"],
                 license=["by", "cc0"], params={"source": "flickr"})
    with open_source(spec) as src:
        cands = list(src.candidates())
        desc = src.describe()
    assert len(cands) == 7 + 3 + 3  # the repeated query adds nothing: ids are de-duplicated
    assert [c.query for c in cands] == ["galah"] * 10 + ["horses snort window"] * 3
    assert {c.source for c in cands} == {"openverse"}
    assert api.log[0] == {"q": "galah", "page": "1", "page_size": "20", "license": "by,cc0", "source": "flickr"}
    assert [(q["q"], q["page"]) for q in api.log] == [
        ("galah", "1"), ("galah", "2"), ("horses snort window", "1"), ("querywithnoresults", "1"),
        ("galah", "1"), ("galah", "2")]
    assert api.auth == [None] * 6 and desc["authenticated"] is False
    # the recorded licence spellings, through the gate
    pol = L.policy("cc-by")
    got = {c.source_id: L.gate(c, pol) for c in cands[:7]}
    ids = [c.source_id for c in cands[:7]]
    assert got[ids[3]][0] == "license_not_allowed"  # by-nc-nd with the by-nd-nc/2.0/jp/ URL
    assert L.normalise(cands[3].license, cands[3].license_version, cands[3].license_url).id == "cc-by-nc-nd-2.0-jp"
    assert got[ids[2]].license == "cc-by-2.0"
    assert got[ids[2]].creator_url == "https://www.flickr.com/photos/26811962@N05"
    assert desc["stats"]["pages_fetched"] == 6 and desc["stats"]["duplicates"] == 10


def test_empty_results(http_server, fixtures_dir):
    Api(http_server, fixtures_dir)
    with open_source(_spec(http_server, queries=["querywithnoresults"])) as src:
        assert list(src.candidates()) == []


def test_recorded_429_envelope_without_retry_after_stops_with_a_clear_error(http_server, fixtures_dir):
    api = Api(http_server, fixtures_dir)
    env = api.throttled
    api.failures.append((env["status"], env["body"], env["headers"]))
    src = OpenverseSource(_spec(http_server))
    waits = _no_sleep(src)
    with pytest.raises(ApiThrottled, match="wait 3600 s") as e:
        list(src.candidates())
    assert e.value.wait == 3600 and waits == []  # read from the body; never slept an hour


def test_429_with_retry_after_is_honoured(http_server, fixtures_dir):
    api = Api(http_server, fixtures_dir)
    api.failures += [(429, {"detail": "Request was throttled."}, {"Retry-After": "2"}),
                     (503, {"detail": "busy"}, {"Retry-After": "1"})]
    src = OpenverseSource(_spec(http_server))
    waits = _no_sleep(src)
    assert len(list(src.candidates())) == 10
    assert waits == [2.0, 1.0]
    api.failures += [(429, {"detail": "slow down"}, {"Retry-After": "0"})] * 5
    src2 = OpenverseSource(_spec(http_server, max_retries=2))
    _no_sleep(src2)
    with pytest.raises(Exception, match="HTTP 429 .* after 3 tries"):
        list(src2.candidates())


def test_client_credentials_token_and_page_size(http_server, fixtures_dir, monkeypatch):
    api = Api(http_server, fixtures_dir)
    with pytest.raises(ValueError, match="needs a token"):
        OpenverseSource(_spec(http_server, page_size=100))
    monkeypatch.setenv("OPENVERSE_CLIENT_ID", "cid")
    monkeypatch.setenv("OPENVERSE_CLIENT_SECRET", "sec")
    src = OpenverseSource(_spec(http_server))
    assert src.page_size == 500
    api.failures.append((401, {"detail": "Authentication credentials were not provided."}, {}))
    list(src.candidates())
    assert api.tokens == 2  # the 401 made it fetch a fresh token once
    assert api.auth == ["Bearer tok1", "Bearer tok2", "Bearer tok2"]
    assert api.log[0]["page_size"] == "500"
    monkeypatch.delenv("OPENVERSE_CLIENT_SECRET")
    with pytest.raises(ValueError, match="set both"):
        OpenverseSource(_spec(http_server))


def test_cursor_journal_resumes_without_refetching(http_server, fixtures_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENVERSE_CLIENT_ID", raising=False)
    monkeypatch.delenv("OPENVERSE_CLIENT_SECRET", raising=False)
    api = Api(http_server, fixtures_dir)
    cursor = tmp_path / "cur" / "pages.jsonl"
    spec = _spec(http_server, queries=["galah", "horses snort window"], cursor=str(cursor))
    # first run: throttled on the second query's page; the galah pages are journalled
    api.failures = []
    src = OpenverseSource(spec)
    _no_sleep(src)
    it = src.candidates()
    first = [next(it) for _ in range(10)]
    api.failures.append((429, {"detail": "Request was throttled. Expected available in 3600 seconds."}, {}))
    with pytest.raises(ApiThrottled):
        next(it)
    src.close()
    assert len(api.log) == 3
    with cursor.open("ab") as f:
        f.write(b'{"key": "trunc')  # a crash mid-write leaves half a line: ignored
    # second run: galah replays from the journal, only the horses page is asked for
    src = OpenverseSource(spec)
    again = list(src.candidates())
    src.close()
    assert [c.source_id for c in again[:10]] == [c.source_id for c in first]
    assert len(again) == 13
    assert [(q["q"], q["page"]) for q in api.log[3:]] == [("horses snort window", "1")]
    assert src.stats["pages_replayed"] == 2
    # a changed filter is a different request: not served from the journal
    src = OpenverseSource(_spec(http_server, queries=["galah"], cursor=str(cursor), license=["by"]))
    list(src.candidates())
    assert src.stats["pages_replayed"] == 0


def test_malformed_result_is_a_rejected_candidate(http_server, fixtures_dir):
    api = Api(http_server, fixtures_dir)
    bad = dict(api.galah, page_count=1, results=[{"id": "x1", "title": "no url"}, api.galah["results"][2]])
    api.failures.append((200, bad, {}))
    src = OpenverseSource(_spec(http_server))
    cands = list(src.candidates())
    assert cands[0].error[0] == "malformed_result" and cands[0].source_id == "q:galah:1"
    assert cands[1].error is None


def test_api_client_parses_http_date_retry_after():
    import requests

    r = requests.Response()
    r.status_code = 429
    r.headers["Retry-After"] = "Wed, 21 Oct 2015 07:28:00 GMT"
    from passkit.sources.apiclient import retry_after

    assert retry_after(r) == 0.0
    assert ApiClient("t").session.headers["User-Agent"].startswith("passkit/")

"""The demo catalog's HTTP server: Openverse's search format (GET /v1/images/), the images, a page
per work, and robots.txt, on 127.0.0.1.

    with DemoCatalog() as cat:
        requests.get(cat.base_url + "/v1/images/?q=*&page=1&page_size=20").json()
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import math
import re
import urllib.parse
from http.server import BaseHTTPRequestHandler
from typing import Any

from passkit import licenses
from passkit.demo.catalog import BY_ID, CATALOG, CATALOG_VERSION, Entry
from passkit.demo.photos import catalog_bytes
from passkit.localserver import LoopbackServer
from passkit.sources.openverse_format import SEARCH_PATH

MAX_PAGE_SIZE = 500


def _image_size(data: bytes) -> tuple[int | None, int | None]:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size
    except Exception:
        return None, None


_CONTENT_TYPES = {"jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png"}


def _filetype(file: str) -> str:
    return file.rsplit(".", 1)[-1].lower()


# ----------------------------------------------------------------------------- search


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def _match(entry: Entry, query: str) -> list[str] | None:
    """fields_matched for a query (every word must match the title or a tag), None if no match."""
    q = query.strip()
    if q in ("", "*"):
        return []
    title, tags = _words(entry.title), _words(" ".join(entry.tags))
    fields = set()
    for word in _words(q):
        if word in title:
            fields.add("title")
        if word in tags:
            fields.add("tags.name")
        if word not in title and word not in tags:
            return None
    return sorted(fields)


def _attribution(e: Entry, lic: licenses.License) -> str:
    """The credit sentence in Openverse's own wording."""
    work = f'"{e.title}"' if e.title else "This work"
    by = f" by {e.creator}" if e.creator else ""
    if lic.public_domain:
        return f"{work}{by} is marked with {lic.name}. To view the terms, visit {lic.url}."
    return f"{work}{by} is licensed under {lic.name}. To view a copy of this license, visit {lic.url}."


def _result(e: Entry, base_url: str, data: bytes | None) -> dict[str, Any]:
    lic = licenses.get(e.license, e.license_version)
    width, height = _image_size(data) if data is not None else (None, None)
    api = f"{base_url}{SEARCH_PATH}{e.id}/"
    return {
        "id": e.id,
        "title": e.title,
        "foreign_landing_url": e.landing_url or f"{base_url}/works/{e.id}",
        "url": f"{base_url}/images/{e.file}",
        "creator": e.creator,
        "creator_url": e.creator_url,
        "license": e.license,
        "license_version": e.license_version,
        "license_url": lic.url,
        "provider": e.provider,
        "source": e.provider,
        "category": e.category,
        "filesize": len(data) if data is not None else None,
        "filetype": _filetype(e.file),
        "tags": [{"name": t, "accuracy": None} for t in e.tags],
        "attribution": _attribution(e, lic),
        "description": e.description,
        "mature": False,
        "height": height,
        "width": width,
        "thumbnail": f"{api}thumb/",
        "detail_url": api,
    }


# ----------------------------------------------------------------------------- server


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "passkit-demo/" + CATALOG_VERSION
    protocol_version = "HTTP/1.0"  # one request per connection: stop() leaves nothing open

    def log_message(self, format: str, *args: Any) -> None:  # quiet: no request log on stderr
        pass

    def do_GET(self) -> None:
        self._route(send_body=True)

    def do_HEAD(self) -> None:
        self._route(send_body=False)

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: tuple[tuple[str, str], ...] = (),
        send_body: bool = True,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def _json(self, status: int, obj: Any, send_body: bool) -> None:
        body = json.dumps(obj, ensure_ascii=False, indent=None).encode()
        self._send(status, body, "application/json", send_body=send_body)

    def _route(self, send_body: bool) -> None:
        cat = self.server.catalog
        parts = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(parts.path)
        if path == "/robots.txt":
            self._send(200, b"User-agent: *\nAllow: /\n", "text/plain; charset=utf-8", send_body=send_body)
        elif path in (SEARCH_PATH, SEARCH_PATH.rstrip("/")):
            status, obj = cat.search_response(urllib.parse.parse_qs(parts.query))
            self._json(status, obj, send_body)
        elif path.startswith(SEARCH_PATH):
            rest = path[len(SEARCH_PATH) :].strip("/").split("/")
            entry = BY_ID.get(rest[0])
            if entry is None or len(rest) > 2 or (len(rest) == 2 and rest[1] != "thumb"):
                self._json(404, {"detail": "Not found."}, send_body)
            elif len(rest) == 2:  # thumbnail: the image itself
                self._send(302, b"", "text/plain", (("Location", cat.result(entry.id)["url"]),), send_body)
            else:
                self._json(200, cat.result(entry.id), send_body)
        elif path.startswith("/images/"):
            name = path[len("/images/") :]
            data = cat.files.get(name)
            if data is None:
                self._send(404, b"not found\n", "text/plain; charset=utf-8", send_body=send_body)
                return
            entry = cat.by_file[name]
            headers = (("ETag", '"' + hashlib.sha256(data).hexdigest()[:32] + '"'), *entry.headers)
            ctype = _CONTENT_TYPES.get(_filetype(name), "application/octet-stream")
            self._send(200, data, ctype, headers, send_body)
        elif path.startswith("/works/") and path[len("/works/") :] in BY_ID:
            self._send(200, cat.work_page(path[len("/works/") :]), "text/html; charset=utf-8", send_body=send_body)
        else:
            self._send(404, b"not found\n", "text/plain; charset=utf-8", send_body=send_body)


class _Server(LoopbackServer):
    catalog: DemoCatalog


class DemoCatalog:
    """The catalog server; a context manager. `base_url` is valid between start() and stop()."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port  # 0: a free port chosen by the OS
        self._server: _Server | None = None
        self._results: dict[str, dict[str, Any]] = {}
        self.files: dict[str, bytes] = {}
        self.by_file: dict[str, Entry] = {e.file: e for e in CATALOG}

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the demo catalog is not running; call start() or use it in a with block")
        return f"http://{self.host}:{self._server.server_address[1]}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> DemoCatalog:
        if self._server is not None:
            return self
        self.files = catalog_bytes()
        server = _Server(_Handler, self.port, self.host, name="passkit-demo-catalog")
        server.catalog = self
        self._server = server
        base = self.base_url
        self._results = {e.id: _result(e, base, self.files.get(e.file)) for e in CATALOG}
        server.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop()

    def __enter__(self) -> DemoCatalog:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- content

    def result(self, entry_id: str) -> dict[str, Any]:
        return self._results[entry_id]

    def search_response(self, params: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        query = (params.get("q") or [""])[0]
        try:
            page = int((params.get("page") or ["1"])[0])
            page_size = int((params.get("page_size") or ["20"])[0])
        except ValueError:
            return 400, {"detail": "page and page_size must be integers."}
        if page < 1:
            return 400, {"detail": "Invalid page."}
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            return 400, {"detail": f"page_size must be between 1 and {MAX_PAGE_SIZE}."}
        hits = []
        for e in CATALOG:
            fields = _match(e, query)
            if fields is not None:
                hits.append({**self._results[e.id], "fields_matched": fields})
        page_count = math.ceil(len(hits) / page_size)
        if page > max(page_count, 1):
            return 400, {"detail": "Invalid page."}
        return 200, {
            "result_count": len(hits),
            "page_count": page_count,
            "page_size": page_size,
            "page": page,
            "results": hits[(page - 1) * page_size : page * page_size],
        }

    def work_page(self, entry_id: str) -> bytes:
        e, r = BY_ID[entry_id], self._results[entry_id]
        esc = html.escape
        rows = [
            ("Title", esc(e.title)),
            ("Creator", esc(e.creator) if e.creator else "<em>unknown</em>"),
            ("Licence", f'<a href="{esc(r["license_url"])}">{esc(licenses.get(e.license, e.license_version).name)}</a>'),
            ("Image", f'<a href="{esc(r["url"])}">{esc(e.file)}</a>'),
            ("Origin", esc(e.origin)),
            ("Notes", esc(e.description or "")),
        ]
        if e.landing_url:
            rows.append(("Original page", f'<a href="{esc(e.landing_url)}">{esc(e.landing_url)}</a>'))
        body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
        page = (
            f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{esc(e.title)}</title></head>"
            f"<body><h1>{esc(e.title)}</h1><table>{body}</table>"
            f"<p>{esc(r['attribution'])}</p></body></html>\n"
        )
        return page.encode()

"""The embedded demo catalog: licence-documented sample photos from installed packages, served
over real HTTP on 127.0.0.1 in Openverse's search format.

The photos ship inside scikit-image, scikit-learn, matplotlib and PyWavelets; their licences and
creators are the ones those packages document (see shared/data/person_dev/SOURCES.md). Next to the
images a build should keep, the catalog carries, on purpose, one entry for each way a build must
reject a candidate: people, a non-commercial licence, a missing creator, an exact duplicate, a
corrupt JPEG, an HTML page sent as image/jpeg, a 404 and an opt-out header. Each entry states its
expected outcome (`Entry.expect`) so tests can check a build end to end. Images that the catalog
generates itself are credited to "passkit demo generator"; no real photo is ever mislabelled.

    with DemoCatalog() as cat:
        requests.get(cat.base_url + "/v1/images/?q=*&page=1&page_size=20").json()
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import importlib.util
import io
import json
import math
import os
import re
import urllib.parse
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import numpy as np
import requests

from passkit import licenses
from passkit.config import DemoSourceSpec
from passkit.localserver import LoopbackServer
from passkit.records import Candidate
from passkit.sources.openverse_format import SEARCH_PATH, iter_search, result_to_candidate

CATALOG_VERSION = "1"
GENERATOR = "passkit demo generator"
MAX_PAGE_SIZE = 500
# Builds serve the catalog on this fixed port (see build_port); DemoCatalog() alone takes a free one.
DEMO_PORT = 28731

# Expected outcomes, one per way a candidate can end in a build of the demo catalog.
EXPECTS = ("kept", "people", "license", "attribution", "duplicate", "decode", "not_image", "http_404", "optout")


@dataclass(frozen=True, slots=True)
class Entry:
    """One catalog record. `origin` says where the bytes come from:

    "<package>:<path inside the package>" a file shipped in an installed wheel;
    "pywt:ascent" the pywt.data.ascent() array, PNG-encoded with Pillow;
    "gen:<name>"  an image the demo draws itself (deterministic);
    "truncate:<origin>" the first 40 % of a real JPEG followed by garbage;
    "html"        an HTML page; "missing": nothing is served at the URL.
    """

    id: str
    file: str  # served as /images/<file>; the extension sets the Content-Type
    origin: str
    title: str
    license: str  # Openverse short code: "by", "by-nc", "cc0", "pdm"
    license_version: str
    creator: str | None
    expect: str
    tags: tuple[str, ...]
    creator_url: str | None = None
    # The work's page: the original where the package documents it, else the package's documentation
    # of the image; None (generated and broken entries, grace_hopper): /works/<id> on the catalog server.
    landing_url: str | None = None
    provider: str = "passkit-demo"
    category: str = "photograph"
    description: str | None = None
    headers: tuple[tuple[str, str], ...] = ()  # extra response headers on the image


_SK = "scikit-image"
_SKL = "scikit-learn"
_SKDOC = "https://scikit-image.org/docs/stable/api/skimage.data.html#skimage.data."
_FLICKR_CHINA = "https://www.flickr.com/photos/danielbuechele/6061409035/"
_FLICKR_FLOWER = "https://www.flickr.com/photos/vultilion/6056698931/"

CATALOG: tuple[Entry, ...] = (
    # ---- kept: no people, allowed licence (under the by-or-public-domain policy), complete TASL
    Entry(
        "demo-china", "china.jpg", "sklearn:datasets/images/china.jpg", "Pagoda above a lake",
        "by", "2.0", "danielbuechele", "kept", ("architecture", "pagoda", "lake", "china", "trees"),
        creator_url="https://www.flickr.com/photos/danielbuechele/", landing_url=_FLICKR_CHINA,
        provider=_SKL, description="scikit-learn sample image china.jpg (sklearn/datasets/images/README.txt).",
    ),
    Entry(
        "demo-flower", "flower.jpg", "sklearn:datasets/images/flower.jpg", "Orange dahlia",
        "by", "2.0", "vultilion", "kept", ("flower", "dahlia", "orange", "plant"),
        creator_url="https://www.flickr.com/photos/vultilion/", landing_url=_FLICKR_FLOWER,
        provider=_SKL,
        description="scikit-learn sample image flower.jpg; its README's attribution line wrongly "
        "repeats danielbuechele, the linked Flickr page is by vultilion.",
    ),
    Entry(
        "demo-chelsea", "chelsea.png", "skimage:data/chelsea.png", "Chelsea the cat",
        "cc0", "1.0", "Stefan van der Walt", "kept", ("cat", "animal", "pet"),
        landing_url=_SKDOC + "chelsea", provider=_SK,
        description="skimage.data.chelsea: 'No copyright restrictions. CC0 by the photographer'.",
    ),
    Entry(
        "demo-coffee", "coffee.png", "skimage:data/coffee.png", "Coffee cup",
        "cc0", "1.0", "Rachel Michetti", "kept", ("coffee", "cup", "drink", "table"),
        landing_url=_SKDOC + "coffee", provider=_SK,
        description="skimage.data.coffee: courtesy of Pikolo Espresso Bar, CC0 by the photographer.",
    ),
    Entry(
        "demo-brick", "brick.png", "skimage:data/brick.png", "Brick wall texture (Bricks25)",
        "cc0", "1.0", "CC0Textures", "kept", ("brick", "wall", "texture"), provider=_SK,
        landing_url="https://cc0textures.com/view.php?tex=Bricks25", category="photograph",
        description="skimage.data.brick: from CC0Textures Bricks25, rotated, cropped and scaled.",
    ),
    Entry(
        "demo-grass", "grass.png", "skimage:data/grass.png", "Grass texture",
        "cc0", "1.0", "linolafett", "kept", ("grass", "texture", "green", "plant"),
        creator_url="https://www.deviantart.com/linolafett",
        landing_url="https://www.deviantart.com/linolafett/art/Grass-01-434853879", provider=_SK,
        description="skimage.data.grass: from DeviantArt, CC0.",
    ),
    Entry(
        "demo-cell", "cell.png", "skimage:data/cell.png", "Cell floating in saline",
        "cc0", "1.0", "Paul Müller et al.", "kept", ("cell", "microscopy", "hologram"),
        landing_url=_SKDOC + "cell", provider=_SK,
        description="skimage.data.cell: quantitative phase image, CC0 (Müller et al., Optics Express 2018).",
    ),
    Entry(
        "demo-rocket", "rocket.jpg", "skimage:data/rocket.jpg", "Launch of DSCOVR on Falcon 9",
        "pdm", "1.0", "SpaceX", "kept", ("rocket", "launch", "falcon", "space"),
        creator_url="https://www.flickr.com/photos/spacexphotos/",
        landing_url="https://www.flickr.com/photos/spacexphotos/16511594820/", provider=_SK,
        description="skimage.data.rocket: captured by SpaceX and released into the public domain.",
    ),
    Entry(
        "demo-hubble-deep-field", "hubble_deep_field.jpg", "skimage:data/hubble_deep_field.jpg",
        "Hubble eXtreme Deep Field", "pdm", "1.0", "NASA", "kept", ("hubble", "galaxies", "space", "stars"),
        landing_url="http://hubblesite.org/newscenter/archive/releases/2012/37/image/a/", provider=_SK,
        description="skimage.data.hubble_deep_field: captured by NASA, public domain.",
    ),
    Entry(
        "demo-text", "text.png", "skimage:data/text.png", "Handwritten text on a corner",
        "pdm", "1.0", "Wikipedia contributor (File:Corner.png)", "kept", ("text", "handwriting", "paper"),
        landing_url="https://en.wikipedia.org/wiki/File:Corner.png", provider=_SK,
        description="skimage.data.text: no known copyright restrictions, released into the public domain.",
    ),
    Entry(
        "demo-clock-motion", "clock_motion.png", "skimage:data/clock_motion.png", "Wall clock, motion blur",
        "pdm", "1.0", "Stefan van der Walt", "kept", ("clock", "blur", "motion"),
        landing_url=_SKDOC + "clock", provider=_SK,
        description="skimage.data.clock: released into the public domain by the photographer.",
    ),
    # ---- people: allowed licences, rejected by the people filter
    Entry(
        "demo-astronaut", "astronaut.png", "skimage:data/astronaut.png", "Astronaut Eileen Collins",
        "pdm", "1.0", "NASA", "people", ("astronaut", "portrait", "space"),
        landing_url="https://flic.kr/p/r9qvLn", provider=_SK,
        description="skimage.data.astronaut: NASA Great Images, public domain. Shows a person.",
    ),
    Entry(
        "demo-camera", "camera.png", "skimage:data/camera.png", "Cameraman",
        "cc0", "1.0", "Lav Varshney", "people", ("camera", "tripod", "photographer"),
        landing_url=_SKDOC + "camera", provider=_SK,
        description="skimage.data.camera: CC0 by the photographer. Shows a person.",
    ),
    Entry(
        "demo-grace-hopper", "grace_hopper.jpg", "matplotlib:mpl-data/sample_data/grace_hopper.jpg",
        "Portrait of Grace Hopper", "pdm", "1.0", "US Navy", "people", ("portrait", "navy", "uniform"),
        provider="matplotlib",
        description="matplotlib sample_data/grace_hopper.jpg; believed public domain, US Navy portrait, "
        "unverified (matplotlib states no licence). Shows a person.",
    ),
    Entry(
        "demo-ascent", "ascent.png", "pywt:ascent", "Ascent to the top",
        "pdm", "1.0", "public-domain-image.com", "people", ("stairs", "tower", "architecture"),
        landing_url="http://www.public-domain-image.com/people-public-domain-images-pictures/",
        provider="pywavelets",
        description="pywt.data.ascent(): derived from accent-to-the-top.jpg at public-domain-image.com "
        "(public domain per the PyWavelets docstring); the photographer is not named, the credit goes to "
        "the site. Two small people on a stair tower.",
    ),
    # ---- licence gate: generated images, never real photos relabelled
    Entry(
        "demo-gradient", "gradient_study.jpg", "gen:gradient", "Gradient study with shapes",
        "by-nc", "2.0", GENERATOR, "license", ("gradient", "shapes", "abstract"),
        category="illustration", description="Drawn by the demo; non-commercial licence, refused by policy.",
    ),
    Entry(
        "demo-rings", "rings.jpg", "gen:rings", "Concentric rings",
        "by", "4.0", None, "attribution", ("rings", "circles", "abstract"),
        category="illustration",
        description="Drawn by the demo; CC BY without a creator, so the credit cannot be given.",
    ),
    # ---- dedup: same bytes as demo-china under another id, title and URL
    Entry(
        "demo-china-repost", "summer_palace_repost.jpg", "sklearn:datasets/images/china.jpg",
        "Summer Palace tower (repost)", "by", "2.0", "danielbuechele", "duplicate",
        ("architecture", "tower", "beijing"),
        creator_url="https://www.flickr.com/photos/danielbuechele/", landing_url=_FLICKR_CHINA,
        provider=_SKL, description="Byte-identical copy of demo-china; the release keeps one.",
    ),
    # ---- image check and fetch failures
    Entry(
        "demo-flower-truncated", "dahlia_upload.jpg", "truncate:sklearn:datasets/images/flower.jpg",
        "Orange dahlia (interrupted upload)", "by", "2.0", "vultilion", "decode", ("flower", "dahlia"),
        creator_url="https://www.flickr.com/photos/vultilion/", landing_url=_FLICKR_FLOWER, provider=_SKL,
        description="First 40 % of flower.jpg followed by garbage: a JPEG that does not decode.",
    ),
    Entry(
        "demo-harbour", "harbour_at_dusk.jpg", "html", "Harbour at dusk",
        "by", "4.0", GENERATOR, "not_image", ("harbour", "boats", "dusk"),
        description="The URL answers with an HTML page labelled Content-Type: image/jpeg.",
    ),
    Entry(
        "demo-lighthouse", "lighthouse.jpg", "missing", "Lighthouse on the cliffs",
        "by", "4.0", GENERATOR, "http_404", ("lighthouse", "cliffs", "sea"),
        description="Nothing is served at the URL: 404.",
    ),
    # ---- politeness: the image response opts out of AI training
    Entry(
        "demo-gravel", "gravel.png", "skimage:data/gravel.png", "Gravel texture (Gravel04)",
        "cc0", "1.0", "CC0Textures", "optout", ("gravel", "stones", "texture"),
        landing_url="https://cc0textures.com/view.php?tex=Gravel04", provider=_SK,
        headers=(("X-Robots-Tag", "noai"),),
        description="skimage.data.gravel, CC0; served with X-Robots-Tag: noai, so a polite build skips it.",
    ),
)

# Left out on purpose: moon, page, motorcycle (scikit-image) and aero (PyWavelets) state no licence;
# retina and ihc are human tissue (a policy edge case); coins is "no known copyright restrictions",
# not a licence; horse (CC0 clipart silhouette, no person) makes the yolox_nano person detector fire
# (0.51 against a 0.30 threshold), so its outcome would depend on which detector weights are installed.

BY_ID: dict[str, Entry] = {e.id: e for e in CATALOG}


def expected(policy: str = "by-or-public-domain") -> dict[str, str]:
    """source_id -> expected outcome under a licence policy.

    `Entry.expect` assumes "by-or-public-domain" (the demo pipeline's policy). The licence gate runs
    before fetching, so under "cc-by" every CC0/PDM entry ends as "license" instead.
    """
    pol = licenses.policy(policy)
    out = {}
    for e in CATALOG:
        allowed = pol.allows(licenses.get(e.license, e.license_version))
        out[e.id] = e.expect if allowed else "license"
    return out


# ----------------------------------------------------------------------------- bytes


def _package_file(package: str, rel: str) -> Path:
    """A data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the demo catalog needs the {package!r} package (pip install passkit installs it)")
    for root in spec.submodule_search_locations:
        p = Path(root) / rel
        if p.is_file():
            return p
    raise RuntimeError(f"the demo catalog needs {package}/{rel}, which this installation does not ship")


def _jpeg(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _gen_gradient() -> bytes:
    from PIL import Image, ImageDraw

    h, w = 320, 480
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    arr = np.stack([x / w * 255, y / h * 255, (np.sin(x / 37.0) * 0.5 + 0.5) * 255], axis=-1).astype(np.uint8)
    im = Image.fromarray(arr)
    d = ImageDraw.Draw(im)
    d.ellipse((40, 40, 180, 180), fill=(250, 210, 40))
    d.rectangle((260, 120, 430, 280), fill=(30, 60, 160))
    d.polygon([(200, 300), (300, 200), (360, 300)], fill=(200, 40, 60))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _gen_rings() -> bytes:
    n = 400
    y, x = np.mgrid[0:n, 0:n].astype(np.float32)
    r = np.hypot(x - n / 2, y - n / 2)
    wave = np.sin(r / 6.0) * 0.5 + 0.5
    arr = np.stack([wave * 255, (1 - wave) * 180 + 40, np.full_like(wave, 120)], axis=-1).astype(np.uint8)
    return _jpeg(arr)


def _ascent_png() -> bytes:
    import pywt.data
    from PIL import Image

    arr = np.clip(np.asarray(pywt.data.ascent()), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _truncate(data: bytes) -> bytes:
    # No 0xFF in the garbage: a stray EOI marker would let a lenient decoder "finish" the image.
    garbage = np.random.default_rng(20240101).integers(0, 255, 2048, dtype=np.uint8).tobytes()
    return data[: int(len(data) * 0.4)] + garbage


_HTML_AS_JPEG = (
    b"<!DOCTYPE html>\n<html><head><title>Harbour at dusk</title></head>\n"
    b"<body><h1>Harbour at dusk</h1><p>This is a web page, not an image. "
    b"(passkit demo: served with Content-Type image/jpeg on purpose.)</p></body></html>\n"
)


def _load(origin: str) -> bytes | None:
    if origin == "missing":
        return None
    if origin == "html":
        return _HTML_AS_JPEG
    if origin == "pywt:ascent":
        return _ascent_png()
    if origin == "gen:gradient":
        return _gen_gradient()
    if origin == "gen:rings":
        return _gen_rings()
    if origin.startswith("truncate:"):
        data = _load(origin.removeprefix("truncate:"))
        assert data is not None
        return _truncate(data)
    package, _, rel = origin.partition(":")
    return _package_file(package, rel).read_bytes()


@cache
def catalog_bytes() -> dict[str, bytes]:
    """file name -> served bytes, for every entry that serves something (computed once)."""
    out: dict[str, bytes] = {}
    for e in CATALOG:
        data = _load(e.origin)
        if data is not None:
            out[e.file] = data
    return out


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


# ----------------------------------------------------------------------------- source


class DemoSource:
    """Candidates from a running DemoCatalog, found through its Openverse-format search."""

    name = "demo"

    def __init__(self, spec: DemoSourceSpec, catalog: DemoCatalog) -> None:
        self.spec = spec
        self.catalog = catalog

    @property
    def base_url(self) -> str:
        return self.catalog.base_url

    def candidates(self) -> Iterator[Candidate]:
        seen: set[str] = set()
        with requests.Session() as session:
            for query in self.spec.queries:
                for result in iter_search(session, self.base_url, query, self.spec.page_size):
                    cand = result_to_candidate(result, self.name, query)
                    if cand.source_id not in seen:
                        seen.add(cand.source_id)
                        yield cand

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "demo",
            "catalog_version": CATALOG_VERSION,
            "queries": list(self.spec.queries),
            "page_size": self.spec.page_size,
            "base_url": self.base_url,
            "entries": len(CATALOG),
        }


def build_port(spec: DemoSourceSpec | None = None) -> int:
    """The port a build serves the catalog on: spec.port (if the spec grows one), $PASSKIT_DEMO_PORT, or
    DEMO_PORT. Image URLs carry the port, and the URLs are part of each unit's fingerprint and of every
    sample's metadata, so a fixed port is what lets a rerun resume and rebuild byte-identical shards."""
    port = getattr(spec, "port", None)
    if port is None:
        env = os.environ.get("PASSKIT_DEMO_PORT", "").strip()
        try:
            port = int(env) if env else DEMO_PORT
        except ValueError:
            raise ValueError(f"PASSKIT_DEMO_PORT must be a port number, got {env!r}") from None
    if not 0 <= int(port) <= 65535:
        raise ValueError(f"demo catalog port out of range: {port}")
    return int(port)


@contextlib.contextmanager
def open_demo(spec: DemoSourceSpec) -> Iterator[DemoSource]:
    port = build_port(spec)
    catalog = DemoCatalog(port=port)
    try:
        catalog.start()
    except OSError as e:
        if port == 0:
            raise
        warnings.warn(
            f"demo catalog: port {port} is taken ({e.strerror}); serving on a free port instead, so this "
            "build's image URLs differ from other builds' (no resume across runs, shards not byte-identical)",
            RuntimeWarning,
            stacklevel=3,
        )
        catalog = DemoCatalog(port=0).start()
    try:
        yield DemoSource(spec, catalog)
    finally:
        catalog.stop()

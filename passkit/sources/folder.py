"""Local images with sidecar JSON as a source.

Each image `<name>.<ext>` needs a sidecar `<name>.<ext>.json` or `<name>.json` holding its licence
and attribution: any of id, title, creator, creator_url, landing_url, provider, license,
license_version, license_url (`defaults` in the spec fill what every sidecar leaves out). An image
without a readable sidecar is a rejected candidate (`missing_sidecar`, `bad_sidecar`) with its path,
never an image with made-up terms.

The fetch stage speaks HTTP, so for the life of the source the folder is served read-only on
127.0.0.1 (only the listed image files, nothing else); allowlist 127.0.0.1 in `fetch.allow_private`.
The port is fixed by default (28732, or $PASSKIT_FOLDER_PORT) because image URLs are part of each
unit's fingerprint: a fixed port lets a rerun resume and rebuild byte-identical shards.
"""

from __future__ import annotations

import contextlib
import json
import mimetypes
import os
import urllib.parse
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from passkit.localserver import LoopbackServer
from passkit.records import Candidate
from passkit.sources.folder_spec import FolderSourceSpec

FOLDER_PORT = 28732
FIELDS = ("title", "creator", "creator_url", "landing_url", "provider", "license", "license_version", "license_url")


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        rel = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
        path = self.server.files.get(rel)
        if path is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        try:
            data = path.read_bytes()
        except OSError:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", mimetypes.guess_type(path.name)[0] or "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _Server(LoopbackServer):
    files: dict[str, Path]  # URL path -> file, filled as candidates are listed: nothing else is served


class FolderSource:
    name = "folder"

    def __init__(self, spec: FolderSourceSpec, root: Path, server: _Server) -> None:
        self.spec = spec
        self.root = root
        self.server = server
        self.exts = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in spec.extensions}
        self.stats: dict[str, int] = {"images": 0, "malformed": 0}

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def _walk(self) -> Iterator[Path]:
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in sorted(filenames):
                p = Path(dirpath) / name
                if p.suffix.lower() in self.exts and not name.startswith(".") and p.is_file():
                    yield p

    def _sidecar(self, img: Path) -> Path | None:
        for cand in (img.with_name(img.name + ".json"), img.with_suffix(".json")):
            if cand.is_file():
                return cand
        return None

    def candidates(self) -> Iterator[Candidate]:
        for img in self._walk():
            rel = img.relative_to(self.root).as_posix()
            self.stats["images"] += 1
            self.server.files[rel] = img
            url = f"{self.base_url}/{urllib.parse.quote(rel)}"
            side = self._sidecar(img)
            meta: dict[str, Any] = dict(self.spec.defaults)
            err: tuple[str, str] | None = None
            if side is None:
                if not self.spec.defaults:
                    err = ("missing_sidecar", f"{rel}: no {img.name}.json or {img.stem}.json beside it")
            else:
                try:
                    data = json.loads(side.read_text(encoding="utf-8"))
                    if not isinstance(data, dict):
                        raise ValueError(f"a JSON {type(data).__name__}, not an object")
                    meta.update({k: v for k, v in data.items() if v not in (None, "")})
                except (OSError, UnicodeDecodeError, ValueError) as e:
                    err = ("bad_sidecar", f"{side.relative_to(self.root).as_posix()}: {e}"[:300])
            sid = str(meta.get("id") or rel)
            if err is not None:
                self.stats["malformed"] += 1
                yield Candidate(self.name, rel, url, query=str(self.spec.path), extra={"path": rel}, error=err)
                continue
            vals = {f: (str(meta[f]).strip() or None) if meta.get(f) is not None else None for f in FIELDS}
            yield Candidate(source=self.name, source_id=sid, url=url, query=str(self.spec.path),
                            extra={"path": rel}, **vals)

    def describe(self) -> dict[str, Any]:
        return {"kind": "folder", "path": str(self.spec.path), "base_url": self.base_url, "stats": self.stats}


def serve_port(spec: FolderSourceSpec) -> int:
    if spec.port is not None:
        return spec.port
    env = os.environ.get("PASSKIT_FOLDER_PORT", "").strip()
    try:
        return int(env) if env else FOLDER_PORT
    except ValueError:
        raise ValueError(f"PASSKIT_FOLDER_PORT must be a port number, got {env!r}") from None


@contextlib.contextmanager
def open_folder(spec: FolderSourceSpec) -> Iterator[FolderSource]:
    root = Path(spec.path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"folder source: {root} is not a directory")
    port = serve_port(spec)
    try:
        server = _Server(_Handler, port, name="passkit-folder-source")
    except OSError as e:
        if port == 0:
            raise
        warnings.warn(
            f"folder source: port {port} is taken ({e.strerror}); serving on a free port, so image URLs "
            "differ from other builds' (no resume across runs)", RuntimeWarning, stacklevel=3,
        )
        server = _Server(_Handler, 0, name="passkit-folder-source")
    server.files = {}
    with server:
        yield FolderSource(spec, root.resolve(), server)

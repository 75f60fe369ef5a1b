"""`passkit review WORKDIR`: a local page to decide the people filter's review queue by keyboard.

The queue is read from the work folder a build left: every ledger row in the review band (status
"review"), plus `--sample N` kept images drawn at random (seeded) for a spot check. Images come
straight out of the unit staging tars; the detector boxes from the units' `.people.json` sidecars.
Decisions go to `WORKDIR/review.sqlite` (`passkit.review.store`) as they are made; the next
`passkit build` (or release rebuild) applies them. The server listens on 127.0.0.1 only by default
and takes no other input than the two labels, so it is safe to leave running on a workstation.
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from passkit.ledger import ledger_paths, people_sidecar, unit_paths
from passkit.localserver import LoopbackServer
from passkit.records import Status
from passkit.review.store import LABELS, ReviewStore, ReviewStoreError

TEMPLATE = Path(__file__).with_name("templates") / "review.html"
MAX_BODY = 4096


class ReviewError(RuntimeError):
    """The work folder cannot be reviewed (no units, unreadable ledgers)."""


@dataclass(slots=True)
class QueueItem:
    key: str
    kind: str  # review | spot
    unit: int
    title: str | None
    url: str | None
    detail: str | None
    scores: dict[str, float]
    boxes: dict[str, list[list[float]]]
    width: int | None
    height: int | None


def load_queue(work_dir: Path, sample: int = 0, seed: int = 0) -> tuple[list[QueueItem], ReviewStore]:
    """The review-band rows of the work folder's units (and `sample` random kept rows), queued in the store."""
    work_dir = Path(work_dir)
    units = work_dir / "units"
    ledgers = ledger_paths(units)
    if not ledgers:
        raise ReviewError(f"{units} holds no finished work units; run `passkit build SPEC` first "
                          "(WORKDIR is the spec's work.dir, e.g. work/demo)")
    review: list[dict[str, Any]] = []
    kept: list[dict[str, Any]] = []
    cols = ["unit", "key", "status", "title", "url", "detail", "scores", "width", "height"]
    for ledger in ledgers:
        try:
            rows = pq.read_table(ledger, columns=cols).to_pylist()
        except Exception as e:  # noqa: BLE001 - any unreadable ledger is reported the same way
            raise ReviewError(f"{ledger}: unreadable ledger ({type(e).__name__}: {e})") from None
        review += [r for r in rows if r["status"] == Status.REVIEW]
        kept += [r for r in rows if r["status"] == Status.KEPT]
    store = ReviewStore.of(work_dir)
    store.add(sorted(r["key"] for r in review), "review")
    if sample > 0:
        queued = store.items()
        pool = sorted(r["key"] for r in kept if r["key"] not in queued)
        store.add(sorted(random.Random(seed).sample(pool, min(sample, len(pool)))), "spot")
    kinds = store.items()
    boxes: dict[str, dict[str, Any]] = {}
    for ledger in ledgers:
        side = people_sidecar(ledger)
        if side.is_file():
            with contextlib.suppress(OSError, ValueError):  # boxes are a help, not a requirement
                boxes.update(json.loads(side.read_text()))
    items = [
        QueueItem(r["key"], kinds[r["key"]], r["unit"], r["title"], r["url"], r["detail"],
                  dict(r["scores"] or []), boxes.get(r["key"], {}), r["width"], r["height"])
        for r in review + kept if r["key"] in kinds
    ]
    items.sort(key=lambda it: (it.kind != "review", it.key))
    return items, store


class _Images:
    """JPEG bytes of staged samples, read by offset out of the unit tars."""

    def __init__(self, units: Path, items: list[QueueItem]):
        from passkit.shards import check_tar

        self.where: dict[str, tuple[Path, int, int]] = {}
        for unit in sorted({it.unit for it in items}):
            tar = unit_paths(units, unit)[0]
            for m in check_tar(tar):
                if m.name.endswith(".jpg"):
                    self.where[m.name[: -len(".jpg")]] = (tar, m.offset_data, m.size)

    def read(self, key: str) -> bytes | None:
        hit = self.where.get(key)
        if hit is None:
            return None
        path, off, size = hit
        with open(path, "rb") as f:
            f.seek(off)
            return f.read(size)


class ReviewApp:
    """State behind the HTTP handler: the queue, the images and the store (guarded by a lock)."""

    def __init__(self, work_dir: Path, sample: int = 0, seed: int = 0, reviewer: str = ""):
        self.work_dir = Path(work_dir)
        self.items, store = load_queue(self.work_dir, sample, seed)
        store.close()
        self.by_key = {it.key: it for it in self.items}
        self.images = _Images(self.work_dir / "units", self.items)
        self.reviewer = reviewer
        self.lock = threading.Lock()
        self.store = ReviewStore(store.path, shared=True)  # the server's threads share it under the lock

    def state(self) -> dict[str, Any]:
        with self.lock:
            decided = self.store.decisions()
        out = []
        for it in self.items:
            d = decided.get(it.key)
            out.append({
                "key": it.key, "kind": it.kind, "title": it.title, "url": it.url, "detail": it.detail,
                "scores": it.scores, "boxes": it.boxes, "width": it.width, "height": it.height,
                "decision": d.label if d else None,
            })
        done = sum(1 for o in out if o["decision"])
        return {"items": out, "total": len(out), "decided": done, "work_dir": str(self.work_dir)}

    def decide(self, key: str, label: str | None) -> dict[str, Any]:
        if key not in self.by_key:
            raise ReviewStoreError(f"{key!r} is not in this review queue")
        with self.lock:
            if label is None:
                self.store.undo(key)
            else:
                self.store.decide(key, label, self.reviewer)
        return {"key": key, "decision": label}


def _handler(app: ReviewApp) -> type[BaseHTTPRequestHandler]:
    page = TEMPLATE.read_bytes()

    class Handler(BaseHTTPRequestHandler):
        server_version = "passkit-review"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            pass

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, code: int, obj: Any) -> None:
            self._send(code, json.dumps(obj).encode(), "application/json")

        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            path = self.path.split("?", 1)[0]
            if path in ("/", "/index.html"):
                self._send(200, page, "text/html; charset=utf-8")
            elif path == "/api/items":
                self._json(200, app.state())
            elif path.startswith("/image/") and path.endswith(".jpg"):
                data = app.images.read(path[len("/image/"): -len(".jpg")])
                if data is None:
                    self._json(404, {"error": "no such image"})
                else:
                    self._send(200, data, "image/jpeg")
            else:
                self._json(404, {"error": "not found"})

        def do_POST(self) -> None:  # noqa: N802 - stdlib name
            if self.path != "/api/decide":
                self._json(404, {"error": "not found"})
                return
            n = int(self.headers.get("Content-Length") or 0)
            if n <= 0 or n > MAX_BODY:
                self._json(400, {"error": "body missing or too large"})
                return
            try:
                body = json.loads(self.rfile.read(n))
                label = body.get("label")
                if label is not None and label not in LABELS:
                    raise ReviewStoreError(f"label must be one of {LABELS} or null")
                self._json(200, app.decide(str(body["key"]), label))
            except (ValueError, KeyError, TypeError, ReviewStoreError) as e:
                self._json(400, {"error": str(e)})

    return Handler


def make_server(work_dir: Path, host: str = "127.0.0.1", port: int = 0, sample: int = 0, seed: int = 0,
                reviewer: str = "") -> tuple[LoopbackServer, ReviewApp]:
    """A ready (not yet serving) server; `port=0` picks a free port (see `server.server_address`)."""
    app = ReviewApp(work_dir, sample, seed, reviewer)
    return LoopbackServer(_handler(app), port, host, name="passkit-review"), app


def serve(work_dir: Path, host: str = "127.0.0.1", port: int = 8765, sample: int = 0, seed: int = 0,
          reviewer: str = "", log: Callable[[str], None] = print) -> None:
    """Serve until interrupted; each decision is stored the moment it is made."""
    try:
        server, app = make_server(work_dir, host, port, sample, seed, reviewer)
    except OSError as e:
        raise ReviewError(f"cannot listen on {host}:{port}: {e}; pass --port 0 for any free port") from None
    h, p = server.server_address[:2]
    n_review = sum(1 for it in app.items if it.kind == "review")
    log(f"review queue: {n_review} in the review band, {len(app.items) - n_review} spot checks; "
        f"decisions go to {app.store.path}")
    log(f"open http://{h}:{p}/  (keys: p = person, n = no person, u = undo, arrows/j/k = move; Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        app.store.close()
    st = app.state()
    log(f"{st['decided']} of {st['total']} decided; run the build again to apply them to the release")

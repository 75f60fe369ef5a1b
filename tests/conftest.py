"""Shared fixtures: test data locations, the models folder, a programmable local HTTP server.

Test data comes from three places:

* `tests/data/`: recorded API responses (`fixtures/`) and the person_dev labels, committed, always there;
* installed packages: the 24 person_dev photos are sample images that ship inside scikit-image,
  scikit-learn, matplotlib and PyWavelets, copied (or exported from .npz) into a temporary folder;
* outside the repository, because they cannot be committed: detector weights (`$PASSKIT_MODELS`)
  and the 50 MB COCO dev set (`$PASSKIT_COCO_DEV`). Both default to the `shared/` folder beside the
  repository when it exists. Tests that need them skip, and a block at the end of the run says how
  many and how to provide the data.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import os
import shutil
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from importlib import metadata
from pathlib import Path

import pytest

from passkit.localserver import LoopbackServer
from tests.helpers import DATA, ROOT

SHARED = ROOT.parent / "shared"
FIXTURES = DATA / "fixtures"
PERSON_DEV = DATA / "person_dev"

MODELS_ENV = "PASSKIT_MODELS"  # the name passkit.models reads (models.ENV_VAR)
COCO_ENV = "PASSKIT_COCO_DEV"

# Tests use the shared models folder unless the caller chose one (make test sets it too).
if MODELS_ENV not in os.environ and (SHARED / "models").is_dir():
    os.environ[MODELS_ENV] = str(SHARED / "models")


# ----------------------------------------------------------------------------- recorded API responses


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """Recorded Openverse, Commons and Flickr responses and YFCC100M lines (provenance in SOURCES.md)."""
    return FIXTURES


# ----------------------------------------------------------------------------- person_dev, from installed packages

# The two PyWavelets arrays are exported to PNG. Pillow's default PNG encoder (zlib level 6) gives the
# bytes recorded in provenance.csv; another zlib build may compress differently, so an export whose
# bytes differ is accepted when its decoded pixels match these hashes (sha256 of `Image.tobytes()`, L 512x512).
NPZ_PIXELS_SHA256 = {
    "images/pywt_ascent.png": "c7777d46c3f4e3119ddbec92ad28c09193202a7a4aab08622bc7e4b4a3ba88e6",
    "images/pywt_aero.png": "cc768db67eab13ef8dab887b1b4957796993f501035e8c230d736066de7a8f1e",
}


def _package_file(source: str) -> tuple[str, str, Path | None]:
    """`scikit-image 0.26.0:skimage/data/astronaut.png` -> (distribution, recorded version, installed path or None)."""
    dist_version, rel = source.split(":", 1)
    dist, _, version = dist_version.rpartition(" ")
    top, _, rest = rel.partition("/")
    # find_spec locates a top-level package without importing it (skimage and sklearn are slow to import)
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        return dist, version, None
    path = Path(next(iter(spec.submodule_search_locations))) / rest
    return dist, version, path if path.is_file() else None


def _export_npz(src: Path, dest: Path) -> str:
    """Write the array in a PyWavelets .npz as a PNG; returns the sha256 of its decoded pixels."""
    import numpy as np
    from PIL import Image

    with np.load(src) as z:
        arr = z["data"]
    Image.fromarray(arr).save(dest, "PNG", compress_level=6)
    with Image.open(dest) as im:
        return hashlib.sha256(im.tobytes()).hexdigest()


@pytest.fixture(scope="session")
def person_dev_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """person_dev (24 hand-labelled photos) as `passkit filter eval` reads it: labels.csv, provenance.csv
    and images/, the images taken from the installed packages and checked against provenance.csv.

    Skips when a package that carries the photos is not installed; fails when a photo's bytes are not the
    labelled ones (another package version may ship a different image, and the labels would not hold).
    """
    out = tmp_path_factory.mktemp("person_dev")
    for name in ("labels.csv", "provenance.csv", "SOURCES.md"):
        shutil.copyfile(PERSON_DEV / name, out / name)
    (out / "images").mkdir()
    with open(PERSON_DEV / "provenance.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    with open(PERSON_DEV / "labels.csv", newline="") as f:
        assert [r["file"] for r in csv.DictReader(f)] == [r["file"] for r in rows], "labels.csv vs provenance.csv"
    wrong: list[str] = []
    for r in rows:
        dist, version, src = _package_file(r["source"])
        if src is None:
            rel = r["source"].split(":", 1)[1]
            pytest.skip(
                f"person_dev: {r['file']} comes from {dist} ({rel}), not installed here; "
                "pip install -e '.[dev]' installs it"
            )
        dest = out / r["file"]
        if src.suffix == ".npz":
            pixels = _export_npz(src, dest)
            ok = hashlib.sha256(dest.read_bytes()).hexdigest() == r["sha256"] or pixels == NPZ_PIXELS_SHA256[r["file"]]
        else:
            shutil.copyfile(src, dest)
            ok = hashlib.sha256(dest.read_bytes()).hexdigest() == r["sha256"]
        if not ok:
            try:
                installed = metadata.version(dist)
            except metadata.PackageNotFoundError:
                installed = "unknown"
            wrong.append(f"{r['file']} from {dist} {installed} (labelled from {version})")
    if wrong:
        pytest.fail("person_dev photos differ from the labelled ones (sha256 vs provenance.csv): " + "; ".join(wrong))
    return out


# ----------------------------------------------------------------------------- data kept outside the repository

WEIGHTS_HOW = (
    f"{MODELS_ENV}=/path/to/models (a folder laid out like ../shared/models), "
    "or `passkit models fetch` (downloads the pinned files to ~/.cache/passkit/models)"
)
COCO_HOW = (
    f"{COCO_ENV}=/path/to/person_dev_coco (default ../shared/data/person_dev_coco; "
    "its SOURCES.md lists the public repositories the 297 COCO photos were taken from)"
)


def _missing_weights() -> tuple[Path, list[str]]:
    """The models folder passkit uses, and the registry's pinned files absent from it."""
    from passkit import models

    base = models.models_dir()
    absent = [f.path for m in models.REGISTRY.values() for f in m.files if not (base / f.path).is_file()]
    return base, absent


def _coco_dev() -> Path:
    env = os.environ.get(COCO_ENV, "").strip()
    return Path(env).expanduser() if env else SHARED / "data" / "person_dev_coco"


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The detector weights folder (`$PASSKIT_MODELS`), with every pinned file present; skips otherwise.

    A present file with the wrong sha256 is not a skip: the tests that use the folder report it.
    """
    base, absent = _missing_weights()
    if absent:
        shown = absent[0] + (f" and {len(absent) - 1} more pinned files" if len(absent) > 1 else "")
        pytest.skip(f"detector weights not found in {base} (no {shown}); set {WEIGHTS_HOW}")
    return base


@pytest.fixture(scope="session")
def coco_dev_dir() -> Path:
    """person_dev_coco (297 COCO photos, 50 MB, not committed): `$PASSKIT_COCO_DEV`; skips if absent."""
    path = _coco_dev()
    if not (path / "labels.csv").is_file():
        pytest.skip(f"COCO dev set not found at {path}; set {COCO_HOW}")
    return path


# ----------------------------------------------------------------------------- end-of-run summary of data skips


@dataclass(frozen=True)
class Resource:
    what: str
    fixture: str
    token: str  # every skip reason for this resource names it
    how: str


RESOURCES = (
    Resource("detector weights", "models_dir", MODELS_ENV, WEIGHTS_HOW),
    Resource("COCO dev set (person_dev_coco)", "coco_dev_dir", COCO_ENV, COCO_HOW),
    Resource("person_dev sample photos", "person_dev_dir", "person_dev:",
             "pip install -e '.[dev]' (scikit-image, scikit-learn, matplotlib, PyWavelets)"),
)
_FIXTURENAMES = pytest.StashKey[dict[str, set[str]]]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # which data fixtures each test asks for, directly or through other fixtures: a test that needs two
    # missing resources skips on the first, yet is counted under both
    config.stash[_FIXTURENAMES] = {it.nodeid: set(getattr(it, "fixturenames", ())) for it in items}


def _skip_reason(rep: pytest.TestReport) -> str:
    lr = rep.longrepr
    return str(lr[2]) if isinstance(lr, tuple) and len(lr) == 3 else str(lr)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> Generator[None]:
    # tryfirst makes this the outermost wrapper, so the block prints after `-ra`'s short summary,
    # just above the final counts, where it is seen
    result = yield
    fixturenames = config.stash.get(_FIXTURENAMES, {})
    counts = dict.fromkeys(RESOURCES, 0)
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if isinstance(r, pytest.TestReport)]
    for rep in skipped:
        reason = _skip_reason(rep)
        if not any(res.token in reason for res in RESOURCES):
            continue
        for res in RESOURCES:
            if res.token in reason or (res.fixture in fixturenames.get(rep.nodeid, ()) and _is_missing(res)):
                counts[res] += 1
    tw = terminalreporter
    if not any(counts.values()):
        tw.write_line("passkit: nothing skipped for missing test data")
        return result
    tw.write_sep("=", "SKIPPED FOR MISSING TEST DATA", yellow=True, bold=True)
    for res, n in counts.items():
        if n:
            tw.write_line(f"  {n:3d} test{'s' if n != 1 else ' '} need the {res.what}", yellow=True, bold=True)
            tw.write_line(f"        provide it: {res.how}")
    tw.write_sep("=", "these tests did not run: a green run does not cover them", yellow=True)
    return result


def _is_missing(res: Resource) -> bool:
    if res.fixture == "models_dir":
        return bool(_missing_weights()[1])
    if res.fixture == "coco_dev_dir":
        return not (_coco_dev() / "labels.csv").is_file()
    return False  # person_dev: counted from its skip reason only


# ----------------------------------------------------------------------------- local HTTP server


Route = Callable[[BaseHTTPRequestHandler], None]


class LocalServer:
    """A 127.0.0.1 server whose routes are Python functions: for fault injection in tests."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: dict[str, int] = {}
        routes, hits = self.routes, self.hits

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                path = self.path.split("?")[0]
                hits[path] = hits.get(path, 0) + 1
                route = routes.get(path)
                if route is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                route(self)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = LoopbackServer(Handler, name="passkit-test-server").start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.port}"

    def url(self, path: str) -> str:
        return self.base + path

    def serve_bytes(self, path: str, body: bytes, ctype: str = "image/jpeg", status: int = 200,
                    headers: dict[str, str] | None = None) -> str:
        def route(h: BaseHTTPRequestHandler) -> None:
            h.send_response(status)
            h.send_header("Content-Type", ctype)
            h.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(body)

        self.routes[path] = route
        return self.url(path)

    def close(self) -> None:
        self.httpd.stop()


@pytest.fixture
def http_server() -> Iterator[LocalServer]:
    s = LocalServer()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance with 2 CPUs for the module's tests (or the one already running)."""
    ray = pytest.importorskip("ray", reason="the ray extra is not installed: pip install -e '.[ray]'")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    if started:
        ray.shutdown()

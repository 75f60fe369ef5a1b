"""torchvision's own COCO release weights in the models folder: where they lie, how they are checked,
and how `passkit models fetch` gets them.

torchvision pins each release file by the first hex digits of its sha256 in the file name
(`<arch>_coco-<hex>.pth`) and checks that prefix when it downloads; it publishes no full sha256. So the
registry records that prefix (what torchvision documents), files are checked against it, and the
detector records the full sha256 of the bytes it loaded in the manifest.

The download goes through torchvision's weights API (`Weights.get_state_dict`, i.e. torch.hub's
`load_state_dict_from_url` with `check_hash=True`) into `<models folder>/torchvision/`, not torch's
own cache, so `PASSKIT_MODELS` is the one place a machine's detector files live.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from passkit import models

FOLDER = "torchvision"  # under the models folder
EXTRA_KEY = "tv_weights"  # a registry entry with this in `extra` is a torchvision release file

# (path, size, mtime_ns) -> sha256: a worker that builds several filters hashes each file once
_HASHED: dict[tuple[str, int, int], str] = {}


def spec(name: str) -> dict[str, str] | None:
    """The torchvision release fields of a registry entry (weights enum, url, file, sha256 prefix), or None."""
    extra = models.get(name).extra
    return extra if EXTRA_KEY in extra else None


def _sha256(p: Path) -> str:
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHED:
        _HASHED[key] = models.sha256_file(p)
    return _HASHED[key]


def check(name: str, base: Path) -> tuple[Path | None, str]:
    """(path, full sha256) of the model's file when present with torchvision's hash prefix; (None, "")
    when absent; `ChecksumError` when present with other bytes (never silently skipped)."""
    s = spec(name)
    assert s is not None, name
    p = base / s["file"]
    if not p.is_file():
        return None, ""
    actual = _sha256(p)
    if not actual.startswith(s["sha256_prefix"]):
        raise models.ChecksumError(p, f"{s['sha256_prefix']}... (torchvision's published prefix)", actual)
    return p, actual


def verify(name: str, base: Path) -> dict[str, str]:
    """{relative path: "ok" | "missing" | "sha256 mismatch: got <hex>"}, as `models.verify` reports."""
    s = spec(name)
    assert s is not None, name
    try:
        p, _ = check(name, base)
    except models.ChecksumError as e:
        return {s["file"]: f"sha256 mismatch: got {e.actual}"}
    return {s["file"]: "ok" if p is not None else "missing"}


def weights_enum(name: str) -> Any:
    """torchvision's Weights member for the entry, checked to still point at the pinned URL (a newer
    torchvision that swapped the file would otherwise fetch bytes nobody measured)."""
    import torchvision

    s = spec(name)
    assert s is not None, name
    w = torchvision.models.get_weight(s[EXTRA_KEY])
    if w.url != s["url"]:
        raise models.FetchError(
            f"{name}: torchvision {torchvision.__version__} serves {s[EXTRA_KEY]} from {w.url}, not the pinned "
            f"{s['url']}; update the registry entry after checking the new file"
        )
    return w


def fetch(name: str, base: Path, mirror: str | None = None, progress: bool = False) -> dict[str, str]:
    """Download the file through torchvision's weights API (hash prefix checked by torch.hub), then
    check it again here; a file with other bytes is replaced, a failed download leaves none behind.
    `mirror`: a URL laid out like the models folder (`{mirror}/torchvision/<file>`), same hash check."""
    import urllib.error

    import torch.hub

    s = spec(name)
    assert s is not None, name
    try:
        if check(name, base)[0] is not None:
            return {s["file"]: "present"}
    except models.ChecksumError:
        (base / s["file"]).unlink()  # torch.hub would load a present file without checking it
    w = weights_enum(name)
    dest = base / s["file"]
    dest.parent.mkdir(parents=True, exist_ok=True)
    url = f"{mirror.rstrip('/')}/{s['file']}" if mirror else s["url"]
    try:
        if mirror:
            torch.hub.download_url_to_file(url, str(dest), s["sha256_prefix"], progress=progress)
        else:
            w.get_state_dict(model_dir=str(dest.parent), progress=progress, check_hash=True, weights_only=True)
    except (urllib.error.URLError, OSError) as e:
        raise models.FetchError(
            f"cannot download {url}: {type(e).__name__}: {e}. This machine seems to have no internet "
            f"access. Run `passkit models fetch --set strong` on a machine that has, then copy "
            f"{base / FOLDER}, or set {models.ENV_VAR} to a folder that holds it."
        ) from None
    except RuntimeError as e:  # torch.hub's "invalid hash value"
        raise models.FetchError(f"{url}: {e}; file not saved") from None
    try:
        check(name, base)
    except models.ChecksumError as e:
        dest.unlink(missing_ok=True)
        raise models.FetchError(f"{url}: sha256 {e.actual} is not the pinned {s['sha256_prefix']}...; "
                                "file not saved") from None
    return {s["file"]: "fetched"}

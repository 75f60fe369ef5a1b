"""report.html: one self-contained page an auditor can open offline.

The funnel from candidates through each stage to kept, the rejection reasons, licences and providers,
people-detector score histograms and a thumbnail grid of kept samples with their credit lines.
The counts are tables whose last column is a bar drawn in HTML; the score histograms are a
matplotlib (Agg) PNG and the thumbnails small JPEGs, both inlined as data: URIs, so the page loads
no other file. matplotlib is imported only when the people filter ran. Only kept samples are ever
shown: thumbnails are read from the release's own shards, which hold no rejected image.
"""

from __future__ import annotations

import base64
import io
from collections import Counter
from pathlib import Path
from typing import Any

from passkit.release.attribution import safe_url
from passkit.release.curate import STAGE_ORDER

MAX_THUMBS = 120
THUMB_SIDE = 200


def warm_up(plots: bool = True) -> None:
    """Compile the HTML templates; let pyarrow look for pandas, which it does (a third of a second)
    on the first array it builds; with `plots`, import matplotlib and load its font list, the fixed
    cost of the first plot. The build calls this in a thread while the workers crawl."""
    import pyarrow as pa

    pa.array([], pa.int8())
    from passkit.release.templates import environment

    for name in ("report.html.j2", "attribution.html.j2"):  # compiled once, cached by jinja
        environment().get_template(name)
    if plots:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot  # noqa: F401
        from matplotlib import font_manager

        font_manager.findfont(font_manager.FontProperties())


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def funnel(counts: dict[str, Any]) -> list[dict[str, Any]]:
    """Stages in funnel order with the candidates each rejected and how many remain after it."""
    by_stage = dict(counts.get("by_stage") or {})
    order = [s for s in STAGE_ORDER if s in by_stage] + sorted(s for s in by_stage if s not in STAGE_ORDER)
    remaining = int(counts["candidates"])
    out = []
    for s in order:
        remaining -= int(by_stage[s])
        out.append({"stage": s, "rejected": int(by_stage[s]), "remaining": remaining})
    return out


def _scores(rows: list[dict[str, Any]]) -> list[dict[str, float]]:
    out = []
    for r in rows:
        sc = r.get("scores") or []
        out.append(dict(sc.items()) if isinstance(sc, dict) else {k: v for k, v in sc})
    return out


def _score_plot(detectors: list[dict[str, Any]], kept: list[dict[str, float]],
                people: list[dict[str, float]]) -> str | None:
    names = [d["name"] for d in detectors]
    if not names:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 2.6), squeeze=False)
    bins = [i / 20 for i in range(21)]
    for ax, d in zip(axes[0], detectors, strict=True):
        k = [s[d["name"]] for s in kept if d["name"] in s]
        p = [s[d["name"]] for s in people if d["name"] in s]
        ax.hist(k, bins=bins, alpha=0.7, label=f"kept ({len(k)})", color="#2f6fb0")
        ax.hist(p, bins=bins, alpha=0.7, label=f"people-rejected ({len(p)})", color="#b3261e")
        ax.axvline(float(d["threshold"]), color="black", linestyle="--", linewidth=1)
        ax.set_title(d["name"], fontsize=10)
        ax.set_xlabel("top score", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.legend(fontsize=7)
    return _png(fig)


def _thumb(jpeg: bytes) -> tuple[str, int, int]:
    """A THUMB_SIDE JPEG data: URI of a release image (libjpeg-turbo at reduced scale, area resize)."""
    import cv2
    import simplejpeg

    h, w = simplejpeg.decode_jpeg_header(jpeg)[:2]
    scale = min(1.0, THUMB_SIDE / max(w, h))
    tw, th = max(1, round(w * scale)), max(1, round(h * scale))
    px = simplejpeg.decode_jpeg(jpeg, colorspace="RGB", min_width=tw, min_height=th)
    if (px.shape[1], px.shape[0]) != (tw, th):
        px = cv2.resize(px, (tw, th), interpolation=cv2.INTER_AREA)
    data = simplejpeg.encode_jpeg(px, quality=75, colorspace="RGB")
    return "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii"), tw, th


def thumbnails(release_dir: Path, index_rows: list[dict[str, Any]], limit: int = MAX_THUMBS) -> list[dict[str, Any]]:
    """The report's sample grid: up to `limit` images spread evenly over the keys, each a small
    JPEG data: URI with its attribution. Mostly libjpeg time (GIL released): documents.write_all
    runs it beside the other documents' rendering."""
    from passkit.shards import index_tar

    rows = sorted(index_rows, key=lambda r: r["key"])
    if len(rows) > limit:
        step = len(rows) / limit
        rows = [rows[int(i * step)] for i in range(limit)]
    wanted = {r["key"]: r for r in rows}
    by_shard: dict[str, list[str]] = {}
    for r in rows:
        by_shard.setdefault(r["shard"], []).append(r["key"])
    images: dict[str, tuple[str, int, int]] = {}
    for shard in sorted(by_shard):
        names = {f"{key}.jpg" for key in by_shard[shard]}
        with open(release_dir / shard, "rb") as f:  # only the sampled images: seek, not a full read
            for m in index_tar(release_dir / shard):
                if m.name in names:
                    f.seek(m.offset_data)
                    images[m.name[: -len(".jpg")]] = _thumb(f.read(m.size))
    out = []
    for key, r in wanted.items():
        if key not in images:
            continue
        src, w, h = images[key]
        out.append({
            "key": key, "src": src, "width": w, "height": h, "title": r.get("title") or "",
            "attribution": r.get("attribution") or "", "license_name": r.get("license_name") or "",
            "license_link": safe_url(r.get("license_url")),
        })
    return out


def render_report(release_dir: Path, manifest: dict[str, Any], index_rows: list[dict[str, Any]],
                  rejected_rows: list[dict[str, Any]], max_thumbs: int = MAX_THUMBS,
                  thumbs: list[dict[str, Any]] | None = None) -> str:
    """report.html; `thumbs`: thumbnails() already made (else made here, up to `max_thumbs`)."""
    from passkit.release.templates import render

    counts = manifest["counts"]
    fun = funnel(counts)
    reasons = Counter((str(r.get("stage")), str(r.get("reason"))) for r in rejected_rows)
    reason_rows = [{"stage": s, "reason": r, "n": n} for (s, r), n in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))]
    lic = Counter(r.get("license_name") or r.get("license") or "unknown" for r in index_rows)
    prov = Counter(r.get("provider") or "unknown" for r in index_rows)
    detectors = list(manifest.get("detectors") or [])
    plots = {  # the bar charts are HTML (see the template); matplotlib draws the score histograms only
        "scores": _score_plot(detectors, _scores(index_rows),
                              _scores([r for r in rejected_rows if r.get("stage") == "people"])),
    }
    size = sum(int(s["bytes"]) for s in manifest.get("shards") or [])
    if thumbs is None:
        thumbs = thumbnails(Path(release_dir), index_rows, max_thumbs)
    return render(
        "report.html.j2", m=manifest, counts=counts, funnel=fun, reasons=reason_rows,
        licenses=lic.most_common(), providers=prov.most_common(), detectors=detectors, plots=plots,
        thumbs=thumbs, removals=manifest.get("removals") or [],
        previous=manifest.get("previous"), shards=len(manifest.get("shards") or []),
        size=f"{size / 1e6:.1f} MB",
    )


def write_report(path: Path, release_dir: Path, manifest: dict[str, Any], index_rows: list[dict[str, Any]],
                 rejected_rows: list[dict[str, Any]], thumbs: list[dict[str, Any]] | None = None) -> None:
    Path(path).write_text(render_report(release_dir, manifest, index_rows, rejected_rows, thumbs=thumbs),
                          encoding="utf-8")

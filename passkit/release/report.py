"""report.html: one self-contained page an auditor can open offline.

The funnel from candidates through each stage to kept, the rejection reasons, licences and providers,
people-detector score histograms and a thumbnail grid of kept samples with their credit lines.
The counts are tables whose last column is a bar drawn in HTML; the score histograms are a
matplotlib (Agg) PNG and the thumbnails small JPEGs, both inlined as data: URIs, so the page loads
no other file. matplotlib is imported only when the people filter ran. Only kept samples are ever
shown: thumbnails are read from the release's own shards, which hold no rejected image.

The page stays a few MB at any size: the tables are counts, the histograms keep per-bin counts once
the scores are many (ScoreValues), and the thumbnails are at most MAX_THUMBS rows picked by position
from the row count, read while index.parquet streams past, from only the shards that hold them.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from passkit.parquetio import open_parquet
from passkit.release.attribution import safe_url
from passkit.release.curate import STAGE_ORDER

if TYPE_CHECKING:
    from passkit.release.documents import IndexSummary, RejectedSummary

MAX_THUMBS = 120
THUMB_SIDE = 200


def warm_up(plots: bool = True) -> None:
    """Compile the HTML templates; let pyarrow look for pandas, which it does (a third of a second)
    on the first array it builds; with `plots`, import matplotlib and load its font list, the fixed
    cost of the first plot. The build calls this in a thread while the workers crawl."""
    import pyarrow as pa

    pa.array([], pa.int8())
    from passkit.release.templates import environment

    for name in ("report.html.j2", "attribution.html.j2", "attribution_page.html.j2", "attribution_index.html.j2"):  # compiled once, cached by jinja
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


SCORE_BINS = [i / 20 for i in range(21)]
RAW_SCORES = 100_000  # score values a histogram keeps as they are; above, it keeps its bins' counts


class ScoreValues:
    """One detector's scores for a histogram: the values themselves while there are few, so a small
    release draws exactly what it always did, then the counts per SCORE_BINS bin (what the histogram
    draws of them anyway), so memory stays the same at twenty million rejected candidates."""

    def __init__(self) -> None:
        self.n = 0
        self._values: list[Any] | None = []  # numpy arrays of float64
        self._counts: Any = None

    def add(self, values: Any) -> None:
        import numpy as np

        self.n += len(values)
        if self._values is not None:
            self._values.append(values)
            if sum(len(v) for v in self._values) <= RAW_SCORES:
                return
            values, self._values = np.concatenate(self._values), None
            self._counts = np.zeros(len(SCORE_BINS) - 1, dtype=np.int64)
        self._counts += np.histogram(values, bins=SCORE_BINS)[0]

    def hist_args(self) -> tuple[Any, Any]:
        """(x, weights) for matplotlib's hist over SCORE_BINS."""
        import numpy as np

        if self._values is not None:
            return (np.concatenate(self._values) if self._values else np.empty(0)), None
        centres = [(a + b) / 2 for a, b in zip(SCORE_BINS, SCORE_BINS[1:], strict=False)]
        return np.array(centres), self._counts


def _score_plot(detectors: list[dict[str, Any]], kept: dict[str, ScoreValues],
                people: dict[str, ScoreValues]) -> str | None:
    names = [d["name"] for d in detectors]
    if not names:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 2.6), squeeze=False)
    for ax, d in zip(axes[0], detectors, strict=True):
        k = kept.get(d["name"]) or ScoreValues()
        p = people.get(d["name"]) or ScoreValues()
        (kx, kw), (px, pw) = k.hist_args(), p.hist_args()
        ax.hist(kx, bins=SCORE_BINS, weights=kw, alpha=0.7, label=f"kept ({k.n})", color="#2f6fb0")
        ax.hist(px, bins=SCORE_BINS, weights=pw, alpha=0.7, label=f"people-rejected ({p.n})", color="#b3261e")
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


def _take(index_path: Path, positions: list[int], columns: list[str]) -> tuple[list[dict[str, Any]], bool]:
    """The rows at these ascending positions of the file, read batch by batch; and whether the file's
    keys are in strictly ascending order (then the positions are ranks in key order)."""
    import pyarrow.compute as pc

    from passkit.release.documents import BATCH_ROWS

    rows: list[dict[str, Any]] = []
    start, j, last, ordered = 0, 0, None, True
    for batch in open_parquet(index_path).iter_batches(batch_size=BATCH_ROWS, columns=columns):
        n = batch.num_rows
        keys = batch.column("key")
        if n and ordered:
            first = keys[0].as_py()
            ordered = (last is None or first > last) and (n < 2 or pc.all(pc.greater(keys[1:], keys[:-1])).as_py())
            last = keys[-1].as_py()
        here = []
        while j < len(positions) and positions[j] < start + n:
            here.append(positions[j] - start)
            j += 1
        if here:
            rows += batch.take(here).to_pylist()
        start += n
    return rows, ordered


def _sample_rows(index_path: Path, limit: int, columns: list[str]) -> list[dict[str, Any]]:
    """Up to `limit` index rows spread evenly over the keys: rank int(i * n / limit) in key order.

    A release's index is written in key order, so the ranks are the rows' positions: picked from the
    row count, only those rows are kept while the file streams past. An index out of key order (not
    one passkit wrote) has its key column ranked first."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    n = pq.ParquetFile(index_path).metadata.num_rows
    step = n / limit
    wanted = list(range(n)) if n <= limit else [int(i * step) for i in range(limit)]
    rows, ordered = _take(index_path, wanted, columns)
    if ordered:
        return rows
    order = pc.sort_indices(pq.read_table(index_path, columns=["key"]).column("key")).to_pylist()
    rank = {order[w]: i for i, w in enumerate(wanted)}
    rows, _ = _take(index_path, sorted(rank), columns)
    return [r for _, r in sorted(zip(sorted(rank), rows, strict=True), key=lambda x: rank[x[0]])]


def thumbnails(release_dir: Path, index_path: Path, limit: int = MAX_THUMBS) -> list[dict[str, Any]]:
    """The report's sample grid: up to `limit` images spread evenly over the keys, each a small
    JPEG data: URI with its attribution. Mostly libjpeg time (GIL released): documents.write_all
    runs it beside the other documents' rendering."""
    from passkit.shards import index_tar

    rows = _sample_rows(Path(index_path), limit,
                        ["key", "shard", "title", "attribution", "license_name", "license_url"])
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


def render_report(release_dir: Path, manifest: dict[str, Any], index: IndexSummary, rejected: RejectedSummary,
                  index_path: Path | None = None, max_thumbs: int = MAX_THUMBS,
                  thumbs: list[dict[str, Any]] | None = None) -> str:
    """report.html; `thumbs`: thumbnails() already made (else made here from `index_path`, up to `max_thumbs`)."""
    from passkit.release.templates import render

    counts = manifest["counts"]
    fun = funnel(counts)
    reason_rows = [{"stage": s, "reason": r, "n": n}
                   for (s, r), n in sorted(rejected.reasons.items(), key=lambda kv: (-kv[1], kv[0]))]
    detectors = list(manifest.get("detectors") or [])
    plots = {  # the bar charts are HTML (see the template); matplotlib draws the score histograms only
        "scores": _score_plot(detectors, index.scores, rejected.people_scores),
    }
    size = sum(int(s["bytes"]) for s in manifest.get("shards") or [])
    if thumbs is None:
        thumbs = thumbnails(Path(release_dir), Path(index_path or Path(release_dir) / "index.parquet"), max_thumbs)
    return render(
        "report.html.j2", m=manifest, counts=counts, funnel=fun, reasons=reason_rows,
        licenses=index.report_licenses.most_common(), providers=index.providers.most_common(),
        detectors=detectors, plots=plots, thumbs=thumbs, removals=manifest.get("removals") or [],
        previous=manifest.get("previous"), shards=len(manifest.get("shards") or []),
        size=f"{size / 1e6:.1f} MB",
    )


def write_report(path: Path, release_dir: Path, manifest: dict[str, Any], index: IndexSummary,
                 rejected: RejectedSummary, thumbs: list[dict[str, Any]] | None = None) -> None:
    Path(path).write_text(render_report(release_dir, manifest, index, rejected, thumbs=thumbs), encoding="utf-8")

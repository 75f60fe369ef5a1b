"""Measure the people filter on a labelled folder: recall, false rejections, precision, speed, a sweep.

A labelled folder holds `labels.csv` with at least the columns `file,has_person` (file paths relative
to the folder). Every image goes through the pipeline's own image check (`passkit.images.check`:
decode, resize to the spec's `image.max_side`, RGB), so the filter sees exactly the pixels a build
would give it, then through one `PeopleFilter`. Scores are kept per image and per detector, so the
threshold sweep and the curve are computed from one pass.

Terms (image level, "positive" = has a person):
- recall: persons rejected automatically / persons; `recall_with_review` also counts persons sent to
  the human review queue (they never reach a release without a human "no person");
- false-rejection rate (FRR): no-person images rejected automatically / no-person images;
- review rate: images sent to review / all images (the human workload);
- precision: persons among the automatically rejected images.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from passkit import images
from passkit.config import ImageSpec, PeopleSpec

SWEEP = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7, 0.8, 0.9, 0.95)
# the ensemble sweep scales every detector's threshold by these factors (1.0 = the spec's thresholds)
ENSEMBLE_FACTORS = (0.25, 0.5, 0.75, 1.0, 1.1, 1.25, 1.5, 2.0)
BATCH = 16


class EvalError(ValueError):
    """The labelled folder cannot be read (no labels.csv, missing columns, missing files)."""


@dataclass(slots=True)
class Item:
    file: str
    has_person: bool
    scores: dict[str, float] = field(default_factory=dict)
    verdict: str = "clear"  # person | review | clear | error
    error: str | None = None


@dataclass(slots=True)
class Metrics:
    recall: float
    recall_with_review: float
    frr: float
    precision: float
    review_rate: float
    tp: int
    fp: int
    fn: int
    tn: int
    review: int


@dataclass(slots=True)
class EvalReport:
    folder: str
    images: int
    positives: int
    negatives: int
    errors: int
    detectors: list[dict[str, Any]]
    skipped: list[dict[str, str]]
    ensemble: Metrics
    per_detector: dict[str, Metrics]  # each detector alone at its own threshold and review band
    sweep: list[dict[str, Any]]  # {"detector": name | "ensemble", "threshold" | "factor", recall, frr, ...}
    seconds: float
    images_per_second: float
    items: list[Item]

    def to_dict(self, items: bool = True) -> dict[str, Any]:
        d = asdict(self)
        if not items:
            d.pop("items")
        return d


def read_labels(folder: Path) -> list[tuple[Path, bool]]:
    """(path, has_person) rows of `folder/labels.csv`; paths must stay inside the folder."""
    folder = Path(folder)
    labels = folder / "labels.csv"
    if not labels.is_file():
        raise EvalError(f"{labels} not found: a labelled folder needs labels.csv with columns file,has_person")
    rows: list[tuple[Path, bool]] = []
    root = folder.resolve()
    with open(labels, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"file", "has_person"} <= set(reader.fieldnames):
            raise EvalError(f"{labels}: needs the columns file,has_person (found: {reader.fieldnames})")
        for n, r in enumerate(reader, start=2):
            p = (folder / r["file"]).resolve()
            if root not in p.parents:
                raise EvalError(f"{labels} line {n}: {r['file']!r} points outside {folder}")
            v = (r["has_person"] or "").strip().lower()
            if v not in ("0", "1", "true", "false", "yes", "no"):
                raise EvalError(f"{labels} line {n}: has_person must be 0 or 1, got {r['has_person']!r}")
            rows.append((p, v in ("1", "true", "yes")))
    missing = [str(p) for p, _ in rows if not p.is_file()]
    if missing:
        raise EvalError(f"{len(missing)} labelled file(s) do not exist, e.g. {missing[0]}")
    return rows


def _verdict(scores: dict[str, float], th: dict[str, float], rv: dict[str, float]) -> str:
    if any(scores.get(k, 0.0) >= t for k, t in th.items()):
        return "person"
    if any(rv[k] <= scores.get(k, 0.0) < th[k] for k in rv if k in th):
        return "review"
    return "clear"


def metrics(items: list[Item], th: dict[str, float], rv: dict[str, float]) -> Metrics:
    """Image-level metrics of the rule "reject at >= threshold, review in [review, threshold)"."""
    tp = fp = fn = tn = rev = rev_pos = 0
    for it in items:
        if it.error is not None:
            continue
        v = _verdict(it.scores, th, rv)
        rev += v == "review"
        if it.has_person:
            tp += v == "person"
            fn += v != "person"
            rev_pos += v == "review"
        else:
            fp += v == "person"
            tn += v != "person"
    pos, neg, n = tp + fn, fp + tn, tp + fn + fp + tn
    return Metrics(
        recall=round(tp / pos, 4) if pos else 0.0,
        recall_with_review=round((tp + rev_pos) / pos, 4) if pos else 0.0,
        frr=round(fp / neg, 4) if neg else 0.0,
        precision=round(tp / (tp + fp), 4) if tp + fp else 0.0,
        review_rate=round(rev / n, 4) if n else 0.0,
        tp=tp, fp=fp, fn=fn, tn=tn, review=rev,
    )


def sweep(items: list[Item], th: dict[str, float], rv: dict[str, float]) -> list[dict[str, Any]]:
    """Each detector alone over SWEEP thresholds (no review band), then the ensemble with every
    threshold (and review floor) scaled by ENSEMBLE_FACTORS."""
    out: list[dict[str, Any]] = []
    for name in th:
        for t in SWEEP:
            m = metrics(items, {name: t}, {})
            out.append({"detector": name, "threshold": t, **_short(m)})
    for f in ENSEMBLE_FACTORS:
        th_f = {k: min(1.0, v * f) for k, v in th.items()}
        rv_f = {k: min(th_f[k], v * f) for k, v in rv.items()}
        m = metrics(items, th_f, rv_f)
        out.append({"detector": "ensemble", "factor": f, "thresholds": th_f, **_short(m)})
    return out


def _short(m: Metrics) -> dict[str, float]:
    return {"recall": m.recall, "recall_with_review": m.recall_with_review, "frr": m.frr,
            "precision": m.precision, "review_rate": m.review_rate}


def evaluate(
    folder: Path,
    spec: PeopleSpec | None = None,
    image_spec: ImageSpec | None = None,
    models_dir: Path | None = None,
    threads: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> EvalReport:
    """Run the filter of `spec` (default: the default ensemble) over a labelled folder."""
    from passkit.filters.people import PeopleFilter

    spec = spec or PeopleSpec()
    image_spec = image_spec or ImageSpec()
    rows = read_labels(Path(folder))
    pf = PeopleFilter(spec, models_dir, threads=threads)
    items = [Item(str(p.relative_to(Path(folder).resolve())), y) for p, y in rows]
    ready: list[tuple[int, Any]] = []
    for i, (p, _) in enumerate(rows):
        try:
            ready.append((i, images.check(p.read_bytes(), image_spec).image))
        except images.ImageReject as e:
            items[i].verdict, items[i].error = "error", f"{e.reason}: {e.detail}"
    seconds = 0.0
    done = 0
    for b in range(0, len(ready), BATCH):
        batch = ready[b : b + BATCH]
        t0 = time.perf_counter()
        results = pf.score([im for _, im in batch])
        seconds += time.perf_counter() - t0
        for (i, _), r in zip(batch, results, strict=True):
            items[i].scores = {k: round(v, 4) for k, v in r.scores.items()}
            items[i].verdict = r.verdict
        done += len(batch)
        if on_progress:
            on_progress(done, len(ready))
    th = dict(pf.thresholds)
    rv = dict(pf.reviews)
    per = {n: metrics(items, {n: th[n]}, {n: rv[n]} if n in rv else {}) for n in th}
    ok = [it for it in items if it.error is None]
    return EvalReport(
        folder=str(folder),
        images=len(items),
        positives=sum(it.has_person for it in ok),
        negatives=sum(not it.has_person for it in ok),
        errors=len(items) - len(ok),
        detectors=pf.describe(),
        skipped=[{"name": n, "why": w} for n, w in pf.skipped],
        ensemble=metrics(items, th, rv),
        per_detector=per,
        sweep=sweep(items, th, rv),
        seconds=round(seconds, 3),
        images_per_second=round(len(ready) / seconds, 2) if seconds else 0.0,
        items=items,
    )


def plot(report: EvalReport, path: Path) -> Path:
    """PNG of recall against false-rejection rate: each detector's sweep, the ensemble's, the default."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5), dpi=100)
    names = [d["name"] for d in report.detectors] + ["ensemble"]
    for name in names:
        pts = sorted((r["frr"], r["recall"]) for r in report.sweep if r["detector"] == name)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=name,
                    linewidth=2.5 if name == "ensemble" else 1.2)
    e = report.ensemble
    ax.scatter([e.frr], [e.recall], s=80, c="black", zorder=5, label="operating point (auto-reject)")
    ax.scatter([e.frr], [e.recall_with_review], s=80, marker="^", c="red", zorder=5,
               label="operating point incl. review queue")
    ax.axhline(0.99, color="grey", linestyle=":", linewidth=1)
    ax.axvline(0.10, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("false-rejection rate (no-person images rejected)")
    ax.set_ylabel("recall (person images rejected)")
    ax.set_xlim(-0.01, 1.0)
    ax.set_ylim(0.0, 1.01)
    ax.set_title(f"{Path(report.folder).name}: {report.positives} person / {report.negatives} no-person")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
    return path

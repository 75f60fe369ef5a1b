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

Person size: with YOLO-format boxes (a `labels/` folder beside labels.csv, or `boxes=`), recall is
also reported per size of the tallest person (under 10 %, 10-25 %, 25 % and more of the image
height), since a tiny background figure and a portrait are not the same privacy risk.

Threshold choice: the threshold that gives the most recall inside a false-rejection budget is
reported twice: fitted on the whole folder (in-sample, what a sweep shows) and k-fold
cross-validated (chosen on k-1 folds, scored on the held-out one), because the in-sample number is
fitted to the very photos it is scored on and flatters the filter.
"""

from __future__ import annotations

import csv
import itertools
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from passkit import images
from passkit.config import ImageSpec, PeopleSpec

SWEEP = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7, 0.8, 0.9, 0.95)
# tallest person / image height: [lo, hi) buckets for recall by person size
SIZE_BUCKETS = (("<10%", 0.0, 0.10), ("10-25%", 0.10, 0.25), (">=25%", 0.25, math.inf))
NO_BOX = "no box"  # a person image without a class-0 box in its label file (or without a label file)
# the ensemble sweep scales every detector's threshold by these factors (1.0 = the spec's thresholds)
ENSEMBLE_FACTORS = (0.25, 0.5, 0.75, 1.0, 1.1, 1.25, 1.5, 2.0)
BATCH = 16
GRID_MAX = 20_000  # threshold combinations the ensemble grid tries (3 detectors: 27 each, 4: 11)


class EvalError(ValueError):
    """The labelled folder cannot be read (no labels.csv, missing columns, missing files)."""


@dataclass(slots=True)
class Item:
    file: str
    has_person: bool
    scores: dict[str, float] = field(default_factory=dict)
    verdict: str = "clear"  # person | review | clear | error
    error: str | None = None
    tallest: float | None = None  # tallest person box / image height, when boxes are given


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
    threshold_choice: dict[str, Any] | None  # in-sample vs cross-validated threshold at an FRR budget
    by_size: dict[str, Any] | None  # recall per tallest-person size, when boxes are given
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


# ----------------------------------------------------------------------------- boxes and person size


def parse_yolo(path: Path) -> list[tuple[int, float, float, float, float]]:
    """Rows `class cx cy w h` (normalised to the image) of one YOLO label file; an error names the line,
    since a silently skipped box would move an image to the wrong size bucket."""
    rows: list[tuple[int, float, float, float, float]] = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 5:
            raise EvalError(f"{path} line {n}: a YOLO box is 'class cx cy w h' (5 fields), got {len(parts)}: "
                            f"{line.strip()!r}")
        try:
            cls = int(parts[0])
            cx, cy, w, h = (float(v) for v in parts[1:])
        except ValueError:
            raise EvalError(f"{path} line {n}: class must be an integer and cx cy w h numbers: "
                            f"{line.strip()!r}") from None
        if cls < 0 or not all(math.isfinite(v) for v in (cx, cy, w, h)):
            raise EvalError(f"{path} line {n}: class must be >= 0 and coordinates finite: {line.strip()!r}")
        if not (0.0 < w <= 1.0 + 1e-6 and 0.0 < h <= 1.0 + 1e-6 and -1e-6 <= cx <= 1.0 + 1e-6
                and -1e-6 <= cy <= 1.0 + 1e-6):
            raise EvalError(f"{path} line {n}: coordinates must be normalised (cx, cy in [0, 1], w, h in (0, 1]); "
                            f"pixel boxes? {line.strip()!r}")
        rows.append((cls, cx, cy, w, h))
    return rows


def label_path(boxes: Path, file: str) -> Path:
    """YOLO's layout: `images/a/b.jpg` has its boxes in `<boxes>/a/b.txt` (a leading images/ is dropped)."""
    rel = Path(file)
    if len(rel.parts) > 1 and rel.parts[0] == "images":
        rel = Path(*rel.parts[1:])
    return Path(boxes) / rel.with_suffix(".txt")


def read_boxes(boxes: Path, files: list[str]) -> dict[str, float | None]:
    """Tallest person (class 0) height / image height per file; None when it has no person box.

    A missing label file means "no boxes" (YOLO's convention for background images); a folder that
    matches none of the files is an error, since then the layout, not the photos, is wrong.
    """
    boxes = Path(boxes)
    if not boxes.is_dir():
        raise EvalError(f"{boxes}: boxes folder not found")
    out: dict[str, float | None] = {}
    found = 0
    for f in files:
        p = label_path(boxes, f)
        if not p.is_file():
            out[f] = None
            continue
        found += 1
        hs = [h for c, _, _, _, h in parse_yolo(p) if c == 0]
        out[f] = min(1.0, max(hs)) if hs else None
    if files and not found:
        raise EvalError(f"{boxes}: no label file for any image (expected e.g. {label_path(boxes, files[0])})")
    return out


def size_bucket(tallest: float | None) -> str:
    """The SIZE_BUCKETS name of a tallest-person height fraction (NO_BOX for None)."""
    if tallest is None:
        return NO_BOX
    for name, lo, hi in SIZE_BUCKETS:
        if lo <= tallest < hi:
            return name
    return SIZE_BUCKETS[-1][0]


def by_size(items: list[Item], verdicts: dict[str, list[str]]) -> list[dict[str, Any]]:
    """Recall of each verdict list (one verdict per item: person | review | clear) per size bucket of
    the person images; negatives have no size and are left out."""
    names = [b[0] for b in SIZE_BUCKETS] + [NO_BOX]
    rows: list[dict[str, Any]] = []
    for name in names:
        idx = [i for i, it in enumerate(items)
               if it.error is None and it.has_person and size_bucket(it.tallest) == name]
        if name == NO_BOX and not idx:
            continue
        row: dict[str, Any] = {"bucket": name, "images": len(idx)}
        for key, vs in verdicts.items():
            row[key] = round(sum(vs[i] == "person" for i in idx) / len(idx), 4) if idx else None
            if key.startswith("ensemble"):
                row[f"{key}_with_review"] = (round(sum(vs[i] in ("person", "review") for i in idx) / len(idx), 4)
                                             if idx else None)
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- threshold at an FRR budget


def choose_threshold(pos: list[float], neg: list[float], budget: float) -> float:
    """The lowest threshold (reject at score >= t) whose false-rejection rate on `neg` is <= budget:
    the midpoint between the highest negative score that must stay accepted and the next higher score,
    so that a held-out photo is not judged by a boundary drawn through a training photo."""
    allowed = math.floor(budget * len(neg) + 1e-9)
    ranked = sorted(neg, reverse=True)
    if allowed >= len(ranked):
        return min([*pos, *neg], default=0.0)
    v = ranked[allowed]  # the highest negative that must stay below t
    above = [s for s in (*pos, *neg) if s > v]
    return (v + min(above)) / 2 if above else math.inf


def _num(t: float) -> float | None:
    """A threshold for JSON: None where nothing can reach it (inf is not JSON)."""
    return round(t, 4) if math.isfinite(t) else None


def _num_up(t: float) -> float | None:
    """A chosen threshold for a spec: rounded up to 4 decimals, so the rounding never admits a score
    the choice kept out; None where nothing can reach it."""
    return math.ceil(t * 10_000 - 1e-6) / 10_000 if math.isfinite(t) else None


def _ratio(scores: dict[str, float], th: dict[str, float]) -> float:
    """max over detectors of score / threshold: the ensemble rejects at factor f iff this is >= f, so
    scaling every threshold by f is one threshold on this number."""
    return max((scores.get(k, 0.0) / max(t, 1e-9) for k, t in th.items()), default=0.0)


def _verdicts(s: list[float], r: list[float], t: float) -> list[str]:
    return ["person" if a >= t else "review" if b >= t else "clear" for a, b in zip(s, r, strict=True)]


def _rates(y: list[bool], vs: list[str]) -> dict[str, Any]:
    pos = sum(y)
    neg = len(y) - pos
    tp = sum(1 for a, v in zip(y, vs, strict=True) if a and v == "person")
    rp = sum(1 for a, v in zip(y, vs, strict=True) if a and v == "review")
    fp = sum(1 for a, v in zip(y, vs, strict=True) if not a and v == "person")
    rev = sum(v == "review" for v in vs)
    return {"recall": round(tp / pos, 4) if pos else 0.0,
            "recall_with_review": round((tp + rp) / pos, 4) if pos else 0.0,
            "frr": round(fp / neg, 4) if neg else 0.0,
            "review_rate": round(rev / len(y), 4) if y else 0.0,
            "tp": tp, "fp": fp, "fn": pos - tp, "tn": neg - fp}


def folds_of(y: list[bool], k: int, seed: int) -> list[int]:
    """Fold index per item: each label's items shuffled with `seed`, then dealt round-robin, so every
    fold holds the same share of person and no-person images."""
    fold = [0] * len(y)
    rng = random.Random(seed)
    for label in (True, False):
        idx = [i for i, v in enumerate(y) if v == label]
        rng.shuffle(idx)
        for j, i in enumerate(idx):
            fold[i] = j % k
    return fold


def cross_validate(s: list[float], r: list[float], y: list[bool], budget: float, fold: list[int]
                   ) -> tuple[dict[str, Any], list[str]]:
    """Cross-validation of choose_threshold over the folds `fold` (see folds_of): each fold is scored
    with the threshold chosen on the others (`s`: reject score, `r`: review score, both against the
    same threshold); counts are pooled over the held-out folds. Returns the summary and every item's
    held-out verdict."""
    k = max(fold, default=-1) + 1
    verdicts = [""] * len(y)
    ts: list[float | None] = []
    fold_recall: list[float] = []
    fold_frr: list[float] = []
    for f in range(k):
        train = [i for i in range(len(y)) if fold[i] != f]
        test = [i for i in range(len(y)) if fold[i] == f]
        t = choose_threshold([s[i] for i in train if y[i]], [s[i] for i in train if not y[i]], budget)
        ts.append(_num(t))
        vs = _verdicts([s[i] for i in test], [r[i] for i in test], t)
        for i, v in zip(test, vs, strict=True):
            verdicts[i] = v
        m = _rates([y[i] for i in test], vs)
        fold_recall.append(m["recall"])
        fold_frr.append(m["frr"])
    return {**_rates(y, verdicts), "thresholds": ts, "fold_recall": fold_recall, "fold_frr": fold_frr}, verdicts


def grid_candidates(pos: list[float], neg: list[float], budget: float) -> list[float]:
    """The thresholds worth trying for one detector of an OR ensemble: for each count of negatives it
    may let through (up to the budget alone), the midpoint between the highest negative kept out and
    the next higher score, as choose_threshold draws it (inf: nothing is higher); any other threshold
    with the same false rejections only loses recall. Drawn from the training photos only,
    so cross-validation scores photos that did not place the boundaries."""
    allowed = math.floor(budget * len(neg) + 1e-9)
    ranked = sorted(set(neg), reverse=True)
    everything = sorted(set(pos) | set(neg))
    out: list[float] = []
    for v in ranked[: allowed + 1]:
        above = [x for x in everything if x > v]
        out.append((v + above[0]) / 2 if above else math.inf)
    if len(ranked) <= allowed:  # the detector alone may reject every negative: its lowest score works too
        out.append(min(everything, default=0.0))
    return sorted(set(out))


def _thinned(values: list[float], n: int) -> list[float]:
    """At most n of the sorted values, evenly spread, the lowest kept."""
    if len(values) <= n:
        return values
    return [values[round(i * (len(values) - 1) / (n - 1))] for i in range(n)]


def grid_choice(items: list[Item], th: dict[str, float], rv: dict[str, float], budget: float,
                fold: list[int]) -> dict[str, Any] | None:
    """Every detector's own threshold chosen together on a grid, the way the default ensemble was
    tuned: each detector's candidates (grid_candidates, or off) come from the photos it is fitted on,
    fitted on all items and re-chosen inside each training split, so the held-out score is honest;
    review floors keep the spec's ratio to their threshold. None when there is no detector."""
    import numpy as np

    names = list(th)
    if not names:
        return None
    ok = [i for i, it in enumerate(items) if it.error is None]
    y = np.array([items[i].has_person for i in ok])
    score = {n: np.array([items[i].scores.get(n, 0.0) for i in ok]) for n in names}
    per = max(2, int(GRID_MAX ** (1 / len(names))))  # candidates per detector, 'off' included

    def fit(mask: Any) -> tuple[tuple[float, ...], Any, Any]:
        cands = []
        for n in names:
            s = score[n][mask]
            c = [t for t in grid_candidates(list(s[y[mask]]), list(s[~y[mask]]), budget) if math.isfinite(t)]
            cands.append(_thinned(c, per - 1) + [math.inf])
        rej = rev = None
        for n, cs in zip(names, cands, strict=True):
            s = score[n]
            r_n = s[None, :] >= np.array(cs)[:, None]  # (candidates, items)
            if n in rv and th[n] > 0:  # the review floor keeps the spec's ratio to the threshold
                v_n = s[None, :] >= np.array(cs)[:, None] * (rv[n] / th[n])
            else:
                v_n = np.zeros_like(r_n)
            if rej is None:
                rej, rev = r_n, v_n
            else:
                rej = (rej[:, None, :] | r_n[None, :, :]).reshape(-1, len(ok))
                rev = (rev[:, None, :] | v_n[None, :, :]).reshape(-1, len(ok))
        assert rej is not None and rev is not None
        tp = rej[:, mask & y].sum(1)
        fp = rej[:, mask & ~y].sum(1)
        feasible = fp <= math.floor(budget * int((mask & ~y).sum()) + 1e-9)
        order = np.lexsort((fp, -tp))  # most recall, then fewest false rejections, then grid order
        c = int(next(i for i in order if feasible[i]))  # the all-off combination is always feasible
        combo = next(itertools.islice(itertools.product(*cands), c, None))
        return combo, rej[c], rev[c]

    def verdicts(rej: Any, rev: Any, mask: Any) -> list[str]:
        return ["person" if a else "review" if b else "clear" for a, b in zip(rej[mask], rev[mask], strict=True)]

    def named(combo: tuple[float, ...]) -> dict[str, float | None]:
        return {n: _num_up(t) for n, t in zip(names, combo, strict=True)}

    yl = [bool(v) for v in y]
    combo, rej, rev = fit(np.ones(len(ok), dtype=bool))
    row: dict[str, Any] = {"detector": "ensemble grid",
                           "fitted": {"grid": named(combo), **_rates(yl, verdicts(rej, rev, slice(None)))}}
    if fold:
        f_arr = np.array(fold)
        held = [""] * len(ok)
        chosen: list[dict[str, float | None]] = []
        fold_recall: list[float] = []
        fold_frr: list[float] = []
        for f in range(max(fold) + 1):
            combo, rej, rev = fit(f_arr != f)
            test = np.flatnonzero(f_arr == f)
            vs = verdicts(rej, rev, f_arr == f)
            for i, v in zip(test, vs, strict=True):
                held[i] = v
            m = _rates([yl[i] for i in test], vs)
            chosen.append(named(combo))
            fold_recall.append(m["recall"])
            fold_frr.append(m["frr"])
        row["cv"] = {**_rates(yl, held), "thresholds": chosen, "fold_recall": fold_recall, "fold_frr": fold_frr}
    return row


def threshold_choice(items: list[Item], th: dict[str, float], rv: dict[str, float], budget: float = 0.10,
                     k: int = 5, seed: int = 0) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The ensemble (every threshold and review floor scaled by one factor), the ensemble grid (every
    detector's threshold chosen; see grid_choice) and each detector alone (no review band): the most
    recall at FRR <= budget, fitted on all items and k-fold cross-validated.

    Returns the report block and every item's verdict per row for the size table ("ensemble_fitted",
    "ensemble_cv" held out, each detector's name fitted); items with errors get "error".
    """
    ok = [i for i, it in enumerate(items) if it.error is None]
    y = [items[i].has_person for i in ok]
    if k < 0 or k == 1:
        raise EvalError(f"folds must be 0 (no cross-validation) or >= 2, got {k}")
    asked, smaller = k, min(sum(y), len(y) - sum(y))
    k = min(k, smaller) if smaller >= 2 else 0  # a fold without a person photo has no recall to score
    fold = folds_of(y, k, seed) if k else []
    rows: list[dict[str, Any]] = []
    verdicts: dict[str, list[str]] = {}
    cands: list[tuple[str, list[float], list[float]]] = [
        ("ensemble", [_ratio(items[i].scores, th) for i in ok],
         [_ratio(items[i].scores, rv) if rv else 0.0 for i in ok])]
    cands += [(n, [items[i].scores.get(n, 0.0) for i in ok], [0.0] * len(ok)) for n in th]
    for name, s, r in cands:
        t = choose_threshold([a for a, b in zip(s, y, strict=True) if b],
                             [a for a, b in zip(s, y, strict=True) if not b], budget)
        vs = _verdicts(s, r, t)
        key = "factor" if name == "ensemble" else "threshold"
        fit = {key: _num(t), **_rates(y, vs)}
        row: dict[str, Any] = {"detector": name, "fitted": fit}
        if name == "ensemble":
            fit["thresholds"] = {n: round(v * t, 4) for n, v in th.items()} if math.isfinite(t) else None
        full = ["error"] * len(items)
        for i, v in zip(ok, vs, strict=True):
            full[i] = v
        verdicts["ensemble_fitted" if name == "ensemble" else name] = full
        if k:
            cv, held = cross_validate(s, r, y, budget, fold)
            row["cv"] = cv
            if name == "ensemble":
                full = ["error"] * len(items)
                for i, v in zip(ok, held, strict=True):
                    full[i] = v
                verdicts["ensemble_cv"] = full
        rows.append(row)
    grid = grid_choice(items, th, rv, budget, fold)
    if grid is not None:
        rows.insert(1, grid)
    out: dict[str, Any] = {"frr_budget": budget, "folds": k, "seed": seed, "rows": rows}
    if k != asked:
        out["note"] = (f"{asked} folds asked, {k or 'no cross-validation'} used: the smaller class has "
                       f"{smaller} images")
    return out, verdicts


def evaluate(
    folder: Path,
    spec: PeopleSpec | None = None,
    image_spec: ImageSpec | None = None,
    models_dir: Path | None = None,
    threads: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    boxes: Path | None = None,
    frr_budget: float = 0.10,
    folds: int = 5,
    seed: int = 0,
) -> EvalReport:
    """Run the filter of `spec` (default: the default ensemble) over a labelled folder.

    `boxes`: a YOLO labels folder for recall by person size (default: `folder/labels` when it exists).
    `frr_budget`, `folds`, `seed`: the threshold choice, fitted and `folds`-fold cross-validated
    (`folds=0`: fitted only).
    """
    from passkit.filters.people import PeopleFilter

    spec = spec or PeopleSpec()
    image_spec = image_spec or ImageSpec()
    if not 0.0 <= frr_budget <= 1.0:
        raise EvalError(f"FRR budget must be in [0, 1], got {frr_budget}")
    rows = read_labels(Path(folder))
    items = [Item(str(p.relative_to(Path(folder).resolve())), y) for p, y in rows]
    if boxes is None and (Path(folder) / "labels").is_dir():
        boxes = Path(folder) / "labels"
    if boxes is not None:
        tallest = read_boxes(Path(boxes), [it.file for it in items])
        for it in items:
            it.tallest = tallest[it.file]
    pf = PeopleFilter(spec, models_dir, threads=threads)
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
    choice, chosen = threshold_choice(items, th, rv, frr_budget, folds, seed)
    sizes = None
    if boxes is not None:
        at_spec = {"ensemble": [_verdict(it.scores, th, rv) if it.error is None else "error" for it in items]}
        at_spec |= {n: [_verdict(it.scores, {n: th[n]}, {}) if it.error is None else "error" for it in items]
                    for n in th}
        at_choice = {k: v for k, v in chosen.items() if k in ("ensemble_fitted", "ensemble_cv")}
        sizes = {"boxes": str(boxes),
                 "conflicts": [it.file for it in ok if not it.has_person and it.tallest is not None],
                 "buckets": by_size(items, at_spec | at_choice)}
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
        threshold_choice=choice,
        by_size=sizes,
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

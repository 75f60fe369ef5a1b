"""`rescan=True`: the people detectors the manifest names run again on every kept image.

Images arrive one at a time from the sample check (already decoded there) and are scored in
batches; `finish_rescan` scores the last, partial batch once the shards are read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from passkit.audit.context import AuditContext


class Rescan:
    """Reruns the people detectors the manifest names on every kept image, in batches."""

    BATCH = 16

    def __init__(self, ctx: AuditContext, models_dir: Path | None):
        self.ctx = ctx
        self.models_dir = models_dir
        self.filter: Any = None
        self.failed = False
        self.pending: list[tuple[str, str, Any]] = []

    def _build(self) -> None:
        from passkit.config import DetectorSpec, PeopleSpec
        from passkit.filters.people import PeopleFilter, PeopleFilterError

        m = self.ctx.m or {}
        try:
            dets = [DetectorSpec(name=d["name"], threshold=float(d["threshold"]), required=True)
                    for d in m.get("detectors") or []]
        except (KeyError, TypeError, ValueError) as e:
            self.ctx.add("rescan_failed", f"the manifest's detectors cannot be rerun: {e}")
            self.failed = True
            return
        if not dets:
            self.ctx.add("rescan_failed", "the manifest names no people detector to rerun")
            self.failed = True
            return
        try:
            self.filter = PeopleFilter(PeopleSpec(detectors=dets), self.models_dir)
        except (PeopleFilterError, FileNotFoundError, ValueError) as e:
            self.ctx.add("rescan_failed", f"{e} (set PASSKIT_MODELS to the folder with the weights)")
            self.failed = True

    def add(self, rel: str, key: str, img: Any) -> None:
        if self.failed:
            return
        self.pending.append((rel, key, img.convert("RGB")))
        if len(self.pending) >= self.BATCH:
            self.flush()

    def flush(self) -> None:
        if not self.pending or self.failed:
            self.pending.clear()
            return
        if self.filter is None:
            self._build()
            if self.failed:
                self.pending.clear()
                return
        batch, self.pending = self.pending, []
        results = self.filter.score([img for _, _, img in batch])
        for (rel, key, _), res in zip(batch, results, strict=True):
            if res.has_person:
                fired = ", ".join(f"{d} {res.scores.get(d, 0):.3f}" for d in res.fired)
                self.ctx.add("people_detected", f"the rescan's detectors fire: {fired}", rel, key)


def finish_rescan(ctx: AuditContext) -> None:
    """Score the images still waiting for a full batch."""
    if ctx.rescanner is not None:
        ctx.rescanner.flush()

"""`rescan=True`: the people detectors the manifest names run again on every kept image.

Images arrive one at a time from the sample check (already decoded there) and are scored in
batches within their shard; the shard's last, partial batch is scored when its samples are read,
so a shard's findings do not depend on which shard was checked before it in the same process.
The detectors are built once per process (`people_filter`), and once in the auditing process
first (`rescan_problem`): when they cannot be built, that is one finding, not one per shard.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from passkit.audit.shards import ShardScan

_FILTERS: dict[tuple[Any, ...], Any] = {}  # (detectors, models folder) -> PeopleFilter, in this process


class RescanError(Exception):
    pass


def _detector_specs(manifest_detectors: Any) -> list[Any]:
    from passkit.config import DetectorSpec

    try:
        dets = [DetectorSpec(name=d["name"], threshold=float(d["threshold"]), required=True)
                for d in manifest_detectors or []]
    except (KeyError, TypeError, ValueError) as e:
        raise RescanError(f"the manifest's detectors cannot be rerun: {e}") from None
    if not dets:
        raise RescanError("the manifest names no people detector to rerun")
    return dets


def people_filter(detectors: Any, models_dir: str | None) -> Any:
    """The PeopleFilter for the manifest's detectors, built once per process."""
    from pathlib import Path

    from passkit.config import PeopleSpec
    from passkit.filters.people import PeopleFilter, PeopleFilterError

    cache_key = (repr(detectors), models_dir)
    if cache_key not in _FILTERS:
        dets = _detector_specs(detectors)
        try:
            _FILTERS[cache_key] = PeopleFilter(PeopleSpec(detectors=dets), Path(models_dir) if models_dir else None)
        except (PeopleFilterError, FileNotFoundError, ValueError) as e:
            raise RescanError(f"{e} (set PASSKIT_MODELS to the folder with the weights)") from None
    return _FILTERS[cache_key]


def rescan_problem(detectors: Any, models_dir: str | None) -> str | None:
    """Why the manifest's detectors cannot be rerun here, or None when they can."""
    try:
        people_filter(detectors, models_dir)
    except RescanError as e:
        return str(e)
    return None


class Rescan:
    """Reruns the people detectors on one shard's images, in batches."""

    BATCH = 16

    def __init__(self, sc: ShardScan, detectors: Any, models_dir: str | None):
        self.sc = sc
        self.detectors = detectors
        self.models_dir = models_dir
        self.failed = False
        self.pending: list[tuple[str, Any]] = []

    def add(self, key: str, img: Any) -> None:
        if self.failed:
            return
        self.pending.append((key, img.convert("RGB")))
        if len(self.pending) >= self.BATCH:
            self.flush()

    def flush(self) -> None:
        if not self.pending or self.failed:
            self.pending.clear()
            return
        try:
            filt = people_filter(self.detectors, self.models_dir)
        except RescanError as e:  # built in the auditing process, not here: say so once for this shard
            self.sc.add("rescan_failed", str(e))
            self.failed = True
            self.pending.clear()
            return
        batch, self.pending = self.pending, []
        results = filt.score([img for _, img in batch])
        for (key, _), res in zip(batch, results, strict=True):
            if res.has_person:
                fired = ", ".join(f"{d} {res.scores.get(d, 0):.3f}" for d in res.fired)
                self.sc.add("people_detected", f"the rescan's detectors fire: {fired}", key)

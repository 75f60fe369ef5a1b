"""GenView pairing: one of a sample's views drawn from its generated variation, as the reference's
`prob_gen_img` does.

    from passkit.stream.pairs import GenViewPairing, paired_loader
    dl = paired_loader("releases/demo-1.0.0", GenViewPairing("releases/demo-genview-1.0.0", prob=0.5),
                       batch_size=256, transform=two_views(224), shuffle=True, num_workers=8)

The loader reads the original release as always (plan, order, removals, resume: passkit.stream.loader)
and, for each sample, picks one of its views uniformly and, with probability `prob`, makes that view
from the sample's variation in the derived release (`passkit views generate`) instead of from the
original; the other views still come from the original. A sample without a variation (the people
filter rejected it, or it was removed from the derived release) keeps its original for every view.

Why it is built this way:
- **Per-shard lookup, no key table.** `passkit views generate` writes source shard i's variations
  to the derived shard numbered i (`shards/<name>-genview-<i>.tar`, keys `<source key>-gv`) and
  leaves that shard out when every variation of it was rejected. So a sample's variation is found
  by opening the derived shard with its source shard's number and looking its key up in that tar's
  member table, which the shard pool parses once and keeps open like the source's. Nothing lists
  every sample of either release.
- **Deterministic, whatever the workers.** The choice (which view, and whether) is a hash of
  (seed, epoch, rank, sample id), not a draw from a shared RNG, so the same seed and epoch give the
  same pairs with any num_workers, and a resumed pass makes the choices the interrupted one made.
- **Checked.** The variation's own record must name the sample's key and image sha256
  (`genview.source_key`, `genview.source_sha256`): a derived release made from another build of
  the source is refused (ShardIntegrityError, through the loader's handler), not silently paired.

Each sample's metadata gains `genview_view`: the index of the view made from the variation, or None.
Only the CPU input path pairs (each view is transformed from its own decoded image); the device
path hands one JPEG per sample to the training device and cannot.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from passkit.stream import decode
from passkit.stream.loader import (
    LoaderConfig,
    Release,
    ReleaseDataset,
    ReleaseLoader,
    _as_is,
    open_release,
)
from passkit.stream.storage import ShardIntegrityError, ShardPool, ShardRef

KEY_SUFFIX = "-gv"  # passkit.views.derive.KEY_SUFFIX, repeated: derive.py imports the release writers, which
# loader workers do not need (a test keeps the two equal)


@dataclass(frozen=True, slots=True)
class GenViewPairing:
    """`views: genview`: the derived release, and the chance that a sample's chosen view is generated."""

    derived: str | Path
    prob: float = 1.0  # the reference's configs use prob_gen_img=1.0

    def check(self) -> None:
        if not 0.0 <= self.prob <= 1.0:
            raise ValueError(f"genview probability must be in [0, 1], got {self.prob}")

    def describe(self) -> dict[str, Any]:
        return {"views": "genview", "derived": str(self.derived), "prob": self.prob}


def shard_map(source: Release, derived: Release) -> dict[int, ShardRef]:
    """Source shard number -> the derived shard holding its variations (absent: all were rejected).

    Refuses a derived release that is not GenView's, or was made from another release."""
    src = derived.manifest.get("source") or {}
    if src.get("kind") != "genview":
        raise ValueError(f"{derived.location} is not a GenView release (its manifest's source.kind is "
                         f"{src.get('kind')!r}); make one with `passkit views generate`")
    want = source.manifest.get("release")
    if src.get("release") != want:
        raise ValueError(f"{derived.location} holds variations of {src.get('release')!r}, not of {want!r}")
    pattern = re.compile(rf"shards/{re.escape(derived.name)}-(\d+)\.tar")
    out: dict[int, ShardRef] = {}
    for ref in derived.refs:
        m = pattern.fullmatch(ref.rel)
        if m is None or int(m.group(1)) >= len(source.refs):
            raise ValueError(f"{derived.location}: shard {ref.rel} is not named after a source shard "
                             f"(shards/{derived.name}-<source shard number>.tar)")
        out[int(m.group(1))] = ref
    return out


def choice(seed: int, epoch: int, rank: int, sid: int, views: int, prob: float) -> int | None:
    """The view made from the variation for sample `sid` in this pass, or None: view uniform over
    `views`, kept with probability `prob` (the reference's MultiView order of draws)."""
    d = hashlib.blake2b(f"genview:{seed}:{epoch}:{rank}:{sid}".encode(), digest_size=16).digest()
    view = int.from_bytes(d[:8], "little") % views
    u = int.from_bytes(d[8:], "little") / 2.0**64
    return view if u < prob else None


class PairedDataset(ReleaseDataset):
    """ReleaseDataset whose samples pair the original with its GenView variation (module docstring)."""

    def __init__(self, release: Release, config: LoaderConfig | None = None, /, *,
                 pairing: GenViewPairing, **options: Any):
        super().__init__(release, config, **options)
        pairing.check()
        self.pairing = pairing
        self.derived = open_release(pairing.derived)
        self.derived_shards = shard_map(release, self.derived)
        self.derived_removed = self.derived.removed if self.config.apply_removals else frozenset()
        self.gv_pool = ShardPool(self.config.cache_dir, max_open=self.pool.max_open)
        self.views = self._views()
        self._pair_at = (0, 0)  # (epoch, rank) of the prepared pass

    def _views(self) -> int:
        per_view = getattr(self.transform, "transforms", None)
        if isinstance(per_view, list | tuple) and len(per_view) >= 2:
            return len(per_view)
        raise ValueError("GenView pairing needs a multi-view transform with a `transforms` list (MultiView, "
                         "decode.Views), e.g. the recipe's two MoCo views; the device input path cannot pair")

    def prepare(self, start: int = 0) -> Any:
        p = super().prepare(start)
        self._pair_at = (p.epoch, p.rank)  # read in the workers, which get this object after prepare
        return p

    def variation(self, sid: int, meta: dict[str, Any]) -> bytes | None:
        """The JPEG of sample `sid`'s variation, or None when it has none."""
        c = self.catalog
        number = int(c.shard[sid])
        ref = self.derived_shards.get(number)
        if ref is None:
            return None
        key = self.pool.get(self.release.refs[number]).sample_keys[int(c.ordinal[sid])]
        gv_key = key + KEY_SUFFIX
        if gv_key in self.derived_removed:
            return None
        shard = self.gv_pool.get(ref)
        group = shard.members.get(gv_key)
        if group is None or "jpg" not in group:
            return None
        gv = (json.loads(shard.read(group["json"])) if "json" in group else {}).get("genview") or {}
        if gv.get("source_key") != key or gv.get("source_sha256") != meta.get("sha256"):
            raise ShardIntegrityError(
                f"{ref.location}: {gv_key} is not a variation of this {key} (it names {gv.get('source_key')!r}, "
                f"image {gv.get('source_sha256')!r}); regenerate the views for this release")
        return shard.read(group["jpg"])

    def sample(self, sid: int) -> tuple[Any, dict[str, Any]]:
        data, meta = self.read(sid)
        epoch, rank = self._pair_at
        view = choice(self.config.seed, epoch, rank, sid, self.views, self.pairing.prob)
        gen = self.variation(sid, meta) if view is not None else None
        meta["genview_view"] = view if gen is not None else None
        if gen is None:
            return self.transform(self._image(data)), meta
        orig, var = self._image(data), self._image(gen)
        per_view: list[Callable[[Any], Any]] = self.transform.transforms  # type: ignore[attr-defined]
        return tuple(t(var if i == view else orig) for i, t in enumerate(per_view)), meta

    def _image(self, data: bytes) -> Any:
        return data if self.wants_jpeg else decode.decode_pil(data)

    def __iter__(self) -> Iterator[Any]:
        try:
            yield from super().__iter__()
        finally:
            self.gv_pool.close()


def paired_loader(release_dir: Path | str, pairing: GenViewPairing, batch_size: int | None,
                  transform: Callable[[Any], Any] | None = None, **options: Any) -> ReleaseLoader:
    """`passkit.stream.loader(...)` with GenView pairing: the same keyword options (LoaderConfig's),
    the same epochs, resume state and worker behaviour."""
    cfg = LoaderConfig(batch_size=batch_size, transform=transform, **options)
    ds = PairedDataset(open_release(release_dir), cfg, pairing=pairing)
    return ReleaseLoader(ds, collate_fn=_as_is, **cfg.dataloader_kwargs())

"""`passkit publish RELEASE URL`: a release folder copied to object storage, where it is audited and streamed.

Nobody trains from a laptop folder: releases live in object storage (s3://, gs://, a Hugging Face
dataset repo, any fsspec URL, or another local folder) and are read from there by `passkit audit URL`
and `passkit.stream.loader(URL)`. A publish:

1. reads the local release (objects.release_objects): every file, its size and sha256, in order;
2. lists what the destination already holds. A manifest there that is not this one is removed first:
   it would name files about to be replaced, and a reader must never find a manifest whose files are
   missing or different;
3. skips each object whose size and sha256 (read back from the store) already match: a publish that was
   killed, or lost its network, resumes where it stopped;
4. uploads the shards, then the other files, `workers` at a time, reading each one back afterwards to
   check its sha256; the manifest goes last, once everything it names is verified.

Objects under the destination that are not part of the release are left alone and reported (an
older version's shards would show in the audit as shard_unlisted).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from passkit.publish.objects import MANIFEST, PublishError, ReleaseObject, release_objects
from passkit.publish.targets import Target, open_target

__all__ = ["PublishError", "PublishReport", "ReleaseObject", "publish", "release_objects"]

DEFAULT_WORKERS = 8


@dataclass(slots=True)
class PublishReport:
    url: str
    uploaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already there with the same size and sha256
    extra: list[str] = field(default_factory=list)  # at the destination, not part of the release
    bytes_uploaded: int = 0
    replaced_manifest: bool = False  # a different manifest was taken down before the upload


# on_progress(event, value): ("plan", bytes to upload), ("bytes", n sent), ("done", rel), ("skip", rel),
# ("verify", rel)
Progress = Callable[[str, object], None]


def publish(release_dir: Path | str, url: str, *, workers: int = DEFAULT_WORKERS,
            on_progress: Progress | None = None, target: Target | None = None) -> PublishReport:
    """Upload a local release folder to `url` (see the module doc); PublishError says what went wrong."""
    root = Path(release_dir)
    objs = release_objects(root)
    tgt = target or open_target(url)
    report = PublishReport(tgt.url)
    say = on_progress or (lambda event, value: None)
    lock = threading.Lock()
    have = tgt.existing()
    wanted = {o.rel for o in objs}
    report.extra = sorted(r for r in have if r not in wanted)
    manifest = objs[-1]
    assert manifest.rel == MANIFEST

    def same(o: ReleaseObject) -> bool:
        return have.get(o.rel) == o.size and tgt.sha256(o.rel) == o.sha256

    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="passkit-publish") as pool:
        if MANIFEST in have and not same(manifest):
            tgt.remove(MANIFEST)  # readers see no release while it changes, never a wrong one
            report.replaced_manifest = True
        candidates = [o for o in objs if o.rel in have and o.rel != MANIFEST]
        done = {o.rel for o, ok in zip(candidates, pool.map(same, candidates), strict=True) if ok}
        if MANIFEST in have and not report.replaced_manifest:
            done.add(MANIFEST)
    todo = [o for o in objs if o.rel not in done]
    report.skipped = [o.rel for o in objs if o.rel in done]
    for rel in report.skipped:
        say("skip", rel)
    say("plan", sum(o.size for o in todo))

    def sent(n: int) -> None:
        with lock:
            report.bytes_uploaded += n
        say("bytes", n)

    for phase in (0, 1, 2):
        batch = [o for o in todo if o.phase == phase]
        if not batch:
            continue
        tgt.put_many(batch, root, sent, workers)
        _verify(tgt, batch, workers, say)
        report.uploaded += [o.rel for o in batch]
    return report


def _verify(tgt: Target, batch: list[ReleaseObject], workers: int, say: Progress) -> None:
    """Read every uploaded object back: its size and sha256 must be the local file's (and the manifest's)."""
    sizes = tgt.existing()

    def check(o: ReleaseObject) -> str | None:
        if sizes.get(o.rel) != o.size:
            return f"{o.rel}: {sizes.get(o.rel)} bytes at the destination, {o.size} here"
        got = tgt.sha256(o.rel)
        say("verify", o.rel)
        if got != o.sha256:
            return f"{o.rel}: sha256 {got[:16]}... at the destination, {o.sha256[:16]}... expected"
        return None

    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="passkit-verify") as pool:
        problems = [p for p in pool.map(check, batch) if p]
    if problems:
        raise PublishError(
            f"{len(problems)} object(s) did not verify after the upload ({'; '.join(problems[:5])}). A local file that "
            "differs from its manifest is the usual cause: run `passkit audit` on the release; otherwise rerun the "
            "publish, which uploads them again. The manifest was not published.")

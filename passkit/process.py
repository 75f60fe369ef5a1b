"""Tweaks to the running process, each bought by a measurement, kept in one place.

None of them changes what passkit writes; they only cut start-up, memory churn or exit time. This
module imports nothing heavy: the console script calls it on its way out, and the workers before
their first unit.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import importlib.abc
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


class _NoPandas(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "pandas":
            raise ImportError("not needed by a work unit")


def skip_pandas_probe() -> None:
    """pyarrow imports pandas (a third of a second per process) on the first array it builds,
    only to ask whether that input is a DataFrame. A work unit never hands it one, so let this
    first probe find no pandas. pandas stays importable: pyarrow imports it after all if anyone
    asks for a conversion to pandas."""
    if "pandas" in sys.modules:
        return
    import pyarrow as pa

    finder = _NoPandas()
    sys.meta_path.insert(0, finder)
    try:
        pa.array([], pa.int8())
    finally:
        sys.meta_path.remove(finder)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h


@functools.cache
def _glibc(name: str) -> Callable[..., int] | None:
    """A function of glibc's malloc, or None where malloc is another (musl, macOS) or lacks it."""
    try:
        return getattr(ctypes.CDLL(None), name)  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


def reuse_freed_memory() -> None:
    """Let glibc keep freed image buffers for the next image instead of handing them back to the OS.

    Every image allocates and frees a few MB (the download, planes, resized copies). By default
    glibc returns such blocks at once (munmap, heap trimming) and the next image page-faults them
    back in: about 80 faults per image. With these thresholds the ingest benchmark's workers took
    half the page faults and 0.5 s less system time per 3000 images (about 5 % of the wall time),
    for 20 MB more peak memory per worker (171 -> 190 MB). A no-op where malloc is not glibc's
    (mallopt missing, or a stub as in musl)."""
    mallopt = _glibc("mallopt")
    if mallopt is None:
        return
    mallopt(_M_MMAP_THRESHOLD, 32 << 20)  # blocks up to 32 MB come from the heap, not mmap
    mallopt(_M_TRIM_THRESHOLD, 64 << 20)  # keep up to 64 MB free at the heap's top for reuse


def _warm_release_imports(plots: bool) -> None:
    try:
        from passkit.release import report

        report.warm_up(plots)
    except Exception:  # only a head start: the release imports it again and reports any error
        pass


def warm_release_imports(plots: bool) -> None:
    """Load the release step's templates (and plotting library, for the people filter's
    histograms) on a daemon thread while the workers crawl: this process mostly waits then, and
    the loading is otherwise added to the end of every build."""
    threading.Thread(target=_warm_release_imports, args=(plots,), name="passkit-warm", daemon=True).start()


def exit_without_teardown(code: int) -> None:
    """Exit with `code` without tearing the interpreter down.

    After a build the interpreter holds pyarrow, pandas, OpenCV, Jinja and the release's data;
    freeing all of that object by object took 0.2-0.3 s of every command (2 % of the ingest
    benchmark's build), for memory the OS takes back at once. Exit handlers still run and output
    is flushed; a process that leaves a non-daemon thread running exits the normal way."""
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def hand_back_freed_memory() -> None:
    """Return the memory freed so far to the OS (glibc's malloc_trim; a no-op elsewhere).

    glibc keeps what a thread freed in that thread's arena, where a big allocation on another
    thread cannot use it; the image check calls this after its largest decodes (see
    images.TRIM_AT), so a worker's RSS holds one decode budget, not one per thread, and the release
    step between its passes, so one pass's leftovers do not add to the next one's peak."""
    trim = _glibc("malloc_trim")
    if trim is not None:
        trim(0)
    arrow = sys.modules.get("pyarrow")  # its own allocator keeps freed pages too (not imported here)
    if arrow is not None:
        arrow.default_memory_pool().release_unused()


def handing_back(items: Iterable[T], every: int = 1) -> Iterator[T]:
    """`items`, with the freed memory handed back after every `every` of them.

    A long pass over batches of a big table frees as much as it allocates, but the allocators
    (glibc's arenas, Arrow's mimalloc) keep part of each batch's leftovers: over millions of rows
    RSS would creep up by tens of megabytes. Handing back every few batches keeps it flat."""
    for i, item in enumerate(items):
        yield item
        if i % every == every - 1:
            hand_back_freed_memory()

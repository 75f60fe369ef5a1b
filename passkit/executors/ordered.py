"""Results of jobs run elsewhere (a process pool, Ray), handed back in the order the jobs came."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

Job = TypeVar("Job")
Result = TypeVar("Result")


def in_order(jobs: Iterable[Job], start: Callable[[Job], Any], collect: Callable[[Any], Result],
             window: int) -> Iterator[Result]:
    """`collect(start(job))` for every job, in the jobs' order, with at most `window` jobs started
    and not yet collected: the results waiting on a slow job take bounded memory, and the output
    (shards, a report) does not depend on which job finished first."""
    pending: deque[Any] = deque()
    for job in jobs:
        pending.append(start(job))
        if len(pending) >= window:
            yield collect(pending.popleft())
    while pending:
        yield collect(pending.popleft())

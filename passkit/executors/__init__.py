"""Executors run many work units; each unit runs the same way on any of them.

`local` (default): a process pool on this machine. `ray`: one Ray task per unit, locally or on a
cluster (needs `pip install passkit[ray]`; Ray itself is imported only when that executor runs).
Names load on first use, so `passkit.executors.local.WorkerPool` can start before the pipeline
is imported (see there).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

EXECUTORS = ("local", "ray")
_WHERE = {"run_local": "local", "WorkerPool": "local", "run_ray": "ray", "ExecutorError": "ray"}

__all__ = ["EXECUTORS", "ExecutorError", "WorkerPool", "run_local", "run_ray"]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(f"passkit.executors.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'passkit.executors' has no attribute {name!r}")

"""Executors run many work units; each unit runs the same way on any of them.

`local` (default): a process pool on this machine. `ray`: one Ray task per unit, locally or on a
cluster (needs `pip install passkit[ray]`; Ray itself is imported only when that executor runs).
"""

from passkit.executors.local import run_local
from passkit.executors.ray import ExecutorError, run_ray

EXECUTORS = ("local", "ray")

__all__ = ["EXECUTORS", "ExecutorError", "run_local", "run_ray"]

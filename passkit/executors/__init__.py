"""Executors run many work units; each unit runs the same way on any of them."""

from passkit.executors.local import run_local

__all__ = ["run_local"]

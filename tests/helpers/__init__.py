"""Helpers the tests share: data makers and factories, imported as `tests.helpers.<module>`.

Stateful helpers (servers, builds, data folders) are fixtures in the conftest files instead.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository
DATA = ROOT / "tests" / "data"  # small test data committed with the tests

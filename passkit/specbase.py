"""The base of every spec class: the pipeline's own (passkit.config) and each source's.

A leaf module, so a source's spec module can share the base without importing passkit.config,
which imports every source's spec to build the source union.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class SpecModel(BaseModel):
    """Frozen, and a key the model does not declare is an error (a typo never passes silently)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

"""The base of every spec class: the pipeline's own (passkit.config) and each source's.

A leaf module, so a source's spec module can share the base without importing passkit.config,
which imports every source's spec to build the source union.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict


class SpecModel(BaseModel):
    """Frozen, and a key the model does not declare is an error (a typo never passes silently)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _listed(v: Any) -> Any:
    return [v] if isinstance(v, str) else v


# A list of paths that a spec may also give as one string (`paths: data.tsv`).
PathList = Annotated[list[str], BeforeValidator(_listed)]

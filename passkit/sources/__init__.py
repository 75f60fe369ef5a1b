"""Sources: where candidates come from. One table of kinds, one function to open them.

    with open_source(spec.source) as src:
        manifest["source"] = src.describe()
        for cand in src.candidates():
            ...

A source yields `Candidate`s lazily, in a deterministic order, each source_id at most once, with
provenance filled in (source kind, source_id, the query that found it). It judges nothing: licence,
fetch, image and people checks are later stages. A source that needs resources (a server, a
session, an open file) holds them for the life of the context manager that `open_source` returns.

To add a kind, write `passkit/sources/<kind>.py` declaring

    class <Kind>SourceSpec(SpecModel):      # passkit.specbase
        kind: Literal["<kind>"] = "<kind>"
        ...
    def open_<kind>(spec) -> context manager of a `Source`
    SPEC = <Kind>SourceSpec
    OPENER = open_<kind>

and add the line `"<kind>": "passkit.sources.<kind>"` to `SOURCES`. That is all: the pipeline spec's
`source` union (passkit.config) is built from this table. passkit.config imports every module named
here, so a kind whose source needs heavy packages (requests, pyarrow, numpy) keeps them out of that
module: it imports them inside `open_<kind>`, or, like the kinds below, keeps the spec in a light
`<kind>_spec.py` whose OPENER is the string "passkit.sources.<kind>:open_<kind>" (imported on first use).
"""

from __future__ import annotations

import functools
import importlib
import operator
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Annotated, Any, Protocol, runtime_checkable

from pydantic import BaseModel, Field

from passkit.records import Candidate

__all__ = [
    "SOURCES", "SOURCE_KINDS", "Source", "SourceOpener", "SourceSpec", "UnknownSourceError", "kinds",
    "open_source", "register",
]


@runtime_checkable
class Source(Protocol):
    name: str  # the source kind, as written in Candidate.source

    def candidates(self) -> Iterator[Candidate]:
        """Lazy, deterministic, de-duplicated by source_id."""
        ...

    def describe(self) -> dict[str, Any]:
        """What the manifest records about this source: at least kind and its parameters."""
        ...


SourceOpener = Callable[[Any], AbstractContextManager[Source]]

# kind -> the module that declares it: its spec class (SPEC) and its opener (OPENER). The order is
# the order of the spec union, which pydantic follows when it lists the allowed kinds in a message.
SOURCES: dict[str, str] = {
    "demo": "passkit.sources.demo",
    "urllist": "passkit.sources.urllist_spec",
    "yfcc100m": "passkit.sources.yfcc100m_spec",
    "openverse": "passkit.sources.openverse_spec",
    "commons": "passkit.sources.commons_spec",
    "flickr": "passkit.sources.flickr_spec",
    "folder": "passkit.sources.folder_spec",
}


class UnknownSourceError(ValueError):
    """A spec whose kind no source module handles."""


def _declared(kind: str, module: str) -> tuple[type[BaseModel], str | SourceOpener]:
    """(spec class, opener) of one table line, checked against the kind the spec class declares."""
    mod = importlib.import_module(module)
    spec, opener = getattr(mod, "SPEC", None), getattr(mod, "OPENER", None)
    if not (isinstance(spec, type) and issubclass(spec, BaseModel)) or opener is None:
        raise TypeError(f"{module} declares source kind {kind!r}: it needs SPEC (the spec class) and OPENER")
    declared = spec.model_fields["kind"].default if "kind" in spec.model_fields else None
    if declared != kind:
        raise TypeError(f"{module}: {spec.__name__}.kind defaults to {declared!r}, SOURCES lists it as {kind!r}")
    return spec, opener


_DECLARED = {kind: _declared(kind, module) for kind, module in SOURCES.items()}

SOURCE_KINDS = frozenset(SOURCES)
# The pipeline spec's `source` field: one member per kind, told apart by `kind`.
SourceSpec = Annotated[
    functools.reduce(operator.or_, (spec for spec, _ in _DECLARED.values())), Field(discriminator="kind")
]

# kind -> "module:function" (imported on first use) or the opener itself (see register()).
_OPENERS: dict[str, str | SourceOpener] = {kind: opener for kind, (_, opener) in _DECLARED.items()}


def register(kind: str, opener: str | SourceOpener) -> None:
    """Add or replace the opener of a source kind (plugins, tests)."""
    _OPENERS[kind] = opener


def kinds() -> list[str]:
    return sorted(_OPENERS)


def _resolve(kind: str) -> SourceOpener:
    opener = _OPENERS.get(kind)
    if opener is None:
        raise UnknownSourceError(f"no source of kind {kind!r}; known kinds: {', '.join(kinds())}")
    if isinstance(opener, str):
        module, _, func = opener.partition(":")
        opener = getattr(importlib.import_module(module), func)
        _OPENERS[kind] = opener
    return opener


def open_source(spec: Any) -> AbstractContextManager[Source]:
    """Open the source a spec describes (`spec.kind` picks the module); use it in a with block."""
    kind = getattr(spec, "kind", None)
    if not isinstance(kind, str):
        raise UnknownSourceError(f"a source spec needs a 'kind'; got {type(spec).__name__}")
    return _resolve(kind)(spec)

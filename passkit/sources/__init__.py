"""Sources: where candidates come from. One module per kind, one registry to open them.

    with open_source(spec.source) as src:
        manifest["source"] = src.describe()
        for cand in src.candidates():
            ...

A source yields `Candidate`s lazily, in a deterministic order, each source_id at most once, with
provenance filled in (source kind, source_id, the query that found it). It judges nothing: licence,
fetch, image and people checks are later stages. A source that needs resources (a server, a
session, an open file) holds them for the life of the context manager that `open_source` returns.

To add a kind: write `passkit/sources/<kind>.py` with a function `open_<kind>(spec)` returning a
context manager of a `Source`, add a `<Kind>SourceSpec` to `config.SourceSpec`, and add one line to
`_OPENERS`. Modules are imported only when their kind is opened, so a kind's heavy dependencies
cost nothing to the others.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any, Protocol, runtime_checkable

from passkit.records import Candidate

__all__ = ["Source", "SourceOpener", "UnknownSourceError", "kinds", "open_source", "register"]


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

# kind -> "module:function" (imported on first use) or the opener itself (see register()).
_OPENERS: dict[str, str | SourceOpener] = {
    "demo": "passkit.demo.source:open_demo",
    "urllist": "passkit.sources.urllist:open_urllist",
    "yfcc100m": "passkit.sources.yfcc100m:open_yfcc100m",
    "openverse": "passkit.sources.openverse:open_openverse",
    "commons": "passkit.sources.commons:open_commons",
    "flickr": "passkit.sources.flickr:open_flickr",
    "folder": "passkit.sources.folder:open_folder",
}


class UnknownSourceError(ValueError):
    """A spec whose kind no source module handles."""


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

"""The growing library: on-disk store (snapshot + journal + images), ingest, index, search, thumbnails."""
from importlib import import_module

__all__ = ["Library", "Entry", "NewImage", "open_library", "ingest", "Upload", "IngestReport", "Searcher",
           "SearchQuery", "SearchResult", "Hit"]

_LAZY = {**{n: ".ingest" for n in ("IngestReport", "Upload", "ingest", "open_library")},
         **{n: ".search" for n in ("Hit", "Searcher", "SearchQuery", "SearchResult")},
         **{n: ".store" for n in ("Entry", "Library", "NewImage")}}


def __getattr__(name: str):
    """Public names import their module on first use (PEP 562): importing this package for one
    light module (e.g. from `python -m core --help`) does not pull in torch."""
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""The growing library: on-disk store (snapshot + journal + images), ingest, index, search, thumbnails."""
from ..lazy import lazy_attributes

__all__ = ["Library", "Entry", "NewImage", "open_library", "ingest", "Upload", "IngestReport", "Searcher",
           "SearchQuery", "SearchResult", "Hit"]

_LAZY = {**{n: ".ingest" for n in ("IngestReport", "Upload", "ingest", "open_library")},
         **{n: ".search" for n in ("Hit", "Searcher", "SearchQuery", "SearchResult")},
         **{n: ".store" for n in ("Entry", "Library", "NewImage")}}

__getattr__ = lazy_attributes(__name__, _LAZY)

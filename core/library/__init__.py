"""The growing library: on-disk store (snapshot + journal + images), ingest, index, search, thumbnails."""
from .ingest import IngestReport, Upload, ingest, open_library
from .search import Hit, Searcher, SearchQuery, SearchResult
from .store import Entry, Library, NewImage

__all__ = ["Library", "Entry", "NewImage", "open_library", "ingest", "Upload", "IngestReport", "Searcher",
           "SearchQuery", "SearchResult", "Hit"]

"""Library paging and thumbnails for the gallery (newest first; thumbnails rebuilt when missing).

Only a page of entries is read per request, and the gallery shows 256 px thumbnails,
so a library of 100k images pages as fast as one of 100.
"""
from __future__ import annotations

import math

from core.images import ImageError, load_image
from core.ingest import write_thumbnail
from core.library import Entry, Library, LibraryError
from core.search import Hit

__all__ = ["PAGE_SIZE", "Page", "read_page", "thumb_for", "hit_thumb"]

PAGE_SIZE = 48   # thumbnails per page: 6 rows of 8, one screen on a classroom projector


class Page:
    def __init__(self, entries: list[Entry], page: int, pages: int, total: int):
        self.entries, self.page, self.pages, self.total = entries, page, pages, total


def read_page(library: Library, page: int | float | None, size: int = PAGE_SIZE) -> Page:
    """Page `page` (1-based, clamped to the valid range) of the library, newest entry first."""
    library.refresh()   # show what the CLI or another app process added
    total = len(library)
    pages = max(1, math.ceil(total / size))
    page = min(max(1, int(page or 1)), pages)
    stop = total - (page - 1) * size
    start = max(0, stop - size)
    return Page(library.entries(start, stop - start)[::-1], page, pages, total)


def thumb_for(library: Library, entry: Entry) -> str:
    """Path of the entry's thumbnail, written from the stored image if it is missing."""
    path = library.thumb_path(entry.sha256)
    if not path.is_file():
        try:
            write_thumbnail(library, entry.sha256, load_image(entry.path, entry.name))
        except (ImageError, OSError):
            return str(entry.path)   # the gallery shows the image itself (or its broken icon)
    return str(path)


def hit_thumb(library: Library, hit: Hit) -> str:
    """Thumbnail of a search hit (its row, checked by id, else looked up; the image itself if gone)."""
    try:
        entry = library.entry(hit.row)
        if entry.id != hit.id:            # rows moved (a removal) since the search
            entry = library.find(hit.sha256)
    except (IndexError, LibraryError):
        return str(hit.path)
    return thumb_for(library, entry)

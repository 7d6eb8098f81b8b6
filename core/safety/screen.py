"""What each caller is shown of one library under the class's safety policy: results and pages
without the images waiting for review (for students), results without near-duplicates of a better
one (on a shared link), and the teacher's review queue and near-duplicate groups.

    screen = Screen(library, safety)               # built once by the front door (core/workbench.py)
    hidden = screen.hidden(caller)                 # hashes this caller may not see
    hits = screen.hits(searcher.search(q with k=screen.widen(q.k, hidden)).hits, hidden)[:q.k]
    entries, number, pages, total, held = screen.page(caller, 2, 48)

Only the front door calls these; the index and the searcher know nothing of who is asking.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from ..errors import NotFoundError
from ..library.duplicates import collapse, near_duplicate_groups
from ..library.search import MAX_K
from ..library.store import Entry, Library
from ..messages import Msg
from .policy import SafetyPolicy
from .review import Held

__all__ = ["Screen", "NEAR_REPORT_MAX", "COLLAPSE_POOL"]

COLLAPSE_POOL = 3       # candidates asked per result wanted when near-duplicates are collapsed
NEAR_REPORT_MAX = 256   # an ingest reports near-duplicates of at most this many new images (a bulk import
                        # would pay O(added x N); `library near-duplicates` scans the whole library instead)
NEAR_NEIGHBOURS = 8     # neighbours of a new image looked at for an older near-duplicate


class Screen:
    """One library as each caller may see it, under one SafetyPolicy."""

    def __init__(self, library: Library, safety: SafetyPolicy):
        self.library, self.safety = library, safety

    @property
    def collapsing(self) -> bool:
        return self.safety.config.collapses

    # ------------------------------------------------------------------ results

    def hidden(self, caller) -> set[str]:
        """Hashes of the images this caller may not see (those waiting for review, for a student)."""
        self.library.refresh()
        return self.safety.hidden(caller, self.library.contains)

    def widen(self, k: int, hidden: set[str]) -> int:
        """Hits to ask the index for so that `k` remain after screening (at most MAX_K); an invalid
        k passes unchanged, for the searcher to refuse."""
        if not 1 <= k <= MAX_K:
            return k
        return min(MAX_K, k * (COLLAPSE_POOL if self.collapsing else 1) + len(hidden))

    def hits(self, hits: Sequence, hidden: set[str]) -> list:
        """`hits` (best first) without the hidden ones and, when collapsing, without near-duplicates
        of a better hit kept."""
        kept = [h for h in hits if h.sha256 not in hidden]
        if not self.collapsing or len(kept) < 2:
            return kept
        vectors = self.library.vectors_of(np.array([h.rowid for h in kept], dtype=np.int64))
        return [kept[i] for i in collapse(vectors, self.safety.config.near_duplicate)]

    def entry(self, image_id: str, caller) -> Entry:
        """The entry with this id; NotFoundError for one waiting for review the caller may not see."""
        entry = self.library.find(image_id)
        if entry.sha256 in self.hidden(caller):
            raise NotFoundError(Msg("没有 ID 为 {id} 的图片", "No image with id {id}", id=image_id))
        return entry

    # ------------------------------------------------------------------ pages

    def page(self, caller, page: int | float | None, size: int) -> tuple[list[Entry], int, int, int, frozenset]:
        """(entries of page `page` newest first, the page number clamped to [1, pages], pages, total, ids
        of the entries shown that wait for review). Without hidden images it reads one page only."""
        hidden = self.hidden(caller)   # refreshes: shows what the CLI or another app process added
        if hidden:
            hidden_ids = np.array(sorted(self.library.find(s).rowid for s in hidden), dtype=np.int64)
            ids = np.setdiff1d(self.library.live_ids(), hidden_ids, assume_unique=True)
            number, pages, start, stop = _slice(len(ids), page, size)
            entries = [self.library.entry(int(r)) for r in ids[start:stop][::-1]]
        else:
            number, pages, start, stop = _slice(len(self.library), page, size)
            entries = self.library.entries(start, stop - start)[::-1]
        waiting = set(self.safety.waiting(self.library.contains)) if self.safety.sees_held(caller) else set()
        total = len(self.library) - len(hidden)
        return entries, number, pages, total, frozenset(e.id for e in entries if e.sha256 in waiting)

    # ------------------------------------------------------------------ adding

    def hold(self, caller, shas: list[str], vectors: torch.Tensor, held: dict[str, Held]) -> None:
        """Ingest's before_store: the images of a batch that wait for review, put in the queue (on disk)
        before the batch is stored, so a crash never shows one; `held` collects them for the report."""
        waiting = self.safety.hold_for(caller, shas, vectors)
        self.safety.review.hold(waiting)
        held.update(waiting)

    def near(self, added: list[str], index) -> list[tuple[str, str, float]]:
        """(new id, older id, cosine) for each new image within the near-duplicate threshold of an older
        one, found with the served `index` (`search(queries [Q, D], k) -> (scores, row ids)`: exact,
        or FAISS on a large library) rather than a scan of every row."""
        if not added or len(added) > NEAR_REPORT_MAX:
            return []
        rowids = np.array([self.library.find(i).rowid for i in added], dtype=np.int64)
        scores, ids = index.search(self.library.vectors_of(rowids), NEAR_NEIGHBOURS)
        found = []
        for new, row_scores, row_ids in zip(rowids.tolist(), scores.tolist(), ids.tolist()):
            older = [(s, r) for s, r in zip(row_scores, row_ids) if r < new and s >= self.safety.config.near_duplicate]
            if older:
                found.append((self.library.entry(new).id, self.library.entry(older[0][1]).id, older[0][0]))
        return found

    # ------------------------------------------------------------------ the teacher's views

    def review(self, caller) -> list[tuple[Entry, Held]]:
        """The images waiting, oldest first, each with why it waits (the teacher only)."""
        self.safety.require_reviewer(caller)
        self.library.refresh()
        waiting = self.safety.waiting(self.library.contains)
        return sorted(((self.library.find(sha), h) for sha, h in waiting.items()), key=lambda p: p[0].rowid)

    def approve(self, image_ids: Sequence[str], caller) -> list[Entry]:
        """Let these waiting images be seen by everyone; returns the entries that waited."""
        self.safety.require_reviewer(caller)
        entries = [self.library.find(i) for i in image_ids]
        released = set(self.safety.review.release([e.sha256 for e in entries], keep=self.library.contains))
        return [e for e in entries if e.sha256 in released]

    def removed(self, entries: Sequence[Entry]) -> None:
        """Forget the holds of images just removed."""
        self.safety.review.release([e.sha256 for e in entries], keep=self.library.contains)

    def near_duplicates(self, threshold: float | None) -> list[list[Entry]]:
        """Groups of near-duplicates, each oldest first (cosine >= threshold, default the policy's)."""
        groups = near_duplicate_groups(self.library, threshold or self.safety.config.near_duplicate)
        return [[self.library.entry(r) for r in group] for group in groups]


def _slice(total: int, page: int | float | None, size: int) -> tuple[int, int, int, int]:
    """(page number clamped to [1, pages], pages, start, stop): positions, oldest first, of page
    `page` counted from the newest."""
    pages = max(1, math.ceil(total / size))
    number = min(max(1, int(page or 1)), pages)
    stop = total - (number - 1) * size
    return number, pages, max(0, stop - size), stop

"""Near-duplicates: images whose stored embeddings are almost the same (a photo saved twice at two
sizes, a re-encoded JPEG, a crop of a few pixels), found from the embeddings alone.

    near_duplicate_groups(library)           # [[rowid, ...], ...]: each group oldest first
    collapse(vectors)                        # which of ranked results to keep (the best of each cluster)

Two images are near-duplicates when the cosine of their embeddings is at least `threshold`
(0.94 by default: clip-front's inner-product rule for hiding duplicates in results). A group is
a connected set under that relation. The scan is exact, in blocks (memory O(block x N)), so it
costs O(N^2 D): seconds for a class's library of thousands, minutes past ~100,000 images.
"""
from __future__ import annotations

import numpy as np
import torch

from .store import Library

__all__ = ["near_duplicate_groups", "collapse", "NEAR_DUPLICATE", "BLOCK"]

NEAR_DUPLICATE = 0.94   # cosine from which two images count as near-duplicates
BLOCK = 2048            # rows compared at once (a BLOCK x N float32 similarity block)


def _live(library: Library) -> tuple[np.ndarray, torch.Tensor]:
    """(ids int64 [N] ascending, vectors float32 [N, D]) of the live rows."""
    view = library.view()
    keep = np.flatnonzero(view.alive)
    base = len(view.base)
    vectors = torch.cat([view.base[torch.from_numpy(keep[keep < base])].float(),
                         view.tail[torch.from_numpy(keep[keep >= base] - base)]])
    return view.ids[keep], vectors


class _Groups:
    """Union-find over row positions."""

    def __init__(self, n: int):
        self.parent = np.arange(n)

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def join(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def near_duplicate_groups(library: Library, threshold: float = NEAR_DUPLICATE, block: int = BLOCK) -> list[list[int]]:
    """Every group of two or more near-duplicate live rows: row ids ascending (the oldest first),
    groups ordered by their oldest row."""
    library.refresh()
    ids, vectors = _live(library)
    groups = _Groups(len(ids))
    for start in range(0, len(ids), block):
        sims = vectors[start:start + block] @ vectors[start:].T      # only pairs (i, j >= i)
        rows, cols = torch.nonzero(sims >= threshold, as_tuple=True)
        for r, c in zip(rows.tolist(), cols.tolist()):
            if c > r:
                groups.join(start + r, start + c)
    members: dict[int, list[int]] = {}
    for i in range(len(ids)):
        members.setdefault(groups.find(i), []).append(int(ids[i]))
    return sorted((m for m in members.values() if len(m) > 1), key=lambda m: m[0])


def collapse(vectors: torch.Tensor, threshold: float = NEAR_DUPLICATE) -> list[int]:
    """vectors [n, D] of ranked results, best first -> the positions to keep: each result unless it
    is a near-duplicate of a better one kept already."""
    kept: list[int] = []
    if not len(vectors):
        return kept
    sims = vectors.float() @ vectors.float().T
    for i in range(len(vectors)):
        if not kept or float(sims[i, kept].max()) < threshold:
            kept.append(i)
    return kept

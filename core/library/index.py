"""Indexes over a library, kept in step with it: exact below a size threshold, FAISS above.

    index = open_index(library, runtime, kind="auto")   # "exact" | "ivf" | "hnsw" | "ivfpq" | "ivfsq" | "auto"
    scores, rowids = index.search(queries, k)           # [Q, k'] best first, live rows only
    served = ServedIndex(library, runtime, "auto", background=True)   # what a Workbench searches with

Both speak core.library.ann's `Index` protocol and return permanent row ids, never positions.

- `ExactIndex` (core/library/exact.py) scans the library's own rows (the mapped snapshot plus
  the rows added since) and masks removed ones; nothing to build or keep in step. On CUDA it
  keeps a device copy, uploaded once per snapshot generation plus the new rows after each add.
- `LibraryANN` wraps a FAISS index (core.library.ann) persisted as store/index.<kind>.faiss.
  Before each search it takes in the rows added since it last looked (`rows_after`) and
  drops the rows removed since (`removed_since`), so adds go in incrementally and removals
  are masked; `save()` (on flush) records the highest row id it covers, so the next open
  loads it and adds only what is newer. A saved index of another model is rebuilt.
- `ServedIndex` is the index a running app or command searches with: exact until its ANN
  index is open, rebuilt on demand, saved on flush; it owns that life, so nobody swaps an
  index under a searcher from outside.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np
import torch

from ..settings import Runtime
from .ann import (EXACT_MAX_ROWS, FAISS_KINDS, INDEX_KINDS, KINDS, RERANKED_KINDS, build_index, choose_kind,
                  load_index, nlist_for, train_rows)
from .disk import STORE_DIR
from .exact import ExactIndex
from .rows import view_vectors
from .store import Library

__all__ = ["ExactIndex", "LibraryANN", "ServedIndex", "open_index", "resolve_kind", "INDEX_KINDS"]

log = logging.getLogger(__name__)

_BUILD_CHUNK = 131_072   # rows converted to float32 and added at a time


def resolve_kind(kind: str | None, rows: int) -> str:
    kind = (kind or "auto").strip().lower()
    if kind not in INDEX_KINDS:
        raise ValueError(f"Unknown index {kind!r}; expected one of {', '.join(INDEX_KINDS)}")
    return choose_kind(rows) if kind == "auto" else kind


class LibraryANN:
    """A FAISS index kept in step with a library (see the module docstring)."""

    def __init__(self, library: Library, index, covered: int, removed_seen: int | None = None):
        self.library, self.index, self.kind = library, index, index.kind
        self.covered = covered                      # highest row id the index has seen
        # position in the library's removal log: removals after it are applied at the next sync
        self._removed_seen = library.removal_count if removed_seen is None else removed_seen
        self._synced = -1                           # library.version at the last sync
        self._lock = threading.Lock()

    @classmethod
    def build(cls, library: Library, kind: str, **opts) -> "LibraryANN":
        """Train on a uniform sample of the rows, then add the rest a chunk at a time: memory
        stays at one chunk of float32 even for 10M rows stored as float16."""
        removed_seen = library.removal_count   # first: removals during the build reach the index at sync
        view = library.view()                   # one picture of the rows: adds during the build come at sync
        slots = np.flatnonzero(view.alive)
        rng = np.random.default_rng(0)
        sample = np.sort(rng.choice(slots, size=min(len(slots), train_rows(kind)), replace=False))
        if kind == "ivfsq":   # cells for the whole library, not for the training sample (ivf and
            # ivfpq still size theirs by the sample: 1264 cells at any size, as their defaults were tuned)
            opts.setdefault("nlist", nlist_for(kind, len(slots), len(sample)))
        index = build_index(kind, library.dim, torch.from_numpy(view.ids[sample].copy()),
                            view_vectors(view, sample), **_rerank_opts(library, kind), **opts)
        rest = np.setdiff1d(slots, sample, assume_unique=True)
        for start in range(0, len(rest), _BUILD_CHUNK):
            part = rest[start:start + _BUILD_CHUNK]
            index.add(torch.from_numpy(view.ids[part].copy()), view_vectors(view, part))
        covered = int(view.ids[slots].max()) if len(slots) else -1
        return cls(library, index, covered, removed_seen)

    @classmethod
    def open(cls, library: Library, kind: str) -> "LibraryANN":
        """Load store/index.<kind>.faiss when it belongs to this library's model, else build."""
        path = index_path(library, kind)
        if path.is_file():
            index = load_index(path)
            meta = index.meta
            if meta.get("model_id") == library.model_id and meta.get("dim") == library.dim:
                if kind in RERANKED_KINDS:
                    index.rerank = _rerank_opts(library, kind)["rerank"]
                ann = cls(library, index, int(meta.get("covered", -1)))
                dead = library.dead_ids_upto(ann.covered)   # removed since the save (or before: harmless)
                if len(dead):
                    index.remove(torch.from_numpy(dead))
                return ann
        return cls.build(library, kind)

    def __len__(self) -> int:
        return len(self.library)

    def sync(self) -> None:
        """Take in the library's adds and removals since the last look (cheap when none)."""
        with self._lock:
            version = self.library.version   # read first: a change during this sync is taken next time
            if self._synced == version:
                return
            ids, vectors = self.library.rows_after(self.covered)
            if len(ids):
                self.index.add(ids, vectors)
                self.covered = int(ids.max())
            removed, self._removed_seen = self.library.removed_since(self._removed_seen)
            if len(removed):
                self.index.remove(torch.from_numpy(removed))
            self._synced = version

    def add(self, ids: torch.Tensor, vectors: torch.Tensor) -> None:
        self.sync()

    def remove(self, ids: torch.Tensor) -> None:
        self.sync()

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.sync()
        scores, ids = self.index.search(queries, k)
        keep = self.library.alive(ids.reshape(-1).numpy()).reshape(ids.shape)   # a removal mid-search
        if keep.all():
            return scores, ids
        rows = [(s[m], i[m]) for s, i, m in zip(scores, ids, torch.from_numpy(keep))]
        width = min(len(r[1]) for r in rows)
        return torch.stack([r[0][:width] for r in rows]), torch.stack([r[1][:width] for r in rows])

    def save(self) -> None:
        with self._lock:
            self.index.meta = {"model_id": self.library.model_id, "dim": self.library.dim, "covered": self.covered}
            self.index.save(index_path(self.library, self.kind))


def index_path(library: Library, kind: str) -> Path:
    return library.root / STORE_DIR / f"index.{kind}.faiss"


def _rerank_opts(library: Library, kind: str) -> dict:
    """ivfpq and ivfsq re-score their candidates with the library's full-precision (mapped) rows."""
    return {"rerank": _RowFetcher(library)} if kind in RERANKED_KINDS else {}


class _RowFetcher:
    """float32 [n, D] stored rows of n row ids (zeros for ids that never existed), for re-ranking.

    numpy only, from the library's mapped snapshot and tail: torch's small parallel ops between
    two faiss searches made FAISS's and torch's OpenMP threads wait on each other on 2 cores
    (Library.vectors_of cost 14 ms a query at 1M rows, the search itself 3 ms). The slot map
    is taken once per library version, not per query."""

    def __init__(self, library: Library):
        self.library, self._lock = library, threading.Lock()
        self._rows: tuple[int, np.ndarray, np.ndarray, np.ndarray] | None = None

    def __call__(self, rowids) -> np.ndarray:
        ids, base, tail = self._current()
        rowids = np.asarray(rowids, dtype=np.int64)
        slots = np.minimum(np.searchsorted(ids, rowids), max(len(ids) - 1, 0))   # ids ascend: never reused
        found = (ids[slots] == rowids) if len(ids) else np.zeros(len(rowids), dtype=bool)
        out = np.zeros((len(rowids), self.library.dim), dtype=np.float32)
        in_base, in_tail = found & (slots < len(base)), found & (slots >= len(base))
        out[in_base] = base[slots[in_base]]
        out[in_tail] = tail[slots[in_tail] - len(base)]
        return out

    def _current(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        version = self.library.version   # read first: a change while the view is taken is seen next time
        rows = self._rows
        if rows is None or rows[0] < version:
            with self._lock:
                if self._rows is None or self._rows[0] < version:
                    view = self.library.view()
                    self._rows = (version, view.ids, view.base.numpy(), view.tail.numpy())
                rows = self._rows
        return rows[1:]


def open_index(library: Library, runtime: Runtime, kind: str | None = "auto"):
    """The index to search this library with: exact, or a FAISS kind (loaded or built)."""
    kind = resolve_kind(kind, len(library))
    if kind == "exact":
        return ExactIndex(library, runtime)
    assert kind in FAISS_KINDS
    return LibraryANN.open(library, kind)


__all__ += ["index_path", "EXACT_MAX_ROWS"]


class ServedIndex:
    """The index a running app or command searches a library with: exact until the ANN index of
    `kind` is open (loaded or built once: in a background thread when `background`, exact search
    serving meanwhile; else at the first search), `build` to make one again, `save` on flush.
    It speaks the index protocol (`search`), so a Searcher just holds it."""

    def __init__(self, library: Library, runtime: Runtime, kind: str | None = "auto", background: bool = False):
        self.library, self.runtime = library, runtime
        self.kind = resolve_kind(kind, len(library))
        self._current = ExactIndex(library, runtime)
        self._lock = threading.Lock()
        self._opened, self._background = self.kind == "exact", background
        if background and not self._opened:
            threading.Thread(target=self._open, name="open-index", daemon=True).start()

    def __len__(self) -> int:
        return len(self.library)

    def _open(self) -> None:
        """Load (or build) the ANN index once; later calls return at once."""
        with self._lock:
            if self._opened:
                return
            start = time.monotonic()
            self._current = open_index(self.library, self.runtime, self.kind)
            self._opened = True
        log.info("%s index over %d images ready in %.1f s", self.kind, len(self.library), time.monotonic() - start)

    def current(self):
        """The index searched now (opened first unless it opens in the background)."""
        if not self._opened and not self._background:
            self._open()
        return self._current

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.current().search(queries, k)

    def build(self, kind: str | None = None) -> str:
        """(Re)build the ANN index of `kind` (default: this one's) from every row, save it beside the
        library and search with it; returns the kind ("exact" needs no index)."""
        kind = resolve_kind(kind or self.kind, len(self.library))
        if kind == "exact":
            return kind
        with self._lock:
            index = LibraryANN.build(self.library, kind)
            index.save()
            self._current, self.kind, self._opened = index, kind, True
        return kind

    def save(self) -> None:
        """Persist an ANN index (nothing to do for exact search)."""
        if isinstance(self._current, LibraryANN):
            self._current.save()

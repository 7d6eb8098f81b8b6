"""Indexes over a library, kept in step with it: exact below a size threshold, FAISS above.

    index = open_index(library, runtime, kind="auto")   # "exact" | "ivf" | "hnsw" | "ivfpq" | "auto"
    scores, rowids = index.search(queries, k)           # [Q, k'] best first, live rows only
    served = ServedIndex(library, runtime, "auto", background=True)   # what a Workbench searches with

Both speak core.library.ann's `Index` protocol and return permanent row ids, never positions.

- `ExactIndex` scans the library's own rows (the mapped snapshot plus the rows added since)
  and masks removed ones; nothing to build or keep in step. On CUDA it keeps a device copy,
  uploaded once per snapshot generation plus the new rows after each add.
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
from .ann import EXACT_MAX_ROWS, FAISS_KINDS, INDEX_KINDS, KINDS, build_index, choose_kind, load_index
from .rows import view_vectors
from .disk import STORE_DIR
from .store import Library

__all__ = ["ExactIndex", "LibraryANN", "ServedIndex", "open_index", "resolve_kind", "INDEX_KINDS"]

log = logging.getLogger(__name__)

_SCAN_CHUNK = 262_144   # rows scored at once from a float16 snapshot (converted per chunk)
_TRAIN_SAMPLE = 100_000  # rows an index is trained on (k-means on more barely moves the centroids)
_BUILD_CHUNK = 131_072   # rows converted to float32 and added at a time


def resolve_kind(kind: str | None, rows: int) -> str:
    kind = (kind or "auto").strip().lower()
    if kind not in INDEX_KINDS:
        raise ValueError(f"Unknown index {kind!r}; expected one of {', '.join(INDEX_KINDS)}")
    return choose_kind(rows) if kind == "auto" else kind


class ExactIndex:
    """Exact cosine top-k over every live row of the library."""
    kind = "exact"

    def __init__(self, library: Library, runtime: Runtime):
        self.library, self.runtime = library, runtime
        # On a ZeroGPU Space CUDA exists only inside a model call (Runtime.zero_gpu): a search outside
        # one scans on the CPU in float32, never in the main process's stand-in CUDA (CPU fp16, slow)
        self._on_device = runtime.resident
        self._lock = threading.Lock()
        self._dev: tuple[int, torch.Tensor] | None = None       # (generation, base on the device)
        self._dev_tail: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.library)

    # the library is the index: adds and removals are seen at the next search
    def add(self, ids: torch.Tensor, vectors: torch.Tensor) -> None:
        pass

    def remove(self, ids: torch.Tensor) -> None:
        pass

    def save(self, path: Path | None = None) -> None:
        pass

    @torch.inference_mode()
    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        view = self.library.view()
        live = int(view.alive.sum())
        if live == 0 or k <= 0:
            return torch.empty(queries.shape[0], 0), torch.empty(queries.shape[0], 0, dtype=torch.long)
        scores = self._scores(queries, view)
        scores[:, torch.from_numpy(~view.alive).to(scores.device)] = float("-inf")
        values, slots = scores.topk(min(k, live), dim=-1)
        ids = torch.from_numpy(view.ids)[slots.cpu()]
        return values.float().cpu(), ids

    def _scores(self, queries: torch.Tensor, view) -> torch.Tensor:
        """[Q, S + T] cosine scores of every slot, on the runtime's device."""
        if self._on_device:
            base, tail = self._device(view)
            q = queries.to(base.device, base.dtype)
            return torch.cat([q @ base.T, q @ tail.T], dim=1).float()
        q = queries.float()
        if view.base.dtype == torch.float32:
            base_scores = q @ view.base.T
        else:   # a float16 snapshot: CPU half matmul is slow, convert a chunk at a time
            base_scores = torch.cat([q @ view.base[i:i + _SCAN_CHUNK].float().T
                                     for i in range(0, len(view.base), _SCAN_CHUNK)] or [q.new_empty(len(q), 0)], 1)
        return torch.cat([base_scores, q @ view.tail.T], dim=1)

    def _device(self, view) -> tuple[torch.Tensor, torch.Tensor]:
        """The snapshot uploaded once per generation; the tail's new rows after each add."""
        dev, dtype = self.runtime.device, self.runtime.dtype
        with self._lock:
            if self._dev is None or self._dev[0] != view.generation:
                self._dev = (view.generation, view.base.to(dev, dtype))
                self._dev_tail = torch.empty(0, view.base.shape[1], device=dev, dtype=dtype)
            done, t = self._dev_tail.shape[0], view.tail.shape[0]
            if t > done:
                self._dev_tail = torch.cat([self._dev_tail, view.tail[done:].to(dev, dtype)])
            return self._dev[1], self._dev_tail[:t]


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
        sample = np.sort(rng.choice(slots, size=min(len(slots), _TRAIN_SAMPLE), replace=False))
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
                if kind == "ivfpq":
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
    """ivfpq re-scores its candidates with the library's full-precision (mapped) rows."""
    if kind != "ivfpq":
        return {}
    return {"rerank": lambda ids: library.vectors_of(np.asarray(ids, dtype=np.int64)).numpy()}


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

"""Exact cosine top-k over every live row of a library: the index below the ANN threshold, and
the resident GPU index at any size.

    index = ExactIndex(library, runtime)
    scores, rowids = index.search(queries, k)     # [Q, k'] best first, live rows only

Nothing to build or keep in step: the library is the index. What a search must not pay for is
kept between searches and renewed only when the library's `version` moves (an add, a removal, a
compaction, another process's append picked up by `refresh()`):

- the slot -> row id map and the dead-slot mask (`Library.view()` copies both: 90 MB at 10M
  rows, far more than the GPU's scan of them);
- on CUDA, the rows themselves: the mapped snapshot is uploaded once per generation (in chunks,
  converted on the device: no host copy of the matrix) and the rows added since are appended
  to a device tail that grows by doubling, so an add copies only the new rows.

A search on CUDA is then one fp16 matrix-vector product per part (snapshot, tail), a masked
fill only when rows have been removed, one `topk` on the fp16 scores, and one copy of k scores
and slots back to the host: what a bare `matmul` + `topk` costs (benchmarks/bench_search.py).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch

from ..settings import Runtime
from .store import Library

__all__ = ["ExactIndex"]

_SCAN_CHUNK = 262_144     # rows scored at once from a float16 snapshot on the CPU (converted per chunk)
_UPLOAD_CHUNK = 262_144   # rows uploaded to the GPU at a time (256 MiB of float32 at D=512)


@dataclass(frozen=True)
class _Slots:
    """What a search needs from `Library.view()`, taken once per library version."""
    version: int
    generation: int
    base: torch.Tensor            # [S, D] the mapped snapshot
    tail: torch.Tensor            # [T, D] float32 rows added since
    ids: np.ndarray               # int64 [S + T] slot -> permanent row id
    live: int                     # live slots
    dead: torch.Tensor | None     # bool [S + T] on the scan device; None when every slot is live


class _Resident:
    """The library's rows on the GPU: the snapshot once per generation, the tail row by row."""

    def __init__(self, device: torch.device, dtype: torch.dtype):
        self.device, self.dtype = device, dtype
        self.generation = -1
        self.base: torch.Tensor | None = None
        self._tail = torch.empty(0, 0, device=device, dtype=dtype)
        self.rows = 0             # tail rows copied

    def sync(self, slots: _Slots) -> tuple[torch.Tensor, torch.Tensor]:
        if self.generation != slots.generation or self.base is None:
            self.base = None      # free the old generation's copy before the new one is made
            self.base = self._upload(slots.base)
            self._tail = torch.empty(64, slots.base.shape[1], device=self.device, dtype=self.dtype)
            self.generation, self.rows = slots.generation, 0
        t = slots.tail.shape[0]
        if t > self.rows:
            if t > self._tail.shape[0]:   # grow by doubling: an add copies only its own rows
                grown = torch.empty(max(2 * self._tail.shape[0], t), self._tail.shape[1],
                                    device=self.device, dtype=self.dtype)
                grown[:self.rows] = self._tail[:self.rows]
                self._tail = grown
            self._tail[self.rows:t] = slots.tail[self.rows:t].to(self.device)
            self.rows = t
        return self.base, self._tail[:t]

    def _upload(self, base: torch.Tensor) -> torch.Tensor:
        out = torch.empty(base.shape, device=self.device, dtype=self.dtype)
        for start in range(0, len(base), _UPLOAD_CHUNK):   # converted on the device, a chunk at a time
            out[start:start + _UPLOAD_CHUNK] = base[start:start + _UPLOAD_CHUNK].to(self.device)
        return out


class ExactIndex:
    """Exact cosine top-k over every live row of the library."""
    kind = "exact"

    def __init__(self, library: Library, runtime: Runtime):
        self.library, self.runtime = library, runtime
        # On a ZeroGPU Space CUDA exists only inside a model call (Runtime.zero_gpu): a search outside
        # one scans on the CPU in float32, never in the main process's stand-in CUDA (CPU fp16, slow)
        self._on_device = runtime.resident
        self._device = runtime.device if self._on_device else torch.device("cpu")
        self._lock = threading.Lock()
        self._slots: _Slots | None = None
        self._resident = _Resident(runtime.device, runtime.dtype) if self._on_device else None
        self._synced = (-1, 0)    # (generation, rows on the device): what the last search uploaded

    def __len__(self) -> int:
        return len(self.library)

    # the library is the index: adds and removals are seen at the next search
    def add(self, ids: torch.Tensor, vectors: torch.Tensor) -> None:
        pass

    def remove(self, ids: torch.Tensor) -> None:
        pass

    def save(self, path=None) -> None:
        pass

    @torch.inference_mode()
    def resident(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(snapshot rows [S, D], tail rows [T, D]) as a search scans them: the fp16 copies on the
        GPU, the mapped rows on the CPU (a benchmark's bare scan runs over the same memory)."""
        slots = self._current()
        if not self._on_device:
            return slots.base, slots.tail
        with self._lock:
            return self._resident.sync(slots)

    @torch.inference_mode()
    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """queries float32 [Q, D] -> (scores float32 [Q, k'], row ids int64 [Q, k']), best first."""
        slots = self._current()
        if slots.live == 0 or k <= 0:
            return torch.empty(queries.shape[0], 0), torch.empty(queries.shape[0], 0, dtype=torch.long)
        slots, scores = self._gpu_scores(queries, slots) if self._on_device else (slots, self._cpu_scores(queries, slots))
        if slots.dead is not None:
            scores.masked_fill_(slots.dead, float("-inf"))
        values, where = scores.topk(min(k, slots.live), dim=-1)
        where = where.cpu().numpy()
        return values.float().cpu(), torch.from_numpy(slots.ids[where])

    def _current(self) -> _Slots:
        """The slots of the library's current version (renewed only when it moved)."""
        version = self.library.version   # read first: a change during the renewal is seen next time
        slots = self._slots
        if slots is not None and slots.version == version:
            return slots
        with self._lock:
            if self._slots is None or self._slots.version < version:   # another thread may have a newer one
                view = self.library.view()
                alive = view.alive
                dead = None if alive.all() else torch.from_numpy(~alive).to(self._device)
                self._slots = _Slots(version, view.generation, view.base, view.tail, view.ids,
                                     int(alive.sum()), dead)
            return self._slots

    def _cpu_scores(self, queries: torch.Tensor, slots: _Slots) -> torch.Tensor:
        """[Q, S + T] float32 cosine scores of every slot."""
        q = queries.float()
        if slots.base.dtype == torch.float32:
            base_scores = q @ slots.base.T
        else:   # a float16 snapshot: CPU half matmul is slow, convert a chunk at a time
            base_scores = torch.cat([q @ slots.base[i:i + _SCAN_CHUNK].float().T
                                     for i in range(0, len(slots.base), _SCAN_CHUNK)] or [q.new_empty(len(q), 0)], 1)
        return torch.cat([base_scores, q @ slots.tail.T], dim=1) if len(slots.tail) else base_scores

    def _gpu_scores(self, queries: torch.Tensor, slots: _Slots) -> tuple[_Slots, torch.Tensor]:
        """(the slots scored, [Q, S + T] fp16 cosine scores) from the resident rows."""
        with self._lock:
            if slots.generation < self._resident.generation:   # another search already moved to a newer one
                slots = self._slots
            base, tail = self._resident.sync(slots)
            self._synced = (slots.generation, len(base) + len(tail))
        q = queries.to(base.device, base.dtype)
        scores = q @ base.T
        return slots, (torch.cat([scores, q @ tail.T], dim=1) if len(tail) else scores)

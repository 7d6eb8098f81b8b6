"""A library's rows in memory: the mapped snapshot of one generation, the rows added since, who is alive.

    rows = Rows(Columns.open(folder, gen, dim), dim, next_id)
    rows.add(sha, "images/ab/<sha>.jpg", meta, vector)      # -> the new row's permanent id
    rows.entry(rows.slot_of_sha(sha)), rows.vectors(rows.live_slots())

Slot s is snapshot row s for s < len(snapshot), else tail row s - len(snapshot); a removal
clears the slot's bit in the alive mask (O(1), nothing moves). Lookups by row id and by content
hash are bisections in the snapshot plus dicts over the tail. No disk I/O and no locking here:
core/library/store.py holds its lock around every call and decides what reaches the disk
(core/library/disk.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..errors import LibraryError, NotFoundError
from ..messages import Msg
from .columns import Columns, Row
from .journal import read_records

__all__ = ["Rows", "Entry", "NewImage", "View", "view_vectors", "empty_columns"]

_CHUNK = 65_536   # rows per vector chunk when a generation is written (bounded memory at 10M rows)


@dataclass(eq=False)
class NewImage:
    """An image ready to store: its bytes, hash, format extension, embedding and metadata."""
    data: bytes
    sha256: str
    ext: str                   # ".jpg", ".png", ... from the decoded format, never from the user's file name
    vector: torch.Tensor       # [D] float32, L2-normalised
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Entry:
    rowid: int                 # permanent row id (the index key; never reused)
    sha256: str
    path: Path                 # absolute path of the stored image
    meta: dict

    @property
    def id(self) -> str:
        """The short id people type (`library list`, the gallery): 12 hex digits of the sha."""
        return self.sha256[:12]

    @property
    def name(self) -> str:
        return self.meta.get("name") or self.path.name


@dataclass(frozen=True)
class View:
    """The rows as one consistent picture, for an exact scan: slot s is base row s for
    s < len(base), else tail row s - len(base). Dead slots (removed) have alive[s] False."""
    generation: int
    base: torch.Tensor         # [S, D] the mapped snapshot (float32 or float16)
    tail: torch.Tensor         # [T, D] float32 rows added since
    ids: np.ndarray            # int64 [S + T]
    alive: np.ndarray          # bool [S + T]


def view_vectors(view: View, slots: np.ndarray) -> torch.Tensor:
    """float32 [n, D] rows of a View by slot; valid after the library moved on (a view keeps its tensors)."""
    return _gather(view.base, view.tail, slots)


def _gather(base: torch.Tensor, tail: torch.Tensor, slots: np.ndarray) -> torch.Tensor:
    slots = np.asarray(slots, dtype=np.int64)
    out = torch.empty(len(slots), base.shape[1])
    in_base = slots < len(base)
    if in_base.any():
        out[torch.from_numpy(in_base)] = base[torch.from_numpy(slots[in_base])].float()
    if (~in_base).any():
        out[torch.from_numpy(~in_base)] = tail[torch.from_numpy(slots[~in_base] - len(base))]
    return out


def empty_columns(dim: int) -> Columns:
    """A snapshot of no rows (before the first generation is read)."""
    empty = np.empty(0, dtype=np.int64)
    return Columns(torch.empty(0, dim), empty, np.empty(0, dtype="S64"), empty, np.zeros(1, dtype=np.int64),
                   np.empty(0, dtype=np.uint64), empty, b"")


class Rows:
    """The snapshot columns of one generation plus the rows added since (the tail), an alive
    mask over both, and the next permanent id. `version` grows with every change."""

    def __init__(self, root: Path, cols: Columns, dim: int, next_id: int, version: int = 0):
        self.root, self.cols, self.dim = root, cols, dim
        self.next_id, self.version = next_id, version
        self._tail = torch.empty(64, dim)
        self._t = 0
        self._tail_ids: list[int] = []
        self._tail_sha: list[str] = []
        self._tail_meta: list[dict] = []
        self._tail_pos: dict[str, int] = {}      # sha -> tail index (latest)
        self._tail_of_id: dict[int, int] = {}    # row id -> tail index
        self._alive = np.ones(len(cols) + 64, dtype=bool)
        self.live = len(cols)                    # rows alive now
        self._live_cache = (-1, np.empty(0, dtype=np.int64))

    def __len__(self) -> int:
        return self.live

    # ------------------------------------------------------------ reading

    def entry(self, slot: int) -> Entry:
        base = len(self.cols)
        if slot < base:
            sha, meta, rowid = self.cols.sha_of(slot), self.cols.meta(slot), int(self.cols.ids[slot])
        else:
            t = slot - base
            sha, meta, rowid = self._tail_sha[t], self._tail_meta[t], self._tail_ids[t]
        meta = dict(meta)
        rel = meta.pop("file")
        return Entry(rowid, sha, self.root / rel, meta)

    def entries(self, offset: int = 0, limit: int | None = None) -> list[Entry]:
        """Live entries in id order (oldest first), `limit` of them from position `offset`."""
        slots = self.live_slots()
        stop = len(slots) if limit is None else min(len(slots), max(0, offset) + limit)
        return [self.entry(int(s)) for s in slots[max(0, offset):stop]]

    def find(self, id_prefix: str) -> Entry:
        """The live entry whose content hash starts with `id_prefix` (6 to 64 hex characters)."""
        key = id_prefix.strip().lower()
        if len(key) < 6 or len(key) > 64 or any(c not in "0123456789abcdef" for c in key):
            raise LibraryError(Msg("{id!r} 不是图片 ID：请使用 `library list` 显示的 12 位 ID",
                                   "{id!r} is not an image id: use the 12-character id shown by `library list`",
                                   id=id_prefix))
        hits = self.slots_with_prefix(key)
        if not hits:
            raise NotFoundError(Msg("没有 ID 为 {id} 的图片", "No image with id {id}", id=id_prefix))
        if len(hits) > 1:
            raise LibraryError(Msg("ID {id} 有歧义（匹配多张图片）", "Id {id} is ambiguous", id=id_prefix))
        return self.entry(hits[0])

    def vectors(self, slots: np.ndarray) -> torch.Tensor:
        """float32 [n, D] stored embeddings of these slots."""
        return _gather(self.cols.features, self._tail[:self._t], slots)

    def vectors_of(self, rowids: np.ndarray) -> torch.Tensor:
        """float32 [n, D] stored embeddings of these row ids (zeros for ids that never existed)."""
        slots = self.slots_of_ids(rowids)
        out = torch.zeros(len(slots), self.dim)
        good = slots >= 0
        if good.any():
            out[torch.from_numpy(good)] = self.vectors(slots[good])
        return out

    def new_mask(self, shas: list[str]) -> np.ndarray:
        """bool [n]: True for each sha not stored yet and not earlier in the list (dedupe by content)."""
        keep, seen = np.zeros(len(shas), dtype=bool), set()
        for i, sha in enumerate(shas):
            keep[i] = sha not in seen and self.slot_of_sha(sha) is None
            seen.add(sha)
        return keep

    def to_write(self, entries: list[Entry] | None = None) -> tuple[list[Row], Iterator[torch.Tensor]]:
        """What a new snapshot generation holds: the column rows (file paths relative to the library)
        of `entries` (default: every live row, with its vectors in chunks of bounded memory)."""
        slots = self.live_slots()
        rows = [Row(e.rowid, e.sha256, {"file": str(e.path.relative_to(self.root)), **e.meta})
                for e in (entries if entries is not None else (self.entry(int(s)) for s in slots))]
        return rows, (self.vectors(slots[i:i + _CHUNK]) for i in range(0, len(slots), _CHUNK))

    def finite(self) -> bool:
        """Whether every live row's embedding is finite (no NaN / inf from a damaged file)."""
        live = torch.from_numpy(self._alive[:len(self.cols)])
        return bool(torch.isfinite(self.cols.features[live].float()).all()) and \
            bool(torch.isfinite(self._tail[:self._t]).all())

    def view(self, generation: int) -> View:
        s = len(self.cols)
        return View(generation, self.cols.features, self._tail[:self._t],
                    np.concatenate([self.cols.ids, np.asarray(self._tail_ids, dtype=np.int64)]),
                    self._alive[:s + self._t].copy())

    def is_alive(self, slot: int) -> bool:
        return bool(self._alive[slot])

    def live_slots(self) -> np.ndarray:
        if self._live_cache[0] != self.version:
            self._live_cache = (self.version, np.flatnonzero(self._alive[:len(self.cols) + self._t]))
        return self._live_cache[1]

    def live_ids(self) -> np.ndarray:
        """int64 [N] ids of the live rows, ascending."""
        slots = self.live_slots()
        base = slots < len(self.cols)
        tail_ids = np.asarray(self._tail_ids, dtype=np.int64)
        return np.concatenate([self.cols.ids[slots[base]], tail_ids[slots[~base] - len(self.cols)]])

    def slot_of_id(self, rowid: int) -> int | None:
        slot = self.cols.row_of_id(rowid)
        if slot is not None:
            return slot
        t = self._tail_of_id.get(rowid)
        return None if t is None else len(self.cols) + t

    def slots_of_ids(self, rowids: np.ndarray) -> np.ndarray:
        """int64 [n] slot of each row id, -1 where there is none (vectorised: ANN re-rank and filters)."""
        ids = self.cols.ids
        pos = np.searchsorted(ids, rowids)
        safe = np.minimum(pos, max(len(ids) - 1, 0))
        found = (pos < len(ids)) & (ids[safe] == rowids) if len(ids) else np.zeros(len(rowids), dtype=bool)
        slots = np.where(found, pos, -1).astype(np.int64)
        for i in np.flatnonzero(~found):
            t = self._tail_of_id.get(int(rowids[i]))
            slots[i] = -1 if t is None else len(self.cols) + t
        return slots

    def alive_of(self, slots: np.ndarray) -> np.ndarray:
        """bool [n]: which of these slots (-1: none) hold a live row."""
        return (slots >= 0) & self._alive[np.maximum(slots, 0)]

    def slot_of_sha(self, sha: str) -> int | None:
        """The live slot holding this sha, or None."""
        t = self._tail_pos.get(sha)
        if t is not None and self._alive[len(self.cols) + t]:
            return len(self.cols) + t
        for s in self.cols.rows_with_prefix(sha):
            if self._alive[s] and self.cols.sha_of(s) == sha:
                return s
        return None

    def slots_with_prefix(self, prefix: str) -> list[int]:
        """Live slots whose sha starts with `prefix` (lower-case hex)."""
        hits = [s for s in self.cols.rows_with_prefix(prefix) if self._alive[s]]
        hits += [len(self.cols) + t for sha, t in self._tail_pos.items() if sha.startswith(prefix)]
        return [s for s in hits if self._alive[s]]

    def image_bytes(self) -> int:
        """Total size of the live rows' stored image files."""
        alive_base = self._alive[:len(self.cols)]
        return int(self.cols.sizes[alive_base].sum()) + sum(
            int(self._tail_meta[t].get("bytes", 0)) for t in range(self._t) if self._alive[len(self.cols) + t])

    # ------------------------------------------------------------ changing

    def add(self, sha: str, rel: str, meta: dict, vector: torch.Tensor, rowid: int | None = None) -> int:
        """Append a live row (the next id unless given); returns its id. Amortised O(1)."""
        rowid = self.next_id if rowid is None else int(rowid)
        self.next_id = max(self.next_id, rowid + 1)
        if self._t == self._tail.shape[0]:   # grow by doubling
            grown = torch.empty(2 * self._t, self.dim)
            grown[:self._t] = self._tail[:self._t]
            self._tail = grown
        slot = len(self.cols) + self._t
        if slot >= len(self._alive):
            self._alive = np.concatenate([self._alive, np.ones(len(self._alive), dtype=bool)])
        self._tail[self._t] = vector
        self._alive[slot] = True
        self._tail_ids.append(rowid)
        self._tail_sha.append(sha)
        self._tail_meta.append({"file": rel, **meta})
        self._tail_pos[sha] = self._t
        self._tail_of_id[rowid] = self._t
        self._t += 1
        self.live += 1
        self.version += 1
        return rowid

    def replay(self, data: bytes, start: int) -> tuple[int, int, list[str], list[Entry]]:
        """Apply the journal records in data[start:] (add = if absent, remove = if present: replay is
        idempotent); stops at a torn tail. Returns (end offset, records read, the added rows' relative
        paths, the removed rows' entries in order)."""
        end, count, added, removed = start, 0, [], []
        for end, head, vec in read_records(data, start):
            count += 1
            if head["op"] == "add" and self.slot_of_sha(head["sha"]) is None:
                self.add(head["sha"], head["file"], head["meta"], torch.frombuffer(bytearray(vec), dtype=torch.float32),
                         head.get("id"))
                added.append(head["file"])
            elif head["op"] == "remove" and self.slot_of_sha(head["sha"]) is not None:
                removed.append(self.remove(head["sha"]))
        return end, count, added, removed

    def remove(self, sha: str) -> Entry:
        """Mark the live row holding `sha` dead; returns its entry (files are the caller's)."""
        slot = self.slot_of_sha(sha)
        entry = self.entry(slot)
        self._alive[slot] = False
        self.live -= 1
        self.version += 1
        return entry

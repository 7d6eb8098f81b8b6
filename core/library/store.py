"""The growing image library on disk: images, their embeddings, and a crash-safe journal.

A library directory holds:

    store.json                the manifest: format version, model, dim, generation, next id
    store/*.G.*               the snapshot of generation G as memory-mapped columns (core/library/columns.py)
    journal.log               adds/removes since the snapshot, appended and fsync'd per batch
    features_library.pth      the same library as one plain torch file, for people (format below)
    images/ab/<sha256>.<ext>  the stored images, named by content hash (never by user input)
    thumbs/ab/<sha256>.jpg    gallery thumbnails (derived data, rebuilt when missing)
    staging/                  images written but not yet acknowledged (cleared on open)
    .lock                     inter-process lock (fcntl), held only while writing

`torch.load("library/features_library.pth")` gives a dict (format_version 2):

    format_version  int                  2
    model_id        str                  the encoder that made the features, e.g. "ViT-B/32"
    dim             int                  D
    features        float32 [N, D]       L2-normalised; row i belongs to files[i]
    files           list[str] (N)        image paths relative to the library directory
    sha256          list[str] (N)        content hash of each stored image (dedupe key)
    ids             int64 [N]            permanent row ids (never reused; the index keys)
    meta            list[dict] (N)       {"name": original file name (display only), "added": unix time,
                                          "width", "height", "bytes", optional "caption_en", "caption_zh",
                                          optional "ref": the original path of an image stored by
                                          reference (its files[i] is then "../..", relative too)}
    generation      int                  compactions so far
    created         float                unix time the library was created

The program itself never reads that file: it opens store.json + the mapped columns (O(1)
in the number of images) and replays journal.log. `flush()` compacts and rewrites
features_library.pth so it holds every image; the CLI calls it after `index`, the app
after upload batches (throttled) and on shutdown.

Rows have permanent ids. A removal appends a journal record and clears the row's bit in
an alive mask: O(1), nothing moves; compaction sweeps the dead rows and keeps the ids.

Journal records are [u32 length][u32 crc32][payload], the payload a JSON header, a NUL,
then the float32 vector for adds. A torn or corrupt tail (a crash mid-write) fails its
length or CRC check and is dropped: it was never acknowledged.

Crash safety: an add writes the image into staging/ (fsync), appends its record to the
journal (fsync: this is the acknowledgement), then renames the image into images/.
Recovery on open finishes those renames and deletes unacknowledged staging files, so no
row lacks its image and no image lacks its row. Compaction writes the new generation's
columns, then store.json (write-then-rename: the switch), then a new empty journal; a
journal older than store.json is recognised by its generation and ignored. Replay is
idempotent (add = if absent, remove = if present).

Versions: 1 = one torch pickle (features_library.pth) as the snapshot, read on every open;
2 = this layout. `_rebuild_from_pth` upgrades a version-1 library in place on first open.
"""
from __future__ import annotations

import errno
import fcntl
import itertools
import json
import os
import pickle
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from ..errors import LibraryError, ModelMismatchError, NotFoundError
from ..messages import Msg
from .columns import Columns, Row, remove_generation, write_columns
from .journal import JOURNAL_HEADER, JOURNAL_MAGIC, encode_record, fsync_dir, read_records, write_atomic
from .thumbs import thumb_path

__all__ = ["Library", "Entry", "NewImage", "View", "view_vectors", "FORMAT_VERSION", "SNAPSHOT_NAME", "MANIFEST_NAME", "JOURNAL_NAME"]

FORMAT_VERSION = 2
SNAPSHOT_NAME = "features_library.pth"
MANIFEST_NAME = "store.json"
JOURNAL_NAME = "journal.log"
STORE_DIR = "store"
COMPACT_MIN_RECORDS = 20_000               # compact when the journal holds more records than this ...
COMPACT_FRACTION = 0.5                     # ... and more than this fraction of N: amortised O(1) per add


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


class Library:
    """The in-memory view of a library directory, kept in step with the disk.

    Thread-safe (one lock for state) and process-safe (an fcntl lock around every write;
    other processes' appends are picked up by `refresh()`, which search calls first).
    """

    def __init__(self, root: str | os.PathLike, model_id: str, dim: int, dtype: str | None = None):
        """dtype: "float32" | "float16" for the snapshot's features from the next compaction on
        (float16 halves disk and page cache; None keeps what the library has, float32 for a new one)."""
        self.root = Path(root)
        self.model_id, self.dim = model_id, dim
        if dtype not in (None, "float32", "float16"):
            raise LibraryError(Msg("特征数据类型 {dtype!r} 无效：应为 float32 或 float16",
                                   "Feature dtype {dtype!r}: expected float32 or float16", dtype=dtype))
        self._want_dtype = dtype
        self.dtype = dtype or "float32"
        self._lock = threading.RLock()
        self._cols: Columns | None = None
        self.version = 0            # bumped on every change (indexes sync on it)
        self._removed_log: list[int] = []   # row ids removed since this object opened (indexes mask them)
        self._flushed = (-1, -1)    # (generation, version) that features_library.pth holds
        for sub in ("images", "thumbs", "staging", STORE_DIR):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        with self._process_lock():
            if not (self.root / MANIFEST_NAME).exists():
                self._create_or_migrate_locked()
            self._load_locked(recover=True)

    # ------------------------------------------------------------------ reading

    def __len__(self) -> int:
        return self._live

    @property
    def features(self) -> torch.Tensor:
        """[N, D] float32 copy of the live rows in id order (O(N): for tests and exports)."""
        with self._lock:
            view = self.view()
            keep = torch.from_numpy(view.alive)
            return torch.cat([view.base.float(), view.tail])[keep]

    def view(self) -> View:
        with self._lock:
            s = len(self._cols)
            return View(self._generation, self._cols.features, self._tail[:self._t],
                        np.concatenate([self._cols.ids, np.asarray(self._tail_ids, dtype=np.int64)]),
                        self._alive[:s + self._t].copy())

    def entry(self, rowid: int) -> Entry:
        """The live entry with this permanent row id (KeyError when there is none)."""
        with self._lock:
            slot = self._slot_of_id(int(rowid))
            if slot is None or not self._alive[slot]:
                raise KeyError(f"no image with row id {rowid}")
            return self._entry(slot)

    def entries(self, offset: int = 0, limit: int | None = None) -> list[Entry]:
        """Live entries in id order (oldest first), `limit` of them from position `offset`."""
        with self._lock:
            slots = self._live_slots()
            stop = len(slots) if limit is None else min(len(slots), max(0, offset) + limit)
            return [self._entry(int(s)) for s in slots[max(0, offset):stop]]

    def contains(self, sha256: str) -> bool:
        with self._lock:
            return self._slot_of_sha(sha256) is not None

    def alive(self, rowids: np.ndarray) -> np.ndarray:
        """bool [n]: which of these row ids are live now."""
        with self._lock:
            slots = self._slots_of_ids(np.asarray(rowids, dtype=np.int64))
            return (slots >= 0) & self._alive[np.maximum(slots, 0)]

    def rows_after(self, rowid: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids int64 [n], vectors float32 [n, D]) of the live rows with id > rowid (index sync)."""
        with self._lock:
            view = self.view()
            slots = np.flatnonzero((view.ids > rowid) & view.alive)
            return torch.from_numpy(view.ids[slots].copy()), self._vectors(slots)

    @property
    def removal_count(self) -> int:
        return len(self._removed_log)

    def removed_since(self, position: int) -> tuple[np.ndarray, int]:
        """(row ids removed after `position` in the removal log, the new position)."""
        with self._lock:
            return np.asarray(self._removed_log[position:], dtype=np.int64), len(self._removed_log)

    def live_ids(self) -> np.ndarray:
        """int64 [N] ids of the live rows, ascending."""
        with self._lock:
            view = self.view()
            return view.ids[view.alive]

    def dead_ids_upto(self, rowid: int) -> np.ndarray:
        """Ids <= rowid that are not live (removed, or never used): what a saved index must drop."""
        return np.setdiff1d(np.arange(rowid + 1, dtype=np.int64), self.live_ids(), assume_unique=True)

    def vectors_of(self, rowids: np.ndarray) -> torch.Tensor:
        """float32 [n, D] stored embeddings of these row ids (zeros for ids that never existed)."""
        with self._lock:
            slots = self._slots_of_ids(np.asarray(rowids, dtype=np.int64))
            out = torch.zeros(len(slots), self.dim)
            good = slots >= 0
            if good.any():
                out[torch.from_numpy(good)] = self._vectors(slots[good])
            return out

    def find(self, id_prefix: str) -> Entry:
        """The entry whose content hash starts with `id_prefix` (at least 6 hex characters)."""
        key = id_prefix.strip().lower()
        if len(key) < 6 or len(key) > 64 or any(c not in "0123456789abcdef" for c in key):
            raise LibraryError(Msg("{id!r} 不是图片 ID：请使用 `library list` 显示的 12 位 ID",
                                   "{id!r} is not an image id: use the 12-character id shown by `library list`",
                                   id=id_prefix))
        with self._lock:
            hits = [s for s in self._cols.rows_with_prefix(key) if self._alive[s]]
            hits += [len(self._cols) + t for sha, t in self._tail_pos.items() if sha.startswith(key)]
            hits = [s for s in hits if self._alive[s]]
            if not hits:
                raise NotFoundError(Msg("没有 ID 为 {id} 的图片", "No image with id {id}", id=id_prefix))
            if len(hits) > 1:
                raise LibraryError(Msg("ID {id} 有歧义（匹配多张图片）", "Id {id} is ambiguous", id=id_prefix))
            return self._entry(hits[0])

    def vector(self, id_prefix: str) -> torch.Tensor:
        """[D] copy of the stored embedding of one image (found as by `find`)."""
        with self._lock:
            return self.vectors_of(np.array([self.find(id_prefix).rowid]))[0]

    def refresh(self) -> None:
        """Pick up what other processes appended or compacted since we last looked (cheap: a stat)."""
        path = self.root / JOURNAL_NAME
        try:
            st = path.stat()
        except FileNotFoundError:
            return
        with self._lock:
            if st.st_ino != self._journal_ino:
                self._load_locked(recover=False)  # compacted elsewhere: reload everything
            elif st.st_size > self._journal_pos:
                with open(path, "rb") as f:
                    head = f.read(JOURNAL_HEADER.size)
                    # an inode number can be reused by a later compaction's journal: the generation can't
                    if (os.fstat(f.fileno()).st_ino != self._journal_ino or len(head) < JOURNAL_HEADER.size
                            or JOURNAL_HEADER.unpack(head)[2] != self._generation):
                        self._load_locked(recover=False)
                        return
                    f.seek(self._journal_pos)
                    self._replay(f.read(), 0, base=self._journal_pos, recover=False)

    def stats(self) -> dict:
        with self._lock:
            alive_base = self._alive[:len(self._cols)]
            sizes = int(self._cols.sizes[alive_base].sum()) + sum(
                int(self._tail_meta[t].get("bytes", 0)) for t in range(self._t) if self._alive[len(self._cols) + t])
            store = sum(p.stat().st_size for p in (self.root / STORE_DIR).glob(f"*.{self._generation}.*"))
            journal = (self.root / JOURNAL_NAME).stat().st_size
            return {"images": self._live, "model_id": self.model_id, "dim": self.dim, "image_bytes": sizes,
                    "features_bytes": store + journal, "journal_records": self._journal_records,
                    "generation": self._generation, "path": str(self.root), "format_version": FORMAT_VERSION}

    def verify(self, deep: bool = False) -> dict:
        """Check that every row has its image file and every image file its row.
        deep=True also re-hashes every file. Returns lists of problems (empty lists = healthy)."""
        import hashlib
        self.refresh()
        with self._lock:
            rows = {e.path: e.sha256 for e in self.entries()}
            view = self.view()
            live = torch.from_numpy(view.alive[:len(view.base)])
            feats_ok = bool(torch.isfinite(view.base[live].float()).all()) and bool(torch.isfinite(view.tail).all())
        missing = sorted(str(p.relative_to(self.root)) for p in rows if not p.is_file())
        on_disk = {p for p in (self.root / "images").rglob("*") if p.is_file()}
        orphans = sorted(str(p.relative_to(self.root)) for p in on_disk - rows.keys())
        corrupt = []
        if deep:
            corrupt = sorted(str(p.relative_to(self.root)) for p, s in rows.items()
                             if p.is_file() and hashlib.sha256(p.read_bytes()).hexdigest() != s)
        return {"healthy": not (missing or orphans or corrupt) and feats_ok, "rows": len(rows), "missing_files": missing,
                "orphan_files": orphans, "hash_mismatch": corrupt, "features_finite": feats_ok}

    # ------------------------------------------------------------------ writing

    def add(self, images: list[NewImage]) -> list[bool]:
        """Store a batch: one journal append + fsync for all. Returns, per image, True if added,
        False if the same bytes were already stored (or appeared twice in the batch)."""
        for img in images:
            if tuple(img.vector.shape) != (self.dim,):
                raise LibraryError(Msg("形状为 {shape} 的嵌入与本图库不匹配（维度 {dim}）",
                                       "Embedding of shape {shape} does not fit this library (dim {dim})",
                                       shape=tuple(img.vector.shape), dim=self.dim))
        with self._lock, self._process_lock():
            self._catch_up_locked()
            fresh, seen = [], set()
            for img in images:
                if self._slot_of_sha(img.sha256) is None and img.sha256 not in seen:
                    fresh.append(img)
                    seen.add(img.sha256)
            if fresh:
                self._commit_adds(fresh)
            self._maybe_compact_locked()
            added = {id(img) for img in fresh}
            return [id(img) in added for img in images]

    def remove(self, sha256s: list[str]) -> int:
        """Remove images (their rows and files). Returns how many were present. O(1) per image."""
        with self._lock, self._process_lock():
            self._catch_up_locked()
            present = [s for s in dict.fromkeys(sha256s) if self._slot_of_sha(s) is not None]
            if present:
                self._append(b"".join(encode_record({"op": "remove", "sha": s}) for s in present), len(present))
                for s in present:
                    self._apply_remove(s, delete_files=True)
            return len(present)

    def compact(self) -> None:
        """Fold the journal into a new snapshot generation (atomic), start an empty journal, and
        rewrite features_library.pth."""
        with self._lock, self._process_lock():
            self.refresh()
            self._compact_locked()
            self._export_locked()

    def flush(self) -> bool:
        """Make features_library.pth hold every image: compact if the journal has records, then
        rewrite the file if it is stale. Returns True if anything was written. O(N): callers
        throttle it (the app in the background, the CLI once per command)."""
        with self._lock, self._process_lock():
            self.refresh()
            if self._journal_records:
                self._compact_locked()
            if self._flushed == (self._generation, self.version) and (self.root / SNAPSHOT_NAME).exists():
                return False
            self._export_locked()
            return True

    @property
    def stale(self) -> bool:
        """True when features_library.pth does not hold the current rows."""
        return self._flushed != (self._generation, self.version)

    def replace_all(self, model_id: str, features: torch.Tensor, sha256s: list[str]) -> None:
        """Swap in features from another model for the same rows (after re-encoding every image);
        sha256s names the image of each feature row, in order."""
        with self._lock, self._process_lock():
            self.refresh()
            entries = self.entries()
            if [e.sha256 for e in entries] != list(sha256s) or features.shape[0] != len(entries):
                raise LibraryError(Msg("重新索引期间图库发生了变化；请再运行一次",
                                       "The library changed while re-indexing; run it again"))
            old = self.model_id, self.dim
            self.model_id, self.dim = model_id, int(features.shape[1])
            try:
                self._write_generation_locked(entries, [features.float()], self._generation + 1)
            except BaseException:   # the disk still says the old model: so must this object
                self.model_id, self.dim = old
                self._reload_after_failure()
                raise

    def add_bulk(self, shas: list[str], files: list[str], metas: list[dict],
                 vectors: Callable[[np.ndarray], Iterable[torch.Tensor]]) -> np.ndarray:
        """Add many rows in one step with one compaction (merging embedding shards): one new
        snapshot generation, no journal record per image. files[i] is row i's image path
        relative to the library: images/ab/<sha>.<ext> already written by the caller, or a
        reference ("../photos/x.jpg", meta "ref") to a file that stays where it is.
        `vectors(keep)` yields the [n, D] float32 vectors of the kept rows, in order.
        Returns keep, bool [len(shas)]: True where added, False where the image was already
        stored (or came earlier in this call). Nothing is visible until store.json switches
        to the new generation; a crash before that leaves the library as it was, and copies
        written beforehand are orphan files until the merge is re-run (or `repair`)."""
        with self._lock, self._process_lock():
            self._catch_up_locked()
            keep, seen = np.zeros(len(shas), dtype=bool), set()
            for i, sha in enumerate(shas):
                keep[i] = sha not in seen and self._slot_of_sha(sha) is None
                seen.add(sha)
            if not keep.any():
                return keep
            slots, first = self._live_slots(), self._next_id
            new = [Entry(first + j, shas[i], self.root / files[i], metas[i]) for j, i in enumerate(np.flatnonzero(keep))]
            old = (self._vectors(slots[i:i + 65536]) for i in range(0, len(slots), 65536))
            self._next_id = first + len(new)
            try:
                self._write_generation_locked([self._entry(int(s)) for s in slots] + new,
                                              itertools.chain(old, vectors(keep)), self._generation + 1)
            except BaseException:
                self._reload_after_failure()
                raise
            return keep

    def _reload_after_failure(self) -> None:
        """After a failed bulk write: take the state back from disk (store.json decides)."""
        try:
            self._load_locked(recover=False)
        except (OSError, LibraryError):
            self._next_id = max(self._next_id, int(self._read_manifest().get("next_id", 0)))

    # ------------------------------------------------------------------ internals: state

    def _entry(self, slot: int) -> Entry:
        base = len(self._cols)
        if slot < base:
            sha, meta = self._cols.sha_of(slot), self._cols.meta(slot)
            rowid = int(self._cols.ids[slot])
        else:
            t = slot - base
            sha, meta, rowid = self._tail_sha[t], self._tail_meta[t], self._tail_ids[t]
        meta = dict(meta)
        rel = meta.pop("file")
        return Entry(rowid, sha, self.root / rel, meta)

    def _vectors(self, slots: np.ndarray) -> torch.Tensor:
        base = len(self._cols)
        out = torch.empty(len(slots), self.dim)
        slots = np.asarray(slots, dtype=np.int64)
        in_base = slots < base
        if in_base.any():
            out[torch.from_numpy(in_base)] = self._cols.features[torch.from_numpy(slots[in_base])].float()
        if (~in_base).any():
            out[torch.from_numpy(~in_base)] = self._tail[torch.from_numpy(slots[~in_base] - base)]
        return out

    def _slot_of_id(self, rowid: int) -> int | None:
        slot = self._cols.row_of_id(rowid)
        if slot is not None:
            return slot
        t = self._tail_of_id.get(rowid)
        return None if t is None else len(self._cols) + t

    def _slots_of_ids(self, rowids: np.ndarray) -> np.ndarray:
        """int64 [n] slot of each row id, -1 where there is none (vectorised: ANN re-rank and filters)."""
        ids = self._cols.ids
        pos = np.searchsorted(ids, rowids)
        safe = np.minimum(pos, max(len(ids) - 1, 0))
        found = (pos < len(ids)) & (ids[safe] == rowids) if len(ids) else np.zeros(len(rowids), dtype=bool)
        slots = np.where(found, pos, -1).astype(np.int64)
        for i in np.flatnonzero(~found):
            t = self._tail_of_id.get(int(rowids[i]))
            slots[i] = -1 if t is None else len(self._cols) + t
        return slots

    def _slot_of_sha(self, sha: str) -> int | None:
        """The live slot holding this sha, or None."""
        t = self._tail_pos.get(sha)
        if t is not None and self._alive[len(self._cols) + t]:
            return len(self._cols) + t
        for s in self._cols.rows_with_prefix(sha):
            if self._alive[s] and self._cols.sha_of(s) == sha:
                return s
        return None

    def _live_slots(self) -> np.ndarray:
        if self._live_cache[0] != self.version:
            self._live_cache = (self.version, np.flatnonzero(self._alive[:len(self._cols) + self._t]))
        return self._live_cache[1]

    def _reset_tail(self) -> None:
        self._tail = torch.empty(64, self.dim)
        self._t = 0
        self._tail_ids: list[int] = []
        self._tail_sha: list[str] = []
        self._tail_meta: list[dict] = []
        self._tail_pos: dict[str, int] = {}      # sha -> tail index (latest)
        self._tail_of_id: dict[int, int] = {}    # row id -> tail index
        self._alive = np.ones(len(self._cols) + 64, dtype=bool)
        self._live = len(self._cols)
        self._live_cache = (-1, np.empty(0, dtype=np.int64))

    def _apply_add(self, sha: str, rel: str, meta: dict, vector: torch.Tensor, rowid: int | None) -> None:
        rowid = self._next_id if rowid is None else int(rowid)
        self._next_id = max(self._next_id, rowid + 1)
        if self._t == self._tail.shape[0]:   # grow by doubling: amortised O(1) per add
            grown = torch.empty(2 * self._t, self.dim)
            grown[:self._t] = self._tail[:self._t]
            self._tail = grown
        slot = len(self._cols) + self._t
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
        self._live += 1
        self.version += 1

    def _apply_remove(self, sha: str, delete_files: bool) -> str:
        slot = self._slot_of_sha(sha)
        entry = self._entry(slot)
        rel = entry.path.relative_to(self.root)
        self._alive[slot] = False
        self._removed_log.append(entry.rowid)
        self._live -= 1
        self.version += 1
        if delete_files:
            self._delete_files(sha, str(rel), owned="ref" not in entry.meta)
        return str(rel)

    def _delete_files(self, sha: str, rel: str, owned: bool = True) -> None:
        if owned and str(rel).startswith("images/"):   # a reference (meta "ref") is the user's own file: kept
            (self.root / rel).unlink(missing_ok=True)
        thumb_path(self.root, sha).unlink(missing_ok=True)

    # ------------------------------------------------------------------ internals: disk

    @contextmanager
    def _process_lock(self):
        with open(self.root / ".lock", "a+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _read_manifest(self) -> dict:
        path = self.root / MANIFEST_NAME
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
            int(manifest["generation"]), manifest["model_id"], int(manifest["dim"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise LibraryError(Msg(
                "{path} 无法读取（{error}）；{images} 中的图片完好无损：把 {manifest}、{store}/ 和 {journal} 移到别处，"
                "然后运行 `python -m core library repair`，它会根据这些图片重新添加每一张。",
                "{path} is unreadable ({error}); the images in {images} are "
                "intact: move {manifest}, {store}/ and {journal} aside, then "
                "`python -m core library repair` re-adds every image from them.",
                path=str(path), error=type(e).__name__, images=str(self.root / "images"), manifest=MANIFEST_NAME,
                store=STORE_DIR, journal=JOURNAL_NAME)) from None
        if manifest.get("format_version") != FORMAT_VERSION:
            raise LibraryError(Msg("{path} 的格式版本是 {found}，本程序读取的是 {expected}。请使用更新版本的工作台。",
                                   "{path} has format version {found}; this program reads "
                                   "{expected}. Use a newer version of the workbench.",
                                   path=str(path), found=manifest.get("format_version"), expected=FORMAT_VERSION))
        return manifest

    def _load_locked(self, recover: bool) -> None:
        for attempt in range(3):   # without the process lock, a compaction elsewhere may swap generations
            try:
                return self._load_once(recover)
            except LibraryError:
                if recover or attempt == 2:
                    raise
                time.sleep(0.05)

    def _load_once(self, recover: bool) -> None:
        manifest = self._read_manifest()
        if manifest["model_id"] != self.model_id:
            raise ModelMismatchError(Msg(
                "图库 {root} 保存的是模型 {stored!r} 的特征，而不是 {model!r} 的；不同模型的嵌入绝不混用。"
                "请使用 --model {stored!r}、换一个 --library 文件夹，或运行 "
                "`python -m core library reindex --model {model}` 重新编码。",
                "Library {root} holds features of model {stored!r}, not {model!r}; "
                "embeddings of different models are never mixed. Use --model {stored!r}, another "
                "--library folder, or `python -m core library reindex --model {model}` to re-encode it.",
                root=str(self.root), stored=manifest["model_id"], model=self.model_id))
        gen = int(manifest["generation"])
        try:
            cols = Columns.open(self.root / STORE_DIR, gen, int(manifest["dim"]))
        except (OSError, ValueError) as e:
            raise LibraryError(Msg(
                "{folder} 中第 {gen} 代的快照列无法读取（{error}）；图片完好无损：把 {manifest}、{store}/ 和 {journal} "
                "移到别处，然后运行 `python -m core library repair` 重新添加每一张图片。",
                "The snapshot columns of generation {gen} in {folder} are unreadable "
                "({error}); the images are intact: move {manifest}, {store}/ and {journal} "
                "aside, then `python -m core library repair` re-adds every image.",
                gen=gen, folder=str(self.root / STORE_DIR), error=str(e), manifest=MANIFEST_NAME, store=STORE_DIR,
                journal=JOURNAL_NAME)) from None
        before = self.live_ids() if self._cols is not None and not recover else None
        if self._cols is not None:
            self._cols.close()
        self._cols, self._generation = cols, gen
        self.dim = int(manifest["dim"])
        self.dtype = self._want_dtype or manifest.get("dtype", "float32")
        self._created, self._next_id = float(manifest["created"]), int(manifest["next_id"])
        self._reset_tail()
        self.version += 1
        self._journal_records = 0
        self._open_journal(recover)
        if before is not None:   # reloaded after another process compacted: log what it removed
            self._removed_log.extend(np.setdiff1d(before, self.live_ids()).tolist())

    def _open_journal(self, recover: bool) -> None:
        path = self.root / JOURNAL_NAME
        data, ino = _read_with_inode(path)   # one open: the bytes and the inode must be the same file's
        header_ok = len(data) >= JOURNAL_HEADER.size and data[:4] == JOURNAL_MAGIC
        gen = JOURNAL_HEADER.unpack_from(data)[2] if header_ok else -1
        if data and not header_ok:
            raise LibraryError(Msg(
                "{path} 已损坏（文件头无法读取）。把它移到别处后重新打开图库：会恢复到上次压缩时的状态，"
                "再用 `library repair` 重新添加之后的图片。",
                "{path} is damaged (its header is unreadable). Move it aside and open the library "
                "again: you get the state of the last compaction, and `library repair` re-adds the newer images.",
                path=str(path)))
        if gen != self._generation:
            if not recover:   # another process is between its manifest and journal renames
                self._journal_ino, self._journal_pos = -1, 0
                return
            if gen > self._generation:
                raise LibraryError(Msg("{path} 比 {manifest} 更新；存储是不是被手动替换过？",
                                       "{path} is newer than {manifest}; was the store replaced by hand?",
                                       path=str(path), manifest=MANIFEST_NAME))
            self._new_journal_locked()  # stale (crash mid-compaction) or missing: its records are in the snapshot
            data, ino = _read_with_inode(path)
        self._journal_ino = ino
        end = self._replay(data, JOURNAL_HEADER.size, base=0, recover=recover)
        if recover and end < len(data):
            with open(path, "r+b") as f:   # drop the torn tail so the next append starts clean
                f.truncate(end)
                os.fsync(f.fileno())
        if recover:
            self._clear_staging()

    def _replay(self, data: bytes, start: int, base: int, recover: bool) -> int:
        end, removed = start, {}
        for end, head, vec in read_records(data, start):
            self._journal_records += 1
            if head["op"] == "add" and self._slot_of_sha(head["sha"]) is None:
                vector = torch.frombuffer(bytearray(vec), dtype=torch.float32)
                self._apply_add(head["sha"], head["file"], head["meta"], vector, head.get("id"))
                if recover:
                    self._finish_move(head["file"])
            elif head["op"] == "remove" and self._slot_of_sha(head["sha"]) is not None:
                removed[head["sha"]] = self._apply_remove(head["sha"], delete_files=False)
        self._journal_pos = base + end
        if recover:   # only now: a later record may add the same image again (add, remove, add)
            for sha, rel in removed.items():
                if self._slot_of_sha(sha) is None:
                    self._delete_files(sha, rel)
        return end

    def _commit_adds(self, fresh: list[NewImage]) -> None:
        records, staged_files = [], []
        try:
            for i, img in enumerate(fresh):
                rel = f"images/{img.sha256[:2]}/{img.sha256}{img.ext}"
                staged = self.root / "staging" / Path(rel).name
                staged_files.append(staged)
                with open(staged, "wb") as f:
                    f.write(img.data)
                    f.flush()
                    os.fsync(f.fileno())
                head = {"op": "add", "sha": img.sha256, "id": self._next_id + i, "file": rel, "meta": img.meta}
                records.append((img, rel, head["id"], encode_record(head, img.vector)))
            fsync_dir(self.root / "staging")
            self._append(b"".join(r[3] for r in records), len(records))   # the acknowledgement point
        except OSError as e:   # e.g. the disk is full: nothing of this batch was acknowledged, none of it stays
            for staged in staged_files:
                staged.unlink(missing_ok=True)
            raise _disk_error(e, Msg("正在存储 {n} 张新图片，均未添加", "storing {n} new image(s); none of them was added",
                                     n=len(fresh))) from None
        for img, rel, rowid, _ in records:
            self._apply_add(img.sha256, rel, img.meta, img.vector, rowid)
            try:
                self._finish_move(rel)
            except OSError:   # acknowledged: the image waits in staging/ and the next open moves it
                pass

    def _append(self, blob: bytes, records: int) -> None:
        with open(self.root / JOURNAL_NAME, "ab") as f:
            try:
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())
            except OSError:   # e.g. disk full mid-write: take the partial record back out
                f.truncate(self._journal_pos)
                raise
            self._journal_pos = f.tell()
        self._journal_records += records

    def _catch_up_locked(self) -> None:
        """Before writing (process lock held): replay others' records, then cut any torn tail a
        writer left when it died; appending after that garbage would hide our records."""
        self.refresh()
        path = self.root / JOURNAL_NAME
        if path.stat().st_size > self._journal_pos:
            with open(path, "r+b") as f:
                f.truncate(self._journal_pos)
                os.fsync(f.fileno())

    def _finish_move(self, rel: str) -> None:
        target = self.root / rel
        staged = self.root / "staging" / target.name
        if staged.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, target)
            fsync_dir(target.parent)

    def _clear_staging(self) -> None:
        for p in (self.root / "staging").iterdir():
            slot = self._slot_of_sha(p.stem)
            if slot is not None and self._alive[slot]:   # acknowledged, its move failed (e.g. disk full)
                self._finish_move(str(self._entry(slot).path.relative_to(self.root)))
            else:
                p.unlink(missing_ok=True)   # written but never acknowledged

    def _maybe_compact_locked(self) -> None:
        if self._journal_records > max(COMPACT_MIN_RECORDS, COMPACT_FRACTION * self._live):
            try:
                self._compact_locked()
            except LibraryError:   # e.g. disk full: the add before it is acknowledged; compact later
                pass

    def _compact_locked(self) -> None:
        self._write_generation_locked(None, None, self._generation + 1)

    def _write_generation_locked(self, entries: list[Entry] | None, vectors: list[torch.Tensor] | None,
                                 gen: int) -> None:
        """Write the live rows (or `entries` with `vectors`) as generation `gen`, switch to it."""
        slots = self._live_slots()
        rows = [Row(e.rowid, e.sha256, {"file": str(e.path.relative_to(self.root)), **e.meta})
                for e in (entries if entries is not None else (self._entry(int(s)) for s in slots))]
        if vectors is None:
            vectors = (self._vectors(slots[i:i + 65536]) for i in range(0, len(slots), 65536))
        old = self._generation
        try:
            write_columns(self.root / STORE_DIR, gen, rows, vectors, self.dim, self.dtype)
            self._write_manifest(gen)          # the switch
        except OSError as e:   # e.g. the disk is full: unless store.json already names gen, nothing changed
            if int(self._read_manifest()["generation"]) != gen:
                remove_generation(self.root / STORE_DIR, gen)
                raise _disk_error(e, Msg("正在压缩图库，图库保持不变", "compacting the library; it is unchanged")) from None
        self._generation = gen
        try:
            self._new_journal_locked()
        except OSError:   # the old journal's records are all in generation gen: empty it in place (no new space)
            with open(self.root / JOURNAL_NAME, "r+b") as f:
                f.truncate(JOURNAL_HEADER.size)
                f.seek(0)
                f.write(JOURNAL_HEADER.pack(JOURNAL_MAGIC, FORMAT_VERSION, gen))
                f.flush()
                os.fsync(f.fileno())
        self._load_locked(recover=False)
        remove_generation(self.root / STORE_DIR, old)

    def _write_manifest(self, gen: int) -> None:
        manifest = {"format_version": FORMAT_VERSION, "model_id": self.model_id, "dim": self.dim, "dtype": self.dtype,
                    "generation": gen, "created": self._created, "next_id": self._next_id}
        write_atomic(self.root / MANIFEST_NAME, lambda f: f.write(json.dumps(manifest, indent=1).encode()))

    def _new_journal_locked(self) -> None:
        header = JOURNAL_HEADER.pack(JOURNAL_MAGIC, FORMAT_VERSION, self._generation)
        write_atomic(self.root / JOURNAL_NAME, lambda f: f.write(header))

    def _export_locked(self) -> None:
        entries = self.entries()
        snap = {"format_version": FORMAT_VERSION, "model_id": self.model_id, "dim": self.dim,
                "features": self.features.contiguous(), "files": [str(e.path.relative_to(self.root)) for e in entries],
                "sha256": [e.sha256 for e in entries], "ids": torch.tensor([e.rowid for e in entries], dtype=torch.int64),
                "meta": [e.meta for e in entries], "generation": self._generation, "created": self._created}
        try:
            write_atomic(self.root / SNAPSHOT_NAME, lambda f: torch.save(snap, f))
        except OSError as e:
            raise _disk_error(e, Msg("正在重写 {file}，图库本身完好", "rewriting {file}; the library itself is intact",
                                     file=SNAPSHOT_NAME)) from None
        self._flushed = (self._generation, self.version)

    def _create_or_migrate_locked(self) -> None:
        """No store.json yet: migrate a version-1 library (or rebuild from a version-2
        features_library.pth, e.g. after store.json was lost), or create an empty one."""
        snapshot = self.root / SNAPSHOT_NAME
        self._cols, self._generation, self._created, self._next_id = _empty_columns(self.dim), 0, time.time(), 0
        self._reset_tail()
        if snapshot.exists():
            self._rebuild_from_pth(snapshot)
        else:
            write_columns(self.root / STORE_DIR, 0, [], iter(()), self.dim, self.dtype)
            self._write_manifest(0)
            self._new_journal_locked()
        self._load_locked(recover=True)
        self._export_locked()

    def _rebuild_from_pth(self, snapshot: Path) -> None:
        """Version 1 -> 2 (or a lost store.json): read the pickle and replay its journal (records
        without ids get the next ids in order), then write generation g+1 in columns. The old
        journal and snapshot stay valid until store.json lands, so a crash mid-way starts again."""
        try:
            snap = torch.load(snapshot, map_location="cpu", weights_only=True)
        except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as e:
            raise LibraryError(Msg(
                "{path} 无法读取（{error}）；{images} 中的图片完好无损：把 {snapshot} 和 {journal} 移到别处，"
                "然后运行 `python -m core library repair`，它会根据这些图片重新添加每一张。",
                "{path} is unreadable ({error}); the images in {images} "
                "are intact: move {snapshot} and {journal} aside, then "
                "`python -m core library repair` re-adds every image from them.",
                path=str(snapshot), error=type(e).__name__, images=str(self.root / "images"), snapshot=SNAPSHOT_NAME,
                journal=JOURNAL_NAME)) from None
        if snap.get("format_version") not in (1, FORMAT_VERSION):
            raise LibraryError(Msg("{path} 的格式版本是 {found}，本程序读取的是 1 和 {expected}。请使用更新版本的工作台。",
                                   "{path} has format version {found}; this program reads "
                                   "1 and {expected}. Use a newer version of the workbench.",
                                   path=str(snapshot), found=snap.get("format_version"), expected=FORMAT_VERSION))
        if snap["model_id"] != self.model_id:
            raise ModelMismatchError(Msg(
                "图库 {root} 保存的是模型 {stored!r} 的特征，而不是 {model!r} 的；不同模型的嵌入绝不混用。",
                "Library {root} holds features of model {stored!r}, not {model!r}; "
                "embeddings of different models are never mixed.",
                root=str(self.root), stored=snap["model_id"], model=self.model_id))
        self._generation, self._created = int(snap["generation"]), float(snap["created"])
        ids = snap["ids"].tolist() if "ids" in snap else [None] * len(snap["files"])
        for i, (rel, sha, meta, rowid) in enumerate(zip(snap["files"], snap["sha256"], snap["meta"], ids)):
            self._apply_add(sha, rel, meta, snap["features"][i].float(), rowid)
        self._journal_records = 0
        self._open_journal(recover=True)
        self._write_generation_locked(None, None, self._generation + 1)


def _disk_error(e: OSError, doing: Msg) -> LibraryError:
    """A write that failed (most often ENOSPC: the disk is full) as a message that says what to do."""
    full = e.errno in (errno.ENOSPC, errno.EDQUOT)
    why = Msg("磁盘已满", "the disk is full") if full else (e.strerror or str(e))
    return LibraryError(Msg("无法写入图库（{doing}）：{why}。请释放一些磁盘空间（或请教师删除图片），然后重试。",
                            "Could not write to the library while {doing}: {why}. Free some disk space "
                            "(or ask the teacher to delete images), then try again.", doing=doing, why=why))


def _read_with_inode(path: Path) -> tuple[bytes, int]:
    """(contents, inode) of one opened file; (b"", -1) when there is none."""
    try:
        with open(path, "rb") as f:
            return f.read(), os.fstat(f.fileno()).st_ino
    except FileNotFoundError:
        return b"", -1


def view_vectors(view: View, slots: np.ndarray) -> torch.Tensor:
    """float32 [n, D] rows of a View by slot; valid after the library moved on (a view keeps its tensors)."""
    slots = np.asarray(slots, dtype=np.int64)
    base = len(view.base)
    out = torch.empty(len(slots), view.base.shape[1] if base else view.tail.shape[1])
    in_base = slots < base
    if in_base.any():
        out[torch.from_numpy(in_base)] = view.base[torch.from_numpy(slots[in_base])].float()
    if (~in_base).any():
        out[torch.from_numpy(~in_base)] = view.tail[torch.from_numpy(slots[~in_base] - base)]
    return out


def _empty_columns(dim: int) -> Columns:
    empty = np.empty(0, dtype=np.int64)
    return Columns(torch.empty(0, dim), empty, np.empty(0, dtype="S64"), empty, np.zeros(1, dtype=np.int64),
                   np.empty(0, dtype=np.uint64), empty, b"")

"""The growing image library: one object over a library directory, safe for threads and processes.

    lib = Library("library", "ViT-B/32", 512)
    lib.add([NewImage(data, sha, ".jpg", vector, {"name": "cat.jpg"})])   # one journal append + fsync
    lib.find("3f2a9c0e11d4"), lib.entries(0, 48), lib.remove([sha]), lib.flush()

Three modules, one concern each: core/library/disk.py is the on-disk format (its docstring
documents the files, features_library.pth, the crash protocol and the versions) and each
file step; core/library/rows.py is the rows in memory; this module decides which step runs
when, under one lock for the threads of this process and an fcntl lock on `.lock` for the
other processes (held only while writing). Other processes' appends are picked up by
`refresh()`, which search calls first.
"""
from __future__ import annotations

import fcntl
import itertools
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from ..errors import LibraryError
from ..messages import Msg
from . import disk
from .columns import Row, remove_generation
from .disk import FORMAT_VERSION, JOURNAL_NAME, MANIFEST_NAME, SNAPSHOT_NAME, STORE_DIR
from .journal import JOURNAL_HEADER, JournalFile, encode_record
from .rows import Entry, NewImage, Rows, View, view_vectors

__all__ = ["Library", "Entry", "NewImage", "View", "FORMAT_VERSION", "SNAPSHOT_NAME", "MANIFEST_NAME", "JOURNAL_NAME"]

COMPACT_MIN_RECORDS = 20_000               # compact when the journal holds more records than this ...
COMPACT_FRACTION = 0.5                     # ... and more than this fraction of N: amortised O(1) per add


class Library:
    """The in-memory view of a library directory, kept in step with the disk (see the module docstring)."""

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
        self._rows: Rows | None = None
        self._removed_log: list[int] = []   # row ids removed since this object opened (indexes mask them)
        self._flushed = (-1, -1)    # (generation, version) that features_library.pth holds
        self._journal = JournalFile(self.root / JOURNAL_NAME, FORMAT_VERSION)
        for sub in disk.SUBDIRS:
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        with self._process_lock():
            if not (self.root / MANIFEST_NAME).exists():
                self._create_or_migrate_locked()
            self._load_locked(recover=True)

    # ------------------------------------------------------------------ reading

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def version(self) -> int:
        """Bumped on every change (indexes and caches sync on it)."""
        return self._rows.version

    @property
    def features(self) -> torch.Tensor:
        """[N, D] float32 copy of the live rows in id order (O(N): for tests and exports)."""
        with self._lock:
            return self._rows.vectors(self._rows.live_slots())

    def view(self) -> View:
        with self._lock:
            return self._rows.view(self._generation)

    def entry(self, rowid: int) -> Entry:
        """The live entry with this permanent row id (KeyError when there is none)."""
        with self._lock:
            slot = self._rows.slot_of_id(int(rowid))
            if slot is None or not self._rows.is_alive(slot):
                raise KeyError(f"no image with row id {rowid}")
            return self._rows.entry(slot)

    def entries(self, offset: int = 0, limit: int | None = None) -> list[Entry]:
        """Live entries in id order (oldest first), `limit` of them from position `offset`."""
        with self._lock:
            return self._rows.entries(offset, limit)

    def contains(self, sha256: str) -> bool:
        with self._lock:
            return self._rows.slot_of_sha(sha256) is not None

    def image_bytes(self) -> int:
        """Bytes of the stored image files, fresh (other processes' adds included)."""
        self.refresh()
        with self._lock:
            return self._rows.image_bytes()

    def alive(self, rowids: np.ndarray) -> np.ndarray:
        """bool [n]: which of these row ids are live now."""
        with self._lock:
            return self._rows.alive_of(self._rows.slots_of_ids(np.asarray(rowids, dtype=np.int64)))

    def rows_after(self, rowid: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids int64 [n], vectors float32 [n, D]) of the live rows with id > rowid (index sync)."""
        with self._lock:
            view = self.view()
            slots = np.flatnonzero((view.ids > rowid) & view.alive)
            return torch.from_numpy(view.ids[slots].copy()), view_vectors(view, slots)

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
            return self._rows.live_ids()

    def dead_ids_upto(self, rowid: int) -> np.ndarray:
        """Ids <= rowid that are not live (removed, or never used): what a saved index must drop."""
        return np.setdiff1d(np.arange(rowid + 1, dtype=np.int64), self.live_ids(), assume_unique=True)

    def vectors_of(self, rowids: np.ndarray) -> torch.Tensor:
        """float32 [n, D] stored embeddings of these row ids (zeros for ids that never existed)."""
        with self._lock:
            return self._rows.vectors_of(np.asarray(rowids, dtype=np.int64))

    def find(self, id_prefix: str) -> Entry:
        """The entry whose content hash starts with `id_prefix` (at least 6 hex characters); LibraryError
        for a malformed or ambiguous id, NotFoundError when no image has it."""
        with self._lock:
            return self._rows.find(id_prefix)

    def vector(self, id_prefix: str) -> torch.Tensor:
        """[D] copy of the stored embedding of one image (found as by `find`)."""
        with self._lock:
            return self.vectors_of(np.array([self.find(id_prefix).rowid]))[0]

    def refresh(self) -> None:
        """Pick up what other processes appended or compacted since we last looked (cheap: a stat)."""
        with self._lock:
            new = self._journal.appended_since(self._generation)
            if new is None:
                self._load_locked(recover=False)  # compacted elsewhere: reload everything
            elif new:
                self._replay(new, 0, base=self._journal.pos, recover=False)

    def stats(self) -> dict:
        with self._lock:
            return {"images": len(self._rows), "model_id": self.model_id, "dim": self.dim,
                    "image_bytes": self._rows.image_bytes(), "features_bytes": disk.features_bytes(self.root, self._generation),
                    "journal_records": self._journal.records, "generation": self._generation,
                    "path": str(self.root), "format_version": FORMAT_VERSION}

    def verify(self, deep: bool = False) -> dict:
        """Check that every row has its image file and every image file its row.
        deep=True also re-hashes every file. Returns lists of problems (empty lists = healthy)."""
        self.refresh()
        with self._lock:
            rows, finite = {e.path: e.sha256 for e in self.entries()}, self._rows.finite()
        return disk.verify(self.root, rows, finite, deep)

    # ------------------------------------------------------------------ writing

    def add(self, images: list[NewImage]) -> list[bool]:
        """Store a batch: one journal append + fsync for all. Returns, per image, True if added,
        False if the same bytes were already stored (or appeared twice in the batch): under the
        process lock this is the check that holds when two writers race, whatever was asked before."""
        for img in images:
            if tuple(img.vector.shape) != (self.dim,):
                raise LibraryError(Msg("形状为 {shape} 的嵌入与本图库不匹配（维度 {dim}）",
                                       "Embedding of shape {shape} does not fit this library (dim {dim})",
                                       shape=tuple(img.vector.shape), dim=self.dim))
        with self._lock, self._process_lock():
            self._catch_up_locked()
            fresh = [img for img, new in zip(images, self._rows.new_mask([i.sha256 for i in images])) if new]
            if fresh:
                self._commit_adds(fresh)
            self._maybe_compact_locked()
            added = {id(img) for img in fresh}
            return [id(img) in added for img in images]

    def remove(self, sha256s: list[str]) -> int:
        """Remove images (their rows and files). Returns how many were present. O(1) per image."""
        with self._lock, self._process_lock():
            self._catch_up_locked()
            present = [s for s in dict.fromkeys(sha256s) if self._rows.slot_of_sha(s) is not None]
            if present:
                self._journal.append(b"".join(encode_record({"op": "remove", "sha": s}) for s in present), len(present))
                for s in present:
                    self._remove_row(s)
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
            if self._journal.records:
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
                self._write_generation_locked(self._rows.to_write(entries)[0], [features.float()], self._generation + 1)
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
            keep = self._rows.new_mask(shas)
            if not keep.any():
                return keep
            first = self._rows.next_id
            new = [Entry(first + j, shas[i], self.root / files[i], metas[i]) for j, i in enumerate(np.flatnonzero(keep))]
            rows, old = self._rows.to_write()
            self._rows.next_id = first + len(new)
            try:
                self._write_generation_locked(rows + self._rows.to_write(new)[0], itertools.chain(old, vectors(keep)),
                                              self._generation + 1)
            except BaseException:
                self._reload_after_failure()
                raise
            return keep

    def _reload_after_failure(self) -> None:
        """After a failed bulk write: take the state back from disk (store.json decides)."""
        try:
            self._load_locked(recover=False)
        except (OSError, LibraryError):
            self._rows.next_id = max(self._rows.next_id, int(disk.read_manifest(self.root).get("next_id", 0)))

    # ------------------------------------------------------------------ internals

    @contextmanager
    def _process_lock(self):
        with open(self.root / ".lock", "a+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _remove_row(self, sha: str) -> None:
        entry = self._rows.remove(sha)
        self._removed_log.append(entry.rowid)
        disk.delete_image(self.root, sha, str(entry.path.relative_to(self.root)), owned="ref" not in entry.meta)

    def _load_locked(self, recover: bool) -> None:
        for attempt in range(3):   # without the process lock, a compaction elsewhere may swap generations
            try:
                return self._load_once(recover)
            except LibraryError:
                if recover or attempt == 2:
                    raise
                time.sleep(0.05)

    def _load_once(self, recover: bool) -> None:
        manifest = disk.read_manifest(self.root)
        disk.check_model(self.root, manifest["model_id"], self.model_id)
        gen, dim = int(manifest["generation"]), int(manifest["dim"])
        cols = disk.open_columns(self.root, gen, dim)
        old = self._rows
        before = old.live_ids() if old is not None and not recover else None
        if old is not None:
            old.cols.close()
        self._rows = Rows(self.root, cols, dim, int(manifest["next_id"]), version=(old.version if old else 0) + 1)
        self._generation, self.dim, self._created = gen, dim, float(manifest["created"])
        self.dtype = self._want_dtype or manifest.get("dtype", "float32")
        self._journal.records = 0
        self._open_journal(recover)
        if before is not None:   # reloaded after another process compacted: log what it removed
            self._removed_log.extend(np.setdiff1d(before, self.live_ids()).tolist())

    def _open_journal(self, recover: bool) -> None:
        data = disk.open_journal(self._journal, self._generation, recover)
        if data is None:   # another process is between its manifest and journal renames
            return
        end = self._replay(data, JOURNAL_HEADER.size, base=0, recover=recover)
        if recover:
            self._journal.cut(end)   # drop a torn tail so the next append starts clean
            disk.clear_staging(self.root, self._stored_rel)

    def _stored_rel(self, sha: str) -> str | None:
        slot = self._rows.slot_of_sha(sha)
        return None if slot is None else str(self._rows.entry(slot).path.relative_to(self.root))

    def _replay(self, data: bytes, start: int, base: int, recover: bool) -> int:
        end, count, added, removed = self._rows.replay(data, start)
        self._journal.records += count
        self._journal.pos = base + end
        self._removed_log.extend(e.rowid for e in removed)
        if recover:
            disk.recover_files(self.root, self._rows, added, removed)
        return end

    def _commit_adds(self, fresh: list[NewImage]) -> None:
        first = self._rows.next_id
        rels = disk.commit_adds(self.root, self._journal, fresh, first)   # acknowledged
        for i, (img, rel) in enumerate(zip(fresh, rels)):
            self._rows.add(img.sha256, rel, img.meta, img.vector, first + i)
            try:
                disk.finish_move(self.root, rel, sync=False)   # the staged copy is durable: see disk.finish_move
            except OSError:   # acknowledged: the image waits in staging/ and the next open moves it
                pass

    def _catch_up_locked(self) -> None:
        """Before writing (process lock held): replay others' records, then cut any torn tail a
        writer left when it died; appending after that garbage would hide our records."""
        self.refresh()
        self._journal.cut()

    def _maybe_compact_locked(self) -> None:
        if self._journal.records > max(COMPACT_MIN_RECORDS, COMPACT_FRACTION * len(self._rows)):
            try:
                self._compact_locked()
            except LibraryError:   # e.g. disk full: the add before it is acknowledged; compact later
                pass

    def _compact_locked(self) -> None:
        self._write_generation_locked(*self._rows.to_write(), self._generation + 1)

    def _write_generation_locked(self, rows: list[Row], vectors: Iterable[torch.Tensor], gen: int) -> None:
        """Write these column rows with their vectors as generation `gen`, switch to it."""
        old = self._generation
        disk.write_generation(self.root, gen, rows, vectors, self._manifest())   # the switch
        self._generation = gen
        try:
            self._journal.start(gen)
        except OSError:   # the old journal's records are all in generation gen: empty it in place (no new space)
            self._journal.empty_in_place(gen)
        self._load_locked(recover=False)
        remove_generation(self.root / STORE_DIR, old)

    def _manifest(self) -> dict:
        """store.json's fields besides the generation."""
        return {"model_id": self.model_id, "dim": self.dim, "dtype": self.dtype, "created": self._created,
                "next_id": self._rows.next_id}

    def _export_locked(self) -> None:
        disk.write_snapshot(self.root, self.entries(), self.features, {**self._manifest(), "generation": self._generation})
        self._flushed = (self._generation, self.version)

    def _create_or_migrate_locked(self) -> None:
        """No store.json yet: migrate a version-1 library (or rebuild from a version-2
        features_library.pth, e.g. after store.json was lost), or create an empty one."""
        if (self.root / SNAPSHOT_NAME).exists():
            disk.migrate_from_pth(self.root, self.model_id, self.dim, self.dtype, self._journal)
        else:
            disk.write_generation(self.root, 0, [], iter(()), {"model_id": self.model_id, "dim": self.dim,
                                                               "dtype": self.dtype, "created": time.time(), "next_id": 0})
            self._journal.start(0)
        self._load_locked(recover=True)
        self._export_locked()

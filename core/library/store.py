"""The growing image library on disk: images, their embeddings, and a crash-safe journal.

A library directory holds:

    features_library.pth      the snapshot (format below), rewritten only on compaction
    journal.log               adds/removes since the snapshot, appended and fsync'd per batch
    images/ab/<sha256>.<ext>  the stored images, named by content hash (never by user input)
    thumbs/ab/<sha256>.jpg    gallery thumbnails (derived data, rebuilt when missing)
    staging/                  images written but not yet acknowledged (cleared on open)
    .lock                     inter-process lock (fcntl), held only while writing

`torch.load("library/features_library.pth")` gives a dict (format_version 1):

    format_version  int                  1
    model_id        str                  the encoder that made the features, e.g. "ViT-B/32"
    dim             int                  D
    features        float32 [N, D]       L2-normalised; row i belongs to files[i]
    files           list[str] (N)        image paths relative to the library directory
    sha256          list[str] (N)        content hash of each stored image (dedupe key)
    meta            list[dict] (N)       {"name": original file name (display only), "added": unix time,
                                          "width", "height", "bytes", optional "caption_en", "caption_zh"}
    generation      int                  compactions so far; journal.log belongs to this generation
    created         float                unix time the library was created

The snapshot alone is the library as of its last compaction; `Library` replays
journal.log on open to get the current state. Journal records are
[u32 length][u32 crc32][payload], the payload a JSON header, a NUL, then the
float32 vector for adds. A torn or corrupt tail (a crash mid-write) fails its
length or CRC check and is dropped: it was never acknowledged.

Crash safety: an add writes the image into staging/ (fsync), appends its record
to the journal (fsync: this is the acknowledgement), then renames the image into
images/. Recovery on open finishes those renames and deletes unacknowledged
staging files, so no row lacks its image and no image lacks its row.
Compaction writes a new snapshot and then a new empty journal, each by
write-then-rename; a journal older than the snapshot is recognised by its
generation and ignored. Replay is idempotent (add = if absent, remove = if present).

Versions: 1 = this layout. A future version adds one migration step in `_migrate`.
"""
from __future__ import annotations

import fcntl
import os
import pickle
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import LibraryError, ModelMismatchError
from .thumbs import thumb_path
from .journal import (JOURNAL_HEADER, JOURNAL_MAGIC, encode_record, fsync_dir, read_records,
                      write_atomic)

__all__ = ["Library", "Entry", "NewImage", "FORMAT_VERSION", "SNAPSHOT_NAME"]

FORMAT_VERSION = 1
SNAPSHOT_NAME = "features_library.pth"
JOURNAL_NAME = "journal.log"
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
    row: int
    sha256: str
    path: Path                 # absolute path of the stored image
    meta: dict

    @property
    def id(self) -> str:
        return self.sha256[:12]

    @property
    def name(self) -> str:
        return self.meta.get("name") or self.path.name


class Library:
    """The in-memory view of a library directory, kept in step with the disk.

    Thread-safe (one lock for state) and process-safe (an fcntl lock around every write;
    other processes' appends are picked up by `refresh()`, which search calls first).
    """

    def __init__(self, root: str | os.PathLike, model_id: str, dim: int):
        self.root = Path(root)
        self.model_id, self.dim = model_id, dim
        self._lock = threading.RLock()
        self.epoch = 0              # bumped whenever rows are removed or reordered (views must rebuild)
        for sub in ("images", "thumbs", "staging"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        with self._process_lock():
            if not (self.root / SNAPSHOT_NAME).exists():
                self._write_snapshot_locked(torch.empty(0, dim), [], [], [], generation=0, created=time.time())
            self._load_locked(recover=True)

    # ------------------------------------------------------------------ reading

    def __len__(self) -> int:
        return self._n

    @property
    def features(self) -> torch.Tensor:
        """[N, D] float32 view of the current rows (do not modify)."""
        with self._lock:
            return self._buf[:self._n]

    def view(self) -> tuple[int, torch.Tensor]:
        """(epoch, features) read together: rows of that epoch keep their meaning until it changes."""
        with self._lock:
            return self.epoch, self._buf[:self._n]

    def entry(self, row: int) -> Entry:
        with self._lock:
            if not 0 <= row < self._n:
                raise IndexError(f"row {row} out of range for a library of {self._n} images")
            return Entry(row, self._sha[row], self.root / self._files[row], self._meta[row])

    def entries(self, offset: int = 0, limit: int | None = None) -> list[Entry]:
        with self._lock:
            stop = self._n if limit is None else min(self._n, offset + limit)
            return [self.entry(i) for i in range(max(0, offset), stop)]

    def contains(self, sha256: str) -> bool:
        with self._lock:
            return sha256 in self._row_of

    def find(self, id_prefix: str) -> Entry:
        """The entry whose content hash starts with `id_prefix` (at least 6 hex characters)."""
        key = id_prefix.strip().lower()
        if len(key) < 6 or any(c not in "0123456789abcdef" for c in key):
            raise LibraryError(f"{id_prefix!r} is not an image id: use the 12-character id shown by `library list`")
        with self._lock:
            if len(key) == 64:
                hits = [key] if key in self._row_of else []
            else:   # a linear scan, ~10 ms at 100k images; ids are typed by people, not in hot loops
                hits = [s for s in self._row_of if s.startswith(key)]
            if len(hits) != 1:
                raise LibraryError(f"No image with id {id_prefix}" if not hits else f"Id {id_prefix} is ambiguous")
            return self.entry(self._row_of[hits[0]])

    def vector(self, id_prefix: str) -> torch.Tensor:
        """[D] copy of the stored embedding of one image (found as by `find`)."""
        with self._lock:   # the row must still be this entry's when its vector is read
            return self._buf[self.find(id_prefix).row].clone()

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
                    f.seek(self._journal_pos)
                    self._replay(f.read(), 0, base=self._journal_pos, recover=False)

    def stats(self) -> dict:
        with self._lock:
            sizes = sum(int(m.get("bytes", 0)) for m in self._meta)
            snap = (self.root / SNAPSHOT_NAME).stat().st_size
            journal = (self.root / JOURNAL_NAME).stat().st_size
            return {"images": self._n, "model_id": self.model_id, "dim": self.dim, "image_bytes": sizes,
                    "features_bytes": snap + journal, "journal_records": self._journal_records,
                    "generation": self._generation, "path": str(self.root)}

    def verify(self, deep: bool = False) -> dict:
        """Check that every row has its image file and every image file its row.
        deep=True also re-hashes every file. Returns lists of problems (empty lists = healthy)."""
        import hashlib
        self.refresh()
        with self._lock:
            rows = {self.root / f: s for f, s in zip(self._files, self._sha)}
            n, feats_ok = self._n, bool(torch.isfinite(self._buf[:self._n]).all())
        missing = sorted(str(p.relative_to(self.root)) for p in rows if not p.is_file())
        on_disk = {p for p in (self.root / "images").rglob("*") if p.is_file()}
        orphans = sorted(str(p.relative_to(self.root)) for p in on_disk - rows.keys())
        corrupt = []
        if deep:
            corrupt = sorted(str(p.relative_to(self.root)) for p, s in rows.items()
                             if p.is_file() and hashlib.sha256(p.read_bytes()).hexdigest() != s)
        return {"healthy": not (missing or orphans or corrupt) and feats_ok, "rows": n, "missing_files": missing,
                "orphan_files": orphans, "hash_mismatch": corrupt, "features_finite": feats_ok}

    # ------------------------------------------------------------------ writing

    def add(self, images: list[NewImage]) -> list[bool]:
        """Store a batch: one journal append + fsync for all. Returns, per image, True if added,
        False if the same bytes were already stored (or appeared twice in the batch)."""
        for img in images:
            if tuple(img.vector.shape) != (self.dim,):
                raise LibraryError(f"Embedding of shape {tuple(img.vector.shape)} does not fit this library (dim {self.dim})")
        with self._lock, self._process_lock():
            self._catch_up_locked()
            fresh, seen = [], set()
            for img in images:
                if img.sha256 not in self._row_of and img.sha256 not in seen:
                    fresh.append(img)
                    seen.add(img.sha256)
            if fresh:
                self._commit_adds(fresh)
            self._maybe_compact_locked()
            added = {id(img) for img in fresh}
            return [id(img) in added for img in images]

    def remove(self, sha256s: list[str]) -> int:
        """Remove images (their rows and files). Returns how many were present."""
        with self._lock, self._process_lock():
            self._catch_up_locked()
            present = [s for s in dict.fromkeys(sha256s) if s in self._row_of]
            if present:
                self._append(b"".join(encode_record({"op": "remove", "sha": s}) for s in present), len(present))
                for s in present:
                    self._apply_remove(s, delete_files=True)
            return len(present)

    def compact(self) -> None:
        """Fold the journal into a new snapshot (atomic), then start an empty journal."""
        with self._lock, self._process_lock():
            self.refresh()
            self._compact_locked()

    def replace_all(self, model_id: str, features: torch.Tensor, sha256s: list[str]) -> None:
        """Swap in features from another model for the same rows (after re-encoding every image);
        sha256s names the image of each feature row, in order."""
        with self._lock, self._process_lock():
            self.refresh()
            if list(sha256s) != self._sha[:self._n] or features.shape[0] != self._n:
                raise LibraryError("The library changed while re-indexing; run it again")
            self.model_id, self.dim = model_id, int(features.shape[1])
            self._buf, self.epoch = features.float().clone(), self.epoch + 1
            self._compact_locked()

    # ------------------------------------------------------------------ internals

    @contextmanager
    def _process_lock(self):
        with open(self.root / ".lock", "a+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _load_locked(self, recover: bool) -> None:
        try:
            snap = torch.load(self.root / SNAPSHOT_NAME, map_location="cpu", weights_only=True)
        except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as e:
            raise LibraryError(f"{self.root / SNAPSHOT_NAME} is unreadable ({type(e).__name__}); the images in "
                               f"{self.root / 'images'} are intact: move {SNAPSHOT_NAME} and {JOURNAL_NAME} aside, "
                               "then `python -m core library repair` re-adds every image from them.") from None
        snap = _migrate(snap)
        if snap["model_id"] != self.model_id:
            raise ModelMismatchError(
                f"Library {self.root} holds features of model {snap['model_id']!r}, not {self.model_id!r}; "
                f"embeddings of different models are never mixed. Use --model {snap['model_id']!r}, another "
                f"--library folder, or `python -m core library reindex --model {self.model_id}` to re-encode it.")
        self._generation, self._created = int(snap["generation"]), float(snap["created"])
        self._files, self._sha, self._meta = list(snap["files"]), list(snap["sha256"]), list(snap["meta"])
        self._n = len(self._files)
        # headroom so the adds after an open append in place instead of copying the matrix at once
        self._buf = torch.empty(self._n + max(64, self._n // 4), self.dim)
        self._buf[:self._n] = snap["features"].float().reshape(self._n, self.dim)
        self._row_of = {s: i for i, s in enumerate(self._sha)}
        self.epoch += 1
        self._journal_records = 0
        self._open_journal(recover)

    def _open_journal(self, recover: bool) -> None:
        path = self.root / JOURNAL_NAME
        data = path.read_bytes() if path.exists() else b""
        header_ok = len(data) >= JOURNAL_HEADER.size and data[:4] == JOURNAL_MAGIC
        gen = JOURNAL_HEADER.unpack_from(data)[2] if header_ok else -1
        if data and not header_ok:
            raise LibraryError(f"{path} is damaged (its header is unreadable). Move it aside and open the library "
                               f"again: you get the state of {SNAPSHOT_NAME}, and `library repair` re-adds the newer images.")
        if gen != self._generation:
            if not recover:   # another process is between its snapshot and journal renames
                self._journal_ino, self._journal_pos = -1, 0
                return
            if gen > self._generation:
                raise LibraryError(f"{path} is newer than {SNAPSHOT_NAME}; the snapshot was replaced by hand?")
            self._new_journal_locked()  # stale (crash mid-compaction) or missing: its records are in the snapshot
            data = (self.root / JOURNAL_NAME).read_bytes()
        self._journal_ino = path.stat().st_ino
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
            if head["op"] == "add" and head["sha"] not in self._row_of:
                vector = torch.frombuffer(bytearray(vec), dtype=torch.float32)
                self._apply_add(head["sha"], head["file"], head["meta"], vector)
                if recover:
                    self._finish_move(head["file"])
            elif head["op"] == "remove" and head["sha"] in self._row_of:
                removed[head["sha"]] = self._apply_remove(head["sha"], delete_files=False)
        self._journal_pos = base + end
        if recover:   # only now: a later record may add the same image again (add, remove, add)
            for sha, rel in removed.items():
                if sha not in self._row_of:
                    self._delete_files(sha, rel)
        return end

    def _commit_adds(self, fresh: list[NewImage]) -> None:
        records = []
        for img in fresh:
            rel = f"images/{img.sha256[:2]}/{img.sha256}{img.ext}"
            staged = self.root / "staging" / Path(rel).name
            with open(staged, "wb") as f:
                f.write(img.data)
                f.flush()
                os.fsync(f.fileno())
            records.append((img, rel, encode_record({"op": "add", "sha": img.sha256, "file": rel, "meta": img.meta}, img.vector)))
        fsync_dir(self.root / "staging")
        self._append(b"".join(r[2] for r in records), len(records))   # the acknowledgement point
        for img, rel, _ in records:
            self._apply_add(img.sha256, rel, img.meta, img.vector)
            self._finish_move(rel)

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
            p.unlink(missing_ok=True)   # written but never acknowledged

    def _apply_add(self, sha: str, rel: str, meta: dict, vector: torch.Tensor) -> None:
        if self._n == self._buf.shape[0]:   # grow by doubling: amortised O(1) per add
            grown = torch.empty(max(64, 2 * self._n), self.dim)
            grown[:self._n] = self._buf[:self._n]
            self._buf = grown
        self._buf[self._n] = vector
        self._files.append(rel)
        self._sha.append(sha)
        self._meta.append(meta)
        self._row_of[sha] = self._n
        self._n += 1

    def _apply_remove(self, sha: str, delete_files: bool) -> str:
        row = self._row_of.pop(sha)
        rel = self._files.pop(row)
        del self._sha[row], self._meta[row]
        keep = torch.cat([self._buf[:row], self._buf[row + 1:self._n]])  # a new tensor: old views stay valid
        self._n -= 1
        self._buf = keep
        self._row_of = {s: i for i, s in enumerate(self._sha)}
        self.epoch += 1
        if delete_files:
            self._delete_files(sha, rel)
        return rel

    def _delete_files(self, sha: str, rel: str) -> None:
        (self.root / rel).unlink(missing_ok=True)
        thumb_path(self.root, sha).unlink(missing_ok=True)

    def _maybe_compact_locked(self) -> None:
        if self._journal_records > max(COMPACT_MIN_RECORDS, COMPACT_FRACTION * self._n):
            self._compact_locked()

    def _compact_locked(self) -> None:
        self._write_snapshot_locked(self._buf[:self._n], self._files, self._sha, self._meta,
                                    self._generation + 1, self._created)
        self._generation += 1
        self._new_journal_locked()
        self._journal_ino = (self.root / JOURNAL_NAME).stat().st_ino
        self._journal_pos, self._journal_records = JOURNAL_HEADER.size, 0

    def _write_snapshot_locked(self, features, files, sha, meta, generation: int, created: float) -> None:
        snap = {"format_version": FORMAT_VERSION, "model_id": self.model_id, "dim": self.dim,
                "features": features.float().contiguous().clone(), "files": list(files), "sha256": list(sha),
                "meta": list(meta), "generation": generation, "created": created}
        write_atomic(self.root / SNAPSHOT_NAME, lambda f: torch.save(snap, f))

    def _new_journal_locked(self) -> None:
        header = JOURNAL_HEADER.pack(JOURNAL_MAGIC, FORMAT_VERSION, self._generation)
        write_atomic(self.root / JOURNAL_NAME, lambda f: f.write(header))


def _migrate(snap: dict) -> dict:
    """Bring an older snapshot to FORMAT_VERSION, one step per version."""
    version = snap.get("format_version")
    if version != FORMAT_VERSION:
        raise LibraryError(f"features_library.pth has format version {version}; this program reads {FORMAT_VERSION}")
    return snap

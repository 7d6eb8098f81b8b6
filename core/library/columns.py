"""The library's snapshot as memory-mapped column files: opening costs the same at 10 rows or 10M.

One generation G of the snapshot is the set of files `store/*.G.*` (S rows, no tombstones:
compaction sweeps them), all written before `store.json` names G:

    features.G.npy   float32 (or float16) [S, D]  L2-normalised embeddings, row order = id order
    ids.G.npy        int64 [S]      permanent row ids, ascending (never reused)
    sha.G.npy        |S64 [S]       hex sha256 of each stored image (the dedupe key)
    bytes.G.npy      int64 [S]      stored file sizes (stats without reading the metadata)
    meta.G.jsonl     one JSON object per row: {"file": "images/ab/<sha>.<ext>", "name", "added",
                     "width", "height", "bytes", optional "caption_en", "caption_zh"}
    meta.G.off.npy   int64 [S + 1]  byte offset of each row's line in meta.G.jsonl
    shakey.G.npy     uint64 [S]     the first 16 hex digits of each sha as a number, sorted ...
    shaorder.G.npy   int64 [S]      ... and the row each sorted key belongs to (find/dedupe by bisection)

Every file is opened with np.load(mmap_mode="c"): nothing is read until used, pages are
shared with the OS cache, and no Python object is made per row. Lookups by id and by sha
are bisections, O(log S); a row's metadata is parsed only when that row is shown.
"""
from __future__ import annotations

import json
import mmap
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch

from .journal import fsync_dir

__all__ = ["Columns", "write_columns", "sha_key", "remove_generation", "COLUMN_FILES"]

COLUMN_FILES = ("features", "ids", "sha", "bytes", "meta", "meta.off", "shakey", "shaorder")
_WRITE_CHUNK = 65_536   # rows per write: bounded memory when a 10M library is compacted


def sha_key(sha_hex: str) -> int:
    """The uint64 bisection key of a sha (or an id prefix padded with zeros)."""
    return int(sha_hex[:16].ljust(16, "0"), 16)


def _path(folder: Path, name: str, gen: int) -> Path:
    stem, _, ext = name.partition(".")
    suffix = {"meta": ".jsonl"}.get(name, ".npy")
    return folder / (f"{stem}.{gen}.{ext}{suffix}" if ext else f"{stem}.{gen}{suffix}")


@dataclass
class Columns:
    """One generation of the snapshot, memory-mapped. Row i: features[i], ids[i], sha[i], meta(i)."""
    features: torch.Tensor     # [S, D] float32/float16, a view of the mapped file
    ids: np.ndarray            # int64 [S], ascending
    sha: np.ndarray            # |S64 [S]
    sizes: np.ndarray          # int64 [S]
    offsets: np.ndarray        # int64 [S + 1]
    shakey: np.ndarray         # uint64 [S], sorted
    shaorder: np.ndarray       # int64 [S]
    _meta: mmap.mmap | bytes

    @classmethod
    def open(cls, folder: Path, gen: int, dim: int) -> "Columns":
        load = lambda name: np.load(_path(folder, name, gen), mmap_mode="c", allow_pickle=False)  # noqa: E731
        feats = load("features")
        if feats.ndim != 2 or feats.shape[1] != dim:
            raise ValueError(f"features.{gen}.npy has shape {feats.shape}, expected [N, {dim}]")
        with open(_path(folder, "meta", gen), "rb") as f:
            meta = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if os.fstat(f.fileno()).st_size else b""
        return cls(torch.from_numpy(feats), load("ids"), load("sha"), load("bytes"), load("meta.off"),
                   load("shakey"), load("shaorder"), meta)

    def __len__(self) -> int:
        return len(self.ids)

    def sha_of(self, row: int) -> str:
        return self.sha[row].decode()

    def meta(self, row: int) -> dict:
        return json.loads(self._meta[int(self.offsets[row]):int(self.offsets[row + 1])])

    def row_of_id(self, rowid: int) -> int | None:
        i = int(np.searchsorted(self.ids, rowid))
        return i if i < len(self.ids) and int(self.ids[i]) == rowid else None

    def rows_with_prefix(self, prefix: str) -> list[int]:
        """Rows whose sha starts with `prefix` (hex, at least 1 digit)."""
        lo = np.searchsorted(self.shakey, np.uint64(sha_key(prefix)), side="left")
        hi = np.searchsorted(self.shakey, np.uint64(int(prefix[:16].ljust(16, "f"), 16)), side="right")
        rows = [int(r) for r in self.shaorder[lo:hi]]
        return [r for r in rows if self.sha_of(r).startswith(prefix)] if len(prefix) > 16 else rows

    def close(self) -> None:
        if isinstance(self._meta, mmap.mmap):
            self._meta.close()


@dataclass(frozen=True)
class Row:
    """One row to write: permanent id, sha, metadata line (with "file"), and its vector."""
    rowid: int
    sha: str
    meta: dict


def write_columns(folder: Path, gen: int, rows: list[Row], vectors: Iterable[torch.Tensor], dim: int,
                  dtype: str = "float32", raw_meta: Iterator[bytes] | None = None) -> None:
    """Write generation `gen` (every file fsync'd; the caller then points store.json at it).
    `vectors` yields [n, D] chunks in row order; `raw_meta` may yield ready JSON lines (bytes,
    no newline) instead of re-encoding `rows[i].meta` (a compaction copies old lines as they are)."""
    folder.mkdir(parents=True, exist_ok=True)
    n = len(rows)
    # Plain sequential writes, not a writable memmap: a full disk must raise OSError (ENOSPC),
    # where writing the pages of a sparse mapped file kills the process with SIGBUS.
    with open(_path(folder, "features", gen), "wb") as f:
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": (n, dim)}
        np.lib.format.write_array_header_1_0(f, header)
        done = 0
        for chunk in vectors:
            f.write(chunk.detach().to(torch.float32).numpy().astype(dtype, copy=False).tobytes())
            done += len(chunk)
        if done != n:
            raise ValueError(f"write_columns: {done} vectors for {n} rows")
        f.flush()
        os.fsync(f.fileno())
    offsets = np.zeros(n + 1, dtype=np.int64)
    with open(_path(folder, "meta", gen), "wb") as f:
        lines = raw_meta if raw_meta is not None else (json.dumps(r.meta, ensure_ascii=False).encode() for r in rows)
        for i, line in enumerate(lines):
            f.write(line + b"\n")
            offsets[i + 1] = offsets[i] + len(line) + 1
        f.flush()
        os.fsync(f.fileno())
    keys = np.array([sha_key(r.sha) for r in rows], dtype=np.uint64)
    order = np.argsort(keys, kind="stable")
    _save(folder, "ids", gen, np.array([r.rowid for r in rows], dtype=np.int64))
    _save(folder, "sha", gen, np.array([r.sha.encode() for r in rows], dtype="S64"))
    _save(folder, "bytes", gen, np.array([int(r.meta.get("bytes", 0)) for r in rows], dtype=np.int64))
    _save(folder, "meta.off", gen, offsets)
    _save(folder, "shakey", gen, keys[order])
    _save(folder, "shaorder", gen, order.astype(np.int64))
    fsync_dir(folder)


def _save(folder: Path, name: str, gen: int, array: np.ndarray) -> None:
    path = _path(folder, name, gen)
    with open(path, "wb") as f:
        np.save(f, array, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


def remove_generation(folder: Path, gen: int) -> None:
    """Delete one generation's files (after store.json points at a newer one)."""
    for name in COLUMN_FILES:
        _path(folder, name, gen).unlink(missing_ok=True)

"""Synthetic libraries for the benchmarks: N rows written straight as a format-2 snapshot.

    write_library(root, "bench", vectors, rows, dim)   # vectors: [n, D] chunks, `rows` in all

No image files are written: adds, opens and searches are what is timed. The layout is the
one core/library/disk.py and core/library/columns.py document (store.json + store/*.1.* + an
empty journal), written with numpy a chunk at a time: no Python object per row, so 10M rows
take seconds and a few hundred MB beside the vectors (the per-row `Row` list the library's own
compaction builds cost ~10 GB at 10M). Row i has id i, sha `f"{i:016x}" + "0" * 48` (distinct
bisection keys) and a fixed-width metadata line.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from core.library.columns import _path  # noqa: E402
from core.library.journal import JOURNAL_HEADER, JOURNAL_MAGIC  # noqa: E402
from core.library.disk import FORMAT_VERSION, JOURNAL_NAME, MANIFEST_NAME, STORE_DIR  # noqa: E402
from core.library.store import Library  # noqa: E402

__all__ = ["write_library", "random_vectors"]

_CHUNK = 1 << 20          # rows of ids / shas / metadata made at a time
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_SHA_PAD = 48             # zeros after the 16 hex digits of the row id


def random_vectors(rows: int, dim: int, chunk: int = 131_072, seed: int = 0) -> Iterable[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    for start in range(0, rows, chunk):
        yield torch.nn.functional.normalize(torch.randn(min(chunk, rows - start), dim, generator=g), dim=-1)


def write_library(root: Path, model_id: str, vectors: Iterable[torch.Tensor], rows: int, dim: int,
                  dtype: str = "float32") -> None:
    """A library of `rows` rows (ids 0..rows-1, generation 1) as compaction would write it."""
    Library(root, model_id, dim, dtype=dtype)   # the folders and generation 0
    folder = root / STORE_DIR
    _write_features(_path(folder, "features", 1), vectors, rows, dim, dtype)
    _write_meta(folder, rows)
    ids = np.arange(rows, dtype=np.int64)
    _save(folder, "ids", ids)
    _save(folder, "bytes", np.ones(rows, dtype=np.int64))
    _save(folder, "shakey", ids.astype(np.uint64))   # the first 16 hex digits are the id: sorted already
    _save(folder, "shaorder", ids)
    with open(_path(folder, "sha", 1), "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|S64", "fortran_order": False, "shape": (rows,)})
        for start in range(0, rows, _CHUNK):
            f.write(_shas(np.arange(start, min(rows, start + _CHUNK))).tobytes())
    manifest = {"format_version": FORMAT_VERSION, "model_id": model_id, "dim": dim, "dtype": dtype,
                "generation": 1, "created": time.time(), "next_id": rows}
    (root / MANIFEST_NAME).write_text(json.dumps(manifest))
    (root / JOURNAL_NAME).write_bytes(JOURNAL_HEADER.pack(JOURNAL_MAGIC, FORMAT_VERSION, 1))


def _write_features(path: Path, vectors: Iterable[torch.Tensor], rows: int, dim: int, dtype: str) -> None:
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                                 "fortran_order": False, "shape": (rows, dim)})
        done = 0
        for chunk in vectors:
            f.write(chunk.detach().to("cpu", getattr(torch, dtype)).contiguous().numpy().tobytes())
            done += len(chunk)
        if done != rows:
            raise ValueError(f"write_library: {done} vectors for {rows} rows")


def _shas(ids: np.ndarray) -> np.ndarray:
    """uint8 [n, 64]: the hex sha of each row id (its 16 hex digits, then zeros)."""
    shifts = np.arange(60, -4, -4, dtype=np.uint64)
    digits = _HEX[(ids.astype(np.uint64)[:, None] >> shifts) & np.uint64(15)]
    return np.concatenate([digits, np.full((len(ids), _SHA_PAD), ord("0"), dtype=np.uint8)], axis=1)


def _write_meta(folder: Path, rows: int) -> None:
    """meta.1.jsonl with one fixed-width line per row, and its offsets."""
    template = json.dumps({"file": "images/XX/" + "S" * 64 + ".jpg", "name": "N" * 16 + ".jpg",
                           "bytes": 1}).encode() + b"\n"
    width = len(template)
    sha_at, name_at, dir_at = template.index(b"S" * 64), template.index(b"N" * 16), template.index(b"XX")
    line = np.frombuffer(template, dtype=np.uint8)
    with open(_path(folder, "meta", 1), "wb") as f:
        for start in range(0, rows, _CHUNK):
            sha = _shas(np.arange(start, min(rows, start + _CHUNK)))
            block = np.tile(line, (len(sha), 1))
            block[:, sha_at:sha_at + 64] = sha
            block[:, name_at:name_at + 16] = sha[:, :16]
            block[:, dir_at:dir_at + 2] = sha[:, :2]
            f.write(block.tobytes())
    _save(folder, "meta.off", np.arange(rows + 1, dtype=np.int64) * width)


def _save(folder: Path, name: str, array: np.ndarray) -> None:
    with open(_path(folder, name, 1), "wb") as f:
        np.save(f, array, allow_pickle=False)

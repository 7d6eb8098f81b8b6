"""Synthetic libraries for the benchmarks: N rows written straight as a format-2 snapshot.

    write_library(root, "bench", vectors, rows, dim)   # vectors: [n, D] chunks, `rows` in all

No image files are written: adds, opens and searches are what is timed. The layout is the
one core/library/disk.py documents (store.json + store/*.1.* + an empty journal).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Iterable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from core.library.columns import Row, write_columns  # noqa: E402
from core.library.journal import JOURNAL_HEADER, JOURNAL_MAGIC  # noqa: E402
from core.library.disk import FORMAT_VERSION, JOURNAL_NAME, MANIFEST_NAME, STORE_DIR  # noqa: E402
from core.library.store import Library  # noqa: E402

__all__ = ["write_library", "random_vectors"]


def random_vectors(rows: int, dim: int, chunk: int = 131_072, seed: int = 0) -> Iterable[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    for start in range(0, rows, chunk):
        yield torch.nn.functional.normalize(torch.randn(min(chunk, rows - start), dim, generator=g), dim=-1)


def write_library(root: Path, model_id: str, vectors: Iterable[torch.Tensor], rows: int, dim: int,
                  dtype: str = "float32") -> None:
    """A library of `rows` rows (ids 0..rows-1, generation 1) as compaction would write it."""
    Library(root, model_id, dim, dtype=dtype)   # the folders and generation 0
    shas = [f"{i:064x}" for i in range(rows)]
    meta = [Row(i, shas[i], {"file": f"images/{shas[i][:2]}/{shas[i]}.jpg", "name": f"{i}.jpg", "bytes": 1})
            for i in range(rows)]
    write_columns(root / STORE_DIR, 1, meta, vectors, dim, dtype)
    manifest = {"format_version": FORMAT_VERSION, "model_id": model_id, "dim": dim, "dtype": dtype,
                "generation": 1, "created": time.time(), "next_id": rows}
    (root / MANIFEST_NAME).write_text(json.dumps(manifest))
    (root / JOURNAL_NAME).write_bytes(JOURNAL_HEADER.pack(JOURNAL_MAGIC, FORMAT_VERSION, 1))

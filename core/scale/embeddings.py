"""Importing embeddings made elsewhere: clip-retrieval's `clip-retrieval inference` output.

    DIR/img_emb/img_emb_0.npy            float16/float32 [n, D], one row per image
    DIR/metadata/metadata_0.parquet      n rows, column image_path (plus caption, url, ...)

Pairs are matched by their number. The user states the model that made them (`--model`):
the library records it, and a dimension that differs from the model's is refused. Images
are stored by reference (the library keeps their path and SHA-256; nothing is copied); a
row whose file cannot be read is reported and skipped (its hash cannot be known). Relative
image paths are taken relative to the current directory, as clip-retrieval wrote them.
"""
from __future__ import annotations

import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import DatasetError, ImageError, LibraryError
from ..library.ingest import IngestReport
from ..library.store import Library
from .merge import Candidate, bulk_add, deep_hash, name_of
from .sources import is_url

__all__ = ["import_clip_retrieval", "embedding_pairs"]

_IO_WORKERS = 8


def embedding_pairs(folder: Path) -> list[tuple[Path, Path]]:
    """(img_emb_K.npy, metadata_K.parquet) for every K, in numeric order."""
    number = lambda p: int(re.search(r"(\d+)$", p.stem).group(1)) if re.search(r"(\d+)$", p.stem) else -1  # noqa: E731
    embs = {number(p): p for p in (folder / "img_emb").glob("img_emb_*.npy")}
    metas = {number(p): p for p in (folder / "metadata").glob("metadata_*.parquet")}
    if not embs:
        raise DatasetError(f"No img_emb/img_emb_*.npy in {folder}: expected the output folder of "
                           "`clip-retrieval inference` (img_emb/ and metadata/)")
    lonely = sorted(set(embs) ^ set(metas))
    if lonely:
        raise DatasetError(f"{folder}: img_emb_K.npy and metadata_K.parquet do not pair up for K in {lonely}")
    return [(embs[k], metas[k]) for k in sorted(embs)]


def import_clip_retrieval(library: Library, folder: str | os.PathLike,
                          progress: Callable[[int], None] | None = None) -> IngestReport:
    """Add clip-retrieval embeddings (made by `library.model_id`) by reference, in one bulk step."""
    import pyarrow.parquet as pq
    start, report, folder = time.perf_counter(), IngestReport(), Path(folder)
    pairs = embedding_pairs(folder)
    cands: list[Candidate] = []
    where: list[tuple[int, int]] = []    # (pair, row) of each candidate
    seen: set[str] = set()
    for k, (npy, meta) in enumerate(pairs):
        emb = np.load(npy, mmap_mode="r")
        if emb.ndim != 2 or emb.shape[1] != library.dim:
            raise LibraryError(f"{npy} holds {emb.shape[-1]}-dimensional embeddings, but {library.model_id!r} "
                               f"makes {library.dim}: they come from another model. Pass the --model that made them.")
        table = pq.read_table(meta)
        if "image_path" not in table.column_names:
            raise DatasetError(f"{meta} has no image_path column (columns: {', '.join(table.column_names)})")
        paths = [str(p) for p in table.column("image_path").to_pylist()]
        if len(paths) != emb.shape[0]:
            raise DatasetError(f"{meta} has {len(paths)} rows but {npy} has {emb.shape[0]} embeddings")
        with ThreadPoolExecutor(_IO_WORKERS) as pool:
            probed = list(pool.map(_probe, paths))
        for row, (path, got) in enumerate(zip(paths, probed)):
            if isinstance(got, str):
                report.errors.append((name_of(path), got))
            elif got[0] in seen or library.contains(got[0]):
                report.duplicates.append(name_of(path))
            else:
                seen.add(got[0])
                cands.append(Candidate(got[0], got[1], got[2], got[3], checked=True))
                where.append((k, row))

    def vectors(keep: np.ndarray) -> Iterator[torch.Tensor]:
        at = np.asarray(where, dtype=np.int64).reshape(-1, 2)[keep]
        for k, (npy, _) in enumerate(pairs):
            rows = at[at[:, 0] == k, 1]
            if len(rows):
                emb = np.asarray(np.load(npy, mmap_mode="r")[rows], dtype=np.float32)
                yield F.normalize(torch.from_numpy(emb), dim=-1)
    bulk_add(library, cands, vectors, True, report, progress)
    report.seconds = time.perf_counter() - start
    return report


def _probe(path: str) -> tuple[str, str, int, int] | str:
    """(sha256, absolute path, width, height) of a referenced image, or the reason it is unusable."""
    if is_url(path):
        return "URLs are not imported by reference; download the images and point image_path at the files"
    real = Path(path).expanduser().resolve()
    try:
        with Image.open(real) as im:
            w, h = im.size
            if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):   # EXIF rotation by 90°: shown (and encoded) turned
                w, h = h, w
        return deep_hash(real), str(real), w, h
    except (OSError, ValueError, ImageError) as e:
        return f"cannot read {real} ({getattr(e, 'strerror', None) or e})"

"""Merging embedding shards (or imported embeddings) into a library in one bulk step.

    report = merge_shards(library, "library/shards/job-3f2a9c0e11d4", by_reference=False)

Steps, and what a crash (or an exception) at each leaves:

1. read the shards' metadata: refuse another model or dimension before anything is written;
2. pick the candidates: images whose sha is not in the library yet, first occurrence only;
3. place each image: copy mode re-reads it from its source, checks its SHA-256 is the one
   that was encoded, and writes images/ab/<sha>.<ext> (temp in staging/, fsync, rename);
   by-reference mode writes nothing and records the path relative to the library;
4. `Library.add_bulk`: one new snapshot generation with the old rows and the new ones,
   made visible by the atomic switch of store.json (then a new journal, as any compaction).

A crash before the switch (4) leaves the library exactly as it was, plus the copies from
(3): content-named files with no row yet. Re-running the merge finds those images still
missing from the library, re-uses the identical files and switches: each image once, and
`library verify` is healthy again (before the re-run it lists the copies as orphans, and
`library repair` would re-add them, which the re-run then counts as already present). A
crash after the switch leaves the merge done; a re-run adds nothing.
"""
from __future__ import annotations

import hashlib
import io
import os
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import ImageError, LibraryError, ModelMismatchError
from ..images import safe_display_name, stored_ext
from ..library.ingest import IngestReport
from ..library.journal import fsync_dir
from ..library.store import Library
from .shards import list_shards, read_shard, shard_info
from .sources import Item, is_url, read_item

__all__ = ["merge_shards", "Candidate", "bulk_add", "check_shards", "name_of", "deep_hash"]

_IO_WORKERS = 8   # file reads/copies in flight during a merge (I/O bound, not CPU bound)


@dataclass
class Candidate:
    """One image a merge may add: where it is, what it hashed to, and its decoded size."""
    sha256: str
    path: str               # file path, URL, or TAR#MEMBER (as the shard recorded it)
    width: int
    height: int
    checked: bool = False   # the file was hashed just now (no need to hash it again)
    file: str = ""          # library-relative path once placed
    meta: dict = field(default_factory=dict)


def check_shards(library: Library, folder: Path) -> list[tuple[Path, dict]]:
    """The folder's shards with their metadata; refuses another model or dimension."""
    shards = list_shards(folder)
    if not shards:
        raise LibraryError(f"No embedding shards (part-*.parquet) in {folder}; run "
                           "`python -m core index SOURCE... --engine ray` to write them")
    out = []
    for path in shards:
        info = shard_info(path)
        if info is None:
            raise LibraryError(f"{path} is not a readable embedding shard; delete it and re-run the indexing job")
        if info["model_id"] != library.model_id:
            raise ModelMismatchError(f"{path} holds embeddings of model {info['model_id']!r}, but the library at "
                                     f"{library.root} holds {library.model_id!r}; embeddings of different models "
                                     "are never mixed. Merge into another --library folder.")
        if int(info["dim"]) != library.dim:
            raise LibraryError(f"{path} has {info['dim']}-dimensional embeddings; the library holds {library.dim}")
        out.append((path, info))
    return out


def merge_shards(library: Library, folder: str | os.PathLike, by_reference: bool = False,
                 progress: Callable[[int], None] | None = None) -> IngestReport:
    """Add every image of the shards in `folder` to `library` in one bulk step (idempotent)."""
    start, report = time.perf_counter(), IngestReport()
    shards = check_shards(library, Path(folder))
    cands: list[Candidate] = []
    rows_of: list[np.ndarray] = []      # per shard: the candidate rows, in order
    seen: set[str] = set()
    for path, info in shards:
        report.errors += [tuple(e) for e in info.get("errors", [])]
        _, cols = read_shard(path)
        picked = []
        for r, (sha, p) in enumerate(zip(cols["sha256"], cols["path"])):
            if sha in seen or library.contains(sha):
                report.duplicates.append(name_of(p))
                continue
            seen.add(sha)
            picked.append(r)
            cands.append(Candidate(sha, p, int(cols["width"][r]), int(cols["height"][r])))
        rows_of.append(np.asarray(picked, dtype=np.int64))

    def vectors(keep: np.ndarray) -> Iterator[torch.Tensor]:
        offset = 0
        for (path, _), rows in zip(shards, rows_of):
            mask = keep[offset:offset + len(rows)]
            offset += len(rows)
            if mask.any():
                emb = read_shard(path)[1]["embedding"][rows[mask]]
                yield F.normalize(torch.from_numpy(emb).float(), dim=-1)
    bulk_add(library, cands, vectors, by_reference, report, progress)
    report.seconds = time.perf_counter() - start
    return report


def bulk_add(library: Library, cands: list[Candidate], vectors: Callable[[np.ndarray], Iterable[torch.Tensor]],
             by_reference: bool, report: IngestReport, progress: Callable[[int], None] | None = None) -> None:
    """Place the candidates' images (copy or reference), then one `Library.add_bulk`. Candidates
    that cannot be placed (source gone, bytes changed) are reported and left out."""
    tars: dict[str, dict[str, tuple[int, int]]] = {}
    with ThreadPoolExecutor(_IO_WORKERS) as pool:
        placed = list(pool.map(lambda c: _place(library, c, by_reference, tars), cands))
    good = [c for c, err in zip(cands, placed) if err is None]
    report.errors += [(name_of(c.path), err) for c, err in zip(cands, placed) if err is not None]
    for folder in {(library.root / c.file).parent for c in good if c.file.startswith("images/")}:
        fsync_dir(folder)   # the copies are durable before store.json can name them
    if progress:
        progress(len(cands))
    if not good:
        return
    index = np.flatnonzero([err is None for err in placed])

    def kept_vectors(keep: np.ndarray) -> Iterable[torch.Tensor]:
        full = np.zeros(len(cands), dtype=bool)
        full[index[keep]] = True   # back to the caller's candidate order
        return vectors(full)
    keep = library.add_bulk([c.sha256 for c in good], [c.file for c in good], [c.meta for c in good], kept_vectors)
    for c, added in zip(good, keep):
        (report.added if added else report.duplicates).append(c.sha256[:12] if added else name_of(c.path))


def _place(library: Library, c: Candidate, by_reference: bool, tars: dict) -> str | None:
    """Fill c.file and c.meta; returns None, or the reason the image cannot be added."""
    c.meta = {"name": name_of(c.path), "added": time.time(), "width": c.width, "height": c.height}
    try:
        item = _item_of(c.path, tars)
        if by_reference and not item.in_tar and not is_url(item.source):
            real = Path(item.source).resolve()
            if not c.checked and deep_hash(real) != c.sha256:
                return "the file changed since it was encoded; index it again"
            c.file = os.path.relpath(real, library.root.resolve())
            c.meta.update(bytes=real.stat().st_size, ref=str(real))
            return None
        data = read_item(item)
    except (ImageError, OSError) as e:
        return getattr(e, "reason", None) or str(e)
    if hashlib.sha256(data).hexdigest() != c.sha256:
        return "the file changed since it was encoded; index it again"
    c.file = _store_copy(library.root, c.sha256, data)
    c.meta["bytes"] = len(data)
    return None


def name_of(path: str) -> str:
    """Display name of a shard path (a WebDataset member's own name, not the shard's)."""
    return safe_display_name(path.rsplit(".tar#", 1)[-1])


def deep_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _item_of(path: str, tars: dict) -> Item:
    """The shard's path string back to an Item (TAR#MEMBER: the member's offset, from the tar index)."""
    for i, ch in enumerate(path):
        if ch == "#" and path[:i].lower().endswith(".tar") and os.path.isfile(path[:i]):
            tar, member = path[:i], path[i + 1:]
            if tar not in tars:   # racing threads may both index it: same result
                with tarfile.open(tar, "r:") as t:
                    tars[tar] = {m.name: (m.offset_data, m.size) for m in t if m.isfile()}
            offset, size = tars[tar].get(member, (-1, -1))
            if offset < 0:
                raise ImageError(member, f"no longer in {tar}")
            return Item(tar, offset, size, member)
    return Item(path)


def _store_copy(root: Path, sha: str, data: bytes) -> str:
    """images/ab/<sha>.<ext> holding `data` (content-named: an existing copy is the same bytes)."""
    try:
        ext = stored_ext(Image.open(io.BytesIO(data)).format)
    except (OSError, ValueError):
        ext = ".img"
    rel = f"images/{sha[:2]}/{sha}{ext}"
    target = root / rel
    if target.is_file() and target.stat().st_size == len(data):
        return rel   # left by an interrupted merge, or stored before
    target.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(2):   # another process opening the library clears staging/: write it again
        tmp = root / "staging" / f".merge-{os.getpid()}-{sha}{ext}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.replace(tmp, target)
            return rel
        except FileNotFoundError:
            if attempt:
                raise
    return rel

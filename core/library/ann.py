"""Approximate nearest-neighbour (ANN) indexes over FAISS, keyed by permanent row ids.

Every index speaks the `Index` protocol: rows are identified by the caller's int64 ids (never
by position), vectors are float32 [N, D] and L2-normalised, scores are cosine (inner product),
best first. Kinds:

- "exact"  brute-force matmul + topk; lives in core.library.search (not here). Best below
           `EXACT_MAX_ROWS`, where a full scan is already a few milliseconds.
- "ivf"    IndexIVFFlat: k-means cells, a query scans the `nprobe` nearest cells. Full-precision
           vectors in RAM (4*D bytes/row); native add and O(len(ids)) remove through a hashed
           id -> (cell, offset) map. The default above `EXACT_MAX_ROWS`.
- "hnsw"   IndexHNSWFlat (M=32) in an IndexIDMap2: a graph; fast and accurate but no removal,
           so removed ids are filtered at search time and `rebuild_needed()` asks the caller to
           rebuild once too many are dead. `ef_search` trades speed for recall.
- "ivfpq"  IVF with product-quantised codes (D/8 bytes/row: 64 B for D=512), for ~10M rows
           that do not fit in RAM at full precision. The PQ scores are coarse, so the top
           `rerank_factor * k` candidates are re-scored exactly with vectors from a
           caller-provided `rerank(ids) -> float32 [len(ids), D]` (the library's memory-mapped
           features). Only codes stay in RAM.
- "ivfsq"  IVF with 8-bit scalar-quantised vectors (D bytes/row: a quarter of "ivf"), the top
           `rerank_factor * k` re-scored exactly like ivfpq. SQ8 keeps the ranking nearly
           exact, so few candidates suffice, and a query streams 4x fewer bytes than ivf: the
           default from `IVFSQ_MIN_ROWS` up (bench_ann.py: 1M and 10M rows on 2 cores). Up to
           `IVFSQ_MAX_NLIST` cells, trained on up to `IVFSQ_MAX_NLIST * MIN_POINTS_PER_CELL` rows.

GPU: `FaissIndex(..., use_gpu=True)` moves ivf/ivfpq to all GPUs when the installed faiss
has GPU support and `faiss.get_num_gpus() > 0`; otherwise (and always for hnsw, which FAISS
cannot run on a GPU) it stays on the CPU. Untested here: this project's CI has no GPU.

File format (version 1), one file: MAGIC, u64 header length, JSON header (kind, dim, options,
meta, removed count), the removed ids as raw int64, then faiss.serialize_index bytes.
`save` is atomic: temp file beside the target, fsync, os.replace.
"""
from __future__ import annotations

import functools
import json
import math
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from .rwlock import RWLock

if TYPE_CHECKING:   # imported where used: `python -m core --help` reads KINDS without torch
    import torch

__all__ = ["Index", "FaissIndex", "build_index", "load_index", "choose_kind", "train_rows", "nlist_for",
           "EXACT_MAX_ROWS", "IVFSQ_MIN_ROWS", "KINDS", "INDEX_KINDS", "RERANKED_KINDS"]

# Below this many rows a brute-force scan (D=512: 50k x 2 KiB = 100 MiB) costs a few ms on
# 2 CPU cores, is exact, needs no training and removes in O(1): an ANN index buys nothing.
EXACT_MAX_ROWS = 50_000
# From here on "ivfsq" (a quarter of ivf's memory and bytes per query; ivf's full-precision
# scan stays the choice for the smaller libraries in between).
IVFSQ_MIN_ROWS = 200_000
KINDS = ("exact", "ivf", "hnsw", "ivfpq", "ivfsq")
INDEX_KINDS = ("auto",) + KINDS   # what --index accepts (auto: see choose_kind)
FAISS_KINDS = ("ivf", "hnsw", "ivfpq", "ivfsq")
RERANKED_KINDS = ("ivfpq", "ivfsq")   # candidates re-scored with the caller's exact vectors

FORMAT_VERSION = 1        # bump with a migration note when the file layout changes
MAGIC = b"CLIPANN\x00"
MAX_TRAIN_ROWS = 100_000  # k-means on more rows costs minutes and barely moves the centroids
MIN_POINTS_PER_CELL = 39  # faiss's own floor for a well-trained k-means centroid
NLIST_RANGE = (16, 65536)
# bench_ann.py, 1M rows x 512, shifted queries, nlist 2564: nprobe 32 -> recall@10 0.91
# (3.2 ms), 48 -> 0.95 (4.5 ms), 64 -> 0.96 (5.0 ms), 96 -> 0.98 (7.8 ms) on 2 CPU cores.
DEFAULT_NPROBE = 64
# ivfsq: up to 4096 cells (4000 at 1M rows); nprobe 96 scans 2.4% of the rows at 512 B each
# (ivf's 64 of 1264 cells scan 5% at 2 KiB): recall@10 0.976 at 1M rows (p50 2.3 ms) and at 10M rows
# (p50 20 ms, p95 30 ms, 2 cores; bench_ann.py, RESULTS.md).
IVFSQ_MAX_NLIST = 4096
IVFSQ_NPROBE = 96
# opts coarse="hnsw": an HNSW graph over the centroids finds a row's or a query's nearest cells
# (assigning 10M rows to 4096 flat centroids is ~40 TFLOP, most of a 2-core build), with 10
# k-means iterations. Opt-in only: at 1M rows it cut recall@10 from 0.976 to 0.79 (nprobe 96),
# and the 10M run built with it reached 0.88 (RESULTS.md).
HNSW_COARSE_MIN_NLIST = 2048
IVFSQ_KMEANS_ITERATIONS = 10
HNSW_M = 32               # graph degree: the usual recall/memory balance for D in 256..1024
HNSW_EF_CONSTRUCTION = 64  # build-time beam: a little above faiss's 40 for a better graph
DEFAULT_EF_SEARCH = 64
REBUILD_REMOVED_FRACTION = 0.2  # filtered HNSW search degrades once a fifth of it is dead
DEFAULT_RERANK_FACTOR = 10
# PQ codes misorder close neighbours: re-scoring fewer than this many candidates loses
# recall even for k=1 (a row's own code may rank below 10 others), and 256 random reads of
# one row each stay well under a millisecond from the page cache.
MIN_RERANK_CANDIDATES = 256
# 8-bit scalar codes keep the order within a few ranks: rerank_factor * k candidates suffice.
MIN_RERANK = {"ivfpq": MIN_RERANK_CANDIDATES, "ivfsq": 0}


class Index(Protocol):
    """What the library needs from any index, exact or approximate."""
    kind: str  # one of KINDS

    def __len__(self) -> int: ...  # live (not removed) vectors

    def add(self, ids: torch.Tensor, vectors: torch.Tensor) -> None: ...
    # ids int64 [N] (new ids only), vectors float32 [N, D] L2-normalised

    def remove(self, ids: torch.Tensor) -> None: ...  # O(len(ids)), never O(N)

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]: ...
    # queries float32 [Q, D] -> (scores float32 [Q, k'], ids int64 [Q, k']), best first;
    # k' <= min(k, len(self)); missing hits are score -inf, id -1

    def save(self, path: Path) -> None: ...  # atomic


def choose_kind(n_rows: int) -> str:
    """"exact" while a full scan is cheap, "ivf" (cheap to build, removes natively) up to
    IVFSQ_MIN_ROWS, "ivfsq" above (a quarter of the memory, a quarter of the bytes per query)."""
    if n_rows < EXACT_MAX_ROWS:
        return "exact"
    return "ivf" if n_rows < IVFSQ_MIN_ROWS else "ivfsq"


def train_rows(kind: str) -> int:
    """How many rows `kind` is trained on at most (k-means cost grows with rows x cells)."""
    return IVFSQ_MAX_NLIST * MIN_POINTS_PER_CELL if kind == "ivfsq" else MAX_TRAIN_ROWS


def nlist_for(kind: str, n_rows: int, n_train: int) -> int:
    """~4*sqrt(N) cells, never more than the training sample can fit (39 points each), and at
    most IVFSQ_MAX_NLIST for ivfsq (its k-means and its build stay minutes on 2 cores)."""
    nlist = _nlist_for(n_rows, n_train)
    return min(nlist, IVFSQ_MAX_NLIST) if kind == "ivfsq" else nlist


@functools.cache
def _faiss():
    # Imported lazily: the exact path and `import core.library` must not need faiss.
    import faiss
    # faiss defaults to one OpenMP thread per hardware thread; more would oversubscribe
    # the box when torch runs beside it. Once: os.cpu_count() costs ~0.2 ms a search under load.
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    return faiss


def _np_ids(ids) -> np.ndarray:
    import torch
    return np.ascontiguousarray(torch.as_tensor(ids).reshape(-1).numpy(), dtype=np.int64)


def _np_vectors(vectors, dim: int) -> np.ndarray:
    import torch
    arr = np.ascontiguousarray(torch.as_tensor(vectors).float().numpy(), dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise ValueError(f"expected vectors of shape [N, {dim}], got {tuple(arr.shape)}")
    return arr


def _nlist_for(n_rows: int, n_train: int) -> int:
    """~4*sqrt(N) cells, but never more than the training sample can fit (39 points each)."""
    nlist = int(4 * math.sqrt(max(n_rows, 1)))
    nlist = min(max(nlist, NLIST_RANGE[0]), NLIST_RANGE[1])
    return max(1, min(nlist, n_train // MIN_POINTS_PER_CELL))


def _pq_shape(dim: int, n_train: int) -> tuple[int, int]:
    """(sub-quantizers, bits): D/8 dims per sub-vector; fewer bits when training is tiny."""
    m = next(m for m in (dim // 8, dim // 4, dim // 2, dim, 1) if m >= 1 and dim % m == 0)
    bits = 8
    while bits > 4 and n_train < MIN_POINTS_PER_CELL * (1 << bits):
        bits -= 1
    return m, bits


class FaissIndex:
    """An `Index` over FAISS. Build with `build_index`, reopen with `load_index`.

    Settable: `nprobe` (ivf, ivfpq), `ef_search` (hnsw), `rerank` and `rerank_factor`
    (ivfpq), `meta` (a JSON-able dict saved with the index; the library keeps its
    generation and highest covered id there).
    """

    def __init__(self, kind: str, dim: int, faiss_index, *, nprobe: int = DEFAULT_NPROBE,
                 ef_search: int = DEFAULT_EF_SEARCH, rerank: Callable | None = None,
                 rerank_factor: int = DEFAULT_RERANK_FACTOR, use_gpu: bool = False,
                 removed: np.ndarray | None = None, meta: dict | None = None):
        if kind not in FAISS_KINDS:
            raise ValueError(f"unknown FAISS index kind {kind!r}; available: {FAISS_KINDS}")
        self.kind, self.dim = kind, dim
        self._cpu_index = faiss_index
        self._index = _maybe_to_gpu(faiss_index, kind, use_gpu)
        self.nprobe, self.ef_search = nprobe, ef_search
        self.rerank, self.rerank_factor = rerank, rerank_factor
        self.meta = dict(meta or {})
        # hnsw only: the graph cannot forget, so dead ids are filtered at search time.
        self._removed: set[int] = set(int(i) for i in (removed if removed is not None else ()))
        self._selector = None  # cached faiss IDSelector over _removed, rebuilt lazily
        self._lock = RWLock()

    # -- size and mutation ------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._index.ntotal) - len(self._removed)

    def add(self, ids: torch.Tensor, vectors: torch.Tensor) -> None:
        """ids int64 [N] never added before; vectors float32 [N, D] L2-normalised."""
        self._add_arrays(_np_ids(ids), _np_vectors(vectors, self.dim))

    def _add_arrays(self, ids_np: np.ndarray, vecs: np.ndarray) -> None:
        if len(ids_np) != len(vecs):
            raise ValueError(f"{len(ids_np)} ids for {len(vecs)} vectors")
        if self._removed and self._removed.intersection(ids_np.tolist()):
            raise ValueError("an id removed from an hnsw index cannot be re-added; rebuild it")
        with self._lock.write():
            self._cpu_index.add_with_ids(vecs, ids_np)
            self._refresh_gpu_copy()

    def remove(self, ids: torch.Tensor) -> None:
        """Forget ids (unknown ids are ignored). O(len(ids))."""
        ids_np = _np_ids(ids)
        with self._lock.write():
            if self.kind == "hnsw":
                self._remove_hnsw(ids_np)
            else:
                self._remove_ivf(ids_np)

    def _remove_ivf(self, ids_np: np.ndarray) -> None:
        # The hashed direct map (set at build) finds each id's cell and offset: no list scans.
        faiss = _faiss()
        ids_np = np.unique(ids_np)
        sel = faiss.IDSelectorArray(len(ids_np), faiss.swig_ptr(ids_np))
        self._cpu_index.remove_ids(sel)
        self._refresh_gpu_copy()

    def _refresh_gpu_copy(self) -> None:
        # The CPU index is the truth (it is what `save` writes); a GPU copy is re-made after
        # each mutation, which suits the library's few large batched adds.
        if self._index is not self._cpu_index:
            self._index = _maybe_to_gpu(self._cpu_index, self.kind, True)

    def _remove_hnsw(self, ids_np: np.ndarray) -> None:
        id_map = self._cpu_index
        for i in ids_np.tolist():
            if i in self._removed:
                continue
            try:  # IndexIDMap2 knows its ids: skip unknown ones so len() stays right
                id_map.reconstruct(i)
            except RuntimeError:
                continue
            self._removed.add(i)
        self._selector = None

    def rebuild_needed(self) -> bool:
        """True when enough rows are dead that the caller should rebuild (hnsw only)."""
        total = int(self._index.ntotal)
        return total > 0 and len(self._removed) / total > REBUILD_REMOVED_FRACTION

    # -- search -----------------------------------------------------------------------
    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """queries float32 [Q, D] -> (scores float32 [Q, k'], ids int64 [Q, k']), best first."""
        import torch
        q = _np_vectors(queries, self.dim)
        k = min(int(k), len(self))
        if k <= 0 or len(q) == 0:
            return torch.empty(len(q), 0), torch.empty(len(q), 0, dtype=torch.int64)
        with self._lock.read():
            if self.kind in RERANKED_KINDS and self.rerank is not None:
                scores, ids = self._search_reranked(q, k)
            else:
                scores, ids = self._search_raw(q, k)
        return _trim(scores, ids)

    def _search_raw(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self._index.search(q, k, params=self._params())

    def _params(self):
        faiss = _faiss()
        if self.kind == "hnsw":
            return faiss.SearchParametersHNSW(efSearch=max(self.ef_search, 1),
                                              sel=self._removed_selector())
        return faiss.SearchParametersIVF(nprobe=max(self.nprobe, 1))

    def _removed_selector(self):
        if not self._removed:
            return None
        if self._selector is None:
            faiss = _faiss()
            dead = np.fromiter(self._removed, dtype=np.int64, count=len(self._removed))
            batch = faiss.IDSelectorBatch(dead)  # copies ids into a hash set + bloom filter
            self._selector = faiss.IDSelectorNot(batch)
            self._selector.referenced_objects = [batch]  # SWIG would free it under us
        return self._selector

    def _search_reranked(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """PQ finds rerank_factor*k candidates per query; exact vectors re-score them."""
        n_cand = min(max(self.rerank_factor * k, MIN_RERANK[self.kind]), len(self))
        _, cand = self._search_raw(q, n_cand)
        scores = np.full((len(q), k), -np.inf, dtype=np.float32)
        ids = np.full((len(q), k), -1, dtype=np.int64)
        for row, (query, row_ids) in enumerate(zip(q, cand)):
            row_ids = row_ids[row_ids >= 0]
            exact = np.asarray(self.rerank(row_ids), dtype=np.float32) @ query
            top = np.argsort(-exact, kind="stable")[:k]
            scores[row, :len(top)], ids[row, :len(top)] = exact[top], row_ids[top]
        return scores, ids

    # -- persistence --------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """One file (see module docstring), written atomically."""
        path = Path(path)
        faiss = _faiss()
        with self._lock.read():
            dead = np.fromiter(self._removed, dtype=np.int64, count=len(self._removed))
            header = json.dumps({"version": FORMAT_VERSION, "kind": self.kind, "dim": self.dim,
                                 "nprobe": self.nprobe, "ef_search": self.ef_search,
                                 "rerank_factor": self.rerank_factor, "meta": self.meta,
                                 "removed": len(dead)}).encode()
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            f.write(MAGIC + struct.pack("<Q", len(header)) + header)
            f.write(dead.tobytes())
            with self._lock.read():  # streamed: no second in-memory copy of the index
                faiss.write_index(self._cpu_index, faiss.PyCallbackIOWriter(f.write))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


def _trim(scores: np.ndarray, ids: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """faiss pads with id -1 and -FLT_MAX: make that -inf and drop columns no row filled."""
    import torch
    missing = ids < 0
    scores = np.where(missing, np.float32(-np.inf), scores).astype(np.float32)
    width = int((~missing).sum(axis=1).max()) if len(ids) else 0
    return torch.from_numpy(scores[:, :width].copy()), torch.from_numpy(ids[:, :width].copy())


def _maybe_to_gpu(index, kind: str, use_gpu: bool):
    # FAISS runs flat/IVF indexes on GPUs, never HNSW graphs. CPU builds of faiss lack
    # get_num_gpus' GPU half, so check for both the function and a device.
    if not use_gpu or kind == "hnsw":
        return index
    faiss = _faiss()
    if not hasattr(faiss, "index_cpu_to_all_gpus") or faiss.get_num_gpus() == 0:
        return index
    return faiss.index_cpu_to_all_gpus(index)


# -- building and loading ---------------------------------------------------------------
def build_index(kind: str, dim: int, ids, vectors, **opts) -> FaissIndex:
    """Train (ivf, ivfpq, ivfsq) and fill a new index. opts: nprobe, ef_search, rerank,
    rerank_factor, use_gpu, meta, seed, nlist, m (PQ sub-quantizers), max_train_rows, coarse
    ("hnsw": ivfsq's cells found through a graph)."""
    if kind == "exact":
        raise ValueError("exact index lives in core.library.search")
    if kind not in FAISS_KINDS:
        raise ValueError(f"unknown index kind {kind!r}; available: {KINDS}")
    import torch
    ids_np = _np_ids(ids)
    vecs = np.asarray(vectors if not isinstance(vectors, torch.Tensor) else vectors.numpy())
    if kind == "hnsw":
        raw = _new_hnsw(dim)
    else:
        raw = _new_ivf(kind, dim, vecs, opts)
    keep = {k: opts[k] for k in ("nprobe", "ef_search", "rerank", "rerank_factor",
                                 "use_gpu", "meta") if k in opts}
    if kind == "ivfsq":
        keep.setdefault("nprobe", IVFSQ_NPROBE)
    index = FaissIndex(kind, dim, raw, **keep)
    _add_chunked(index, ids_np, vecs)
    return index


def _add_chunked(index: FaissIndex, ids_np: np.ndarray, vecs, chunk: int = 65_536) -> None:
    # vecs may be a float16 / float32 memmap: convert a chunk at a time to bound memory.
    for start in range(0, len(ids_np), chunk):
        part = np.ascontiguousarray(vecs[start:start + chunk], dtype=np.float32)
        if part.ndim != 2 or part.shape[1] != index.dim:
            raise ValueError(f"expected vectors of shape [N, {index.dim}], got {vecs.shape}")
        index._add_arrays(ids_np[start:start + chunk], part)


def _new_hnsw(dim: int):
    faiss = _faiss()
    graph = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
    graph.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    return faiss.IndexIDMap2(graph)


def _train_sample(vecs, max_rows: int, seed: int) -> np.ndarray:
    n = len(vecs)
    if n <= max_rows:
        return np.asarray(vecs[:], dtype=np.float32)
    rows = np.sort(np.random.default_rng(seed).choice(n, max_rows, replace=False))
    return np.asarray(vecs[rows], dtype=np.float32)  # sorted rows: sequential memmap reads


def _new_ivf(kind: str, dim: int, vecs, opts: dict):
    """An empty, trained IVF (flat or PQ) with a hashed id map for O(1) removal."""
    faiss = _faiss()
    sample = _train_sample(vecs, opts.get("max_train_rows", train_rows(kind)), opts.get("seed", 0))
    if len(sample) == 0:
        raise ValueError(f"a {kind} index must be trained: build it from at least one row")
    nlist = opts.get("nlist") or nlist_for(kind, len(vecs), len(sample))
    graph = kind == "ivfsq" and opts.get("coarse") == "hnsw"
    quantizer = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT) if graph else faiss.IndexFlatIP(dim)
    if kind == "ivf":
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    elif kind == "ivfsq":
        index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit,
                                              faiss.METRIC_INNER_PRODUCT)
    else:
        m, bits = _pq_shape(dim, len(sample))
        index = faiss.IndexIVFPQ(quantizer, dim, nlist, opts.get("m", m), bits,
                                 faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = opts.get("seed", 0)
    if graph:   # k-means with exact (flat) assignment, then the centroids go into the graph
        index.quantizer_trains_alone, flat = 2, faiss.IndexFlatIP(dim)
        index.clustering_index = flat
        index.cp.niter = IVFSQ_KMEANS_ITERATIONS
    index.train(sample)
    index.clustering_index = None
    index.own_fields = True
    quantizer.this.disown()  # the IVF now owns (and frees) its quantizer
    index.set_direct_map_type(faiss.DirectMap.Hashtable)
    return index


def load_index(path: Path, *, rerank: Callable | None = None, use_gpu: bool = False) -> FaissIndex:
    """Reopen a saved index exactly; ivfpq needs `rerank` again (functions are not saved)."""
    faiss = _faiss()
    with open(path, "rb") as f:
        if f.read(len(MAGIC)) != MAGIC:
            raise ValueError(f"{path} is not an index file written by core.library.ann")
        (hlen,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(hlen))
        if header["version"] != FORMAT_VERSION:
            raise ValueError(f"{path}: index format v{header['version']}, this code reads "
                             f"v{FORMAT_VERSION}; rebuild the index")
        dead = np.frombuffer(f.read(8 * header["removed"]), dtype=np.int64)
        # Streamed from the file: never a whole extra copy of the index in memory.
        raw = faiss.read_index(faiss.PyCallbackIOReader(f.read))
    return FaissIndex(header["kind"], header["dim"], raw, nprobe=header["nprobe"],
                      ef_search=header["ef_search"], rerank=rerank,
                      rerank_factor=header["rerank_factor"], use_gpu=use_gpu,
                      removed=dead, meta=header["meta"])

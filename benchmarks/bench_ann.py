"""A library's ANN index vs exact search: latency, recall@10, build and open cost, memory.

Everything goes through the project's real code: a format-2 library is written on disk
(mapped columns), opened with `Library`, indexed with `LibraryANN` (core/library/index.py)
and searched as the app searches; the exact baseline is `ExactIndex` on the same library.

Synthetic vectors made as hard as CLIP features: anisotropic (a random rotation of a
1/i^0.8 spectrum), a shared mean direction (CLIP's embedding cone), thousands of clusters
with Zipf-uneven sizes, L2-normalised. Queries come from a SHIFTED distribution (a common
offset, like CLIP's text/image modality gap, plus noise) and are never database rows.
open_s is what opening the library costs once its index exists: Library(...) + loading the
saved index (library_open_s: the Library part alone).

    python benchmarks/bench_ann.py --rows 1000000 [--index ivf|hnsw|ivfpq|auto] [--json]

With --json the last stdout line is one JSON object: rows, index, p50_ms, p95_ms,
recall_at_10, exact_p50_ms, open_s, build_s, rss_gib (+ dim, queries, parameters).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from core.library.ann import choose_kind  # noqa: E402
from core.library.index import ExactIndex, LibraryANN  # noqa: E402
from core.library.store import Library  # noqa: E402
from core.settings import pick_runtime  # noqa: E402
from synthetic import write_library  # noqa: E402

MODEL = "bench-synthetic"

CHUNK = 131_072          # rows generated / scanned at a time: 256 MiB of float32 at D=512
SPECTRUM_POWER = 0.8     # eigenvalue i ~ 1/i^0.8: a few strong directions, a long tail
CLUSTER_SPREAD = 0.9     # within-cluster noise relative to the spread of cluster centres
CONE = 1.0               # shared mean direction, relative to the centres' spread
GAP = 3.0                # query offset (modality gap), relative to the centres' spread: top-1
                         # cosine ~0.56, as far from the data as text is from CLIP images
QUERY_NOISE = 1.5


class Synth:
    """One random 'world': basis, spectrum, clusters, cone and gap directions."""

    def __init__(self, dim: int, rows: int, seed: int):
        self.rng = np.random.default_rng(seed)
        self.dim = dim
        basis, _ = np.linalg.qr(self.rng.standard_normal((dim, dim)))
        scale = 1.0 / np.arange(1, dim + 1) ** (SPECTRUM_POWER / 2)  # sqrt of eigenvalues
        self.shape = (scale[:, None] * basis.T).astype(np.float32)  # z @ shape: anisotropic
        n_clusters = int(np.clip(rows // 300, 16, 4000))
        self.centres = self.draw(n_clusters)
        sizes = 1.0 / np.arange(1, n_clusters + 1) ** 1.1  # Zipf: a few huge clusters
        self.weights = self.rng.permutation(sizes / sizes.sum())
        spread = float(np.linalg.norm(self.centres, axis=1).mean())
        self.cone = self._direction() * spread * CONE
        self.gap = self._direction() * spread * GAP

    def draw(self, n: int) -> np.ndarray:
        return self.rng.standard_normal((n, self.dim), dtype=np.float32) @ self.shape

    def _direction(self) -> np.ndarray:
        v = self.draw(1)[0]
        return v / np.linalg.norm(v)

    def rows(self, n: int) -> np.ndarray:
        which = self.rng.choice(len(self.centres), n, p=self.weights)
        return _normalise(self.centres[which] + self.cone + CLUSTER_SPREAD * self.draw(n))

    def queries(self, n: int) -> np.ndarray:
        which = self.rng.choice(len(self.centres), n, p=self.weights)
        x = self.centres[which] + self.cone + self.gap + QUERY_NOISE * self.draw(n)
        return _normalise(x)


def _normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def exact_top(feats, queries: torch.Tensor, k: int) -> torch.Tensor:
    """Ground truth: chunked matmul + running topk over the memmap -> row ids [Q, k]."""
    best_s = torch.full((len(queries), k), -float("inf"))
    best_i = torch.full((len(queries), k), -1, dtype=torch.int64)
    for start in range(0, len(feats), CHUNK):
        part = feats[start:start + CHUNK].float()
        s, i = (queries @ part.T).topk(min(k, len(part)), dim=1)
        both_s, both_i = torch.cat([best_s, s], 1), torch.cat([best_i, i + start], 1)
        best_s, order = both_s.topk(k, dim=1)
        best_i = both_i.gather(1, order)
    return best_i


def timed_searches(index, queries: torch.Tensor) -> tuple[list[float], torch.Tensor]:
    """One query at a time, as a user's search runs; returns (ms per query, ids [Q, 10])."""
    times, found = [], []
    for q in queries:
        start = time.perf_counter()
        _, ids = index.search(q[None], 10)
        times.append((time.perf_counter() - start) * 1000)
        found.append(torch.nn.functional.pad(ids[0], (0, 10 - ids.shape[1]), value=-1))
    return times, torch.stack(found)


def recall_at_10(found: torch.Tensor, truth: torch.Tensor) -> float:
    hits = [len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth)]
    return float(np.mean(hits)) / 10


def run(args) -> dict:
    kind = choose_kind(args.rows) if args.index == "auto" else args.index
    if kind == "exact":
        kind = "ivf"  # auto below the threshold: still benchmark the ANN path
    opts = {k: v for k, v in (("nprobe", args.nprobe), ("ef_search", args.ef_search)) if v}
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        root = Path(tmp) / "library"
        synth = Synth(args.dim, args.rows, args.seed)
        chunks = (torch.from_numpy(synth.rows(min(CHUNK, args.rows - s))) for s in range(0, args.rows, CHUNK))
        write_library(root, MODEL, chunks, args.rows, args.dim, args.dtype)
        queries = torch.from_numpy(synth.queries(args.queries))
        library = Library(root, MODEL, args.dim)
        truth = exact_top(library.view().base, queries, 10)
        exact_ms, _ = timed_searches(ExactIndex(library, pick_runtime("cpu")), queries[:args.exact_queries or None])

        start = time.perf_counter()
        built = LibraryANN.build(library, kind, **opts)
        build_s = time.perf_counter() - start
        built.save()
        del built, library

        start = time.perf_counter()
        library = Library(root, MODEL, args.dim)
        library_open_s = time.perf_counter() - start
        index = LibraryANN.open(library, kind)
        open_s = time.perf_counter() - start
        ann = index.index
        for attr, value in opts.items():
            setattr(ann, attr, value)
        sweep = _sweep(index, queries, truth, args.sweep) if args.sweep else None
        if args.sweep and args.sweep_parallel and kind != "hnsw":   # one query on both cores: faiss splits its cells
            import faiss
            faiss.extract_index_ivf(ann._index).parallel_mode = 1
            sweep += [{**row, "parallel_mode": 1} for row in _sweep(index, queries, truth, args.sweep)]
            faiss.extract_index_ivf(ann._index).parallel_mode = 0
        times, found = timed_searches(index, queries)
        return {"rows": args.rows, "index": kind, "dim": args.dim, "queries": args.queries,
                "p50_ms": _pct(times, 50), "p95_ms": _pct(times, 95),
                "recall_at_10": round(recall_at_10(found, truth), 4),
                "exact_p50_ms": _pct(exact_ms, 50), "open_s": round(open_s, 3),
                "library_open_s": round(library_open_s, 3),
                "build_s": round(build_s, 2), "rss_gib": _rss_gib(),
                "nprobe": ann.nprobe if kind != "hnsw" else None,
                "ef_search": ann.ef_search if kind == "hnsw" else None,
                "dtype": args.dtype, "load": [round(x, 2) for x in os.getloadavg()], "sweep": sweep}


def _sweep(index, queries, truth, values: str) -> list[dict]:
    """Recall and latency at several nprobe / ef_search values, default restored after."""
    ann = index.index
    attr = "ef_search" if index.kind == "hnsw" else "nprobe"
    default, out = getattr(ann, attr), []
    for v in (int(x) for x in values.split(",")):
        setattr(ann, attr, v)
        times, found = timed_searches(index, queries)
        out.append({attr: v, "p50_ms": _pct(times, 50), "p95_ms": _pct(times, 95), "recall_at_10":
                    round(recall_at_10(found, truth), 4), "load": round(os.getloadavg()[0], 2)})
    setattr(ann, attr, default)
    return out


def _pct(times: list[float], q: int) -> float:
    return round(float(np.percentile(times, q)), 3)


def _rss_gib() -> float:
    # Linux reports ru_maxrss in KiB: the peak, i.e. what the machine had to have.
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--index", default="auto", choices=["auto", "ivf", "hnsw", "ivfpq", "ivfsq"])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--exact-queries", type=int, default=0, help="time exact on the first N")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--nprobe", type=int, default=0, help="override the index default")
    ap.add_argument("--ef-search", type=int, default=0, help="override the index default")
    ap.add_argument("--sweep", default="", help="comma list of nprobe / ef_search to try")
    ap.add_argument("--sweep-parallel", action="store_true",
                    help="repeat the sweep with faiss splitting one query's cells over the cores")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16"],
                    help="feature file dtype (float16 halves disk for 10M rows)")
    ap.add_argument("--tmp", default=os.environ.get("TMPDIR"), help="where features go")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    result = run(args)
    if args.json:
        print(json.dumps(result))
        return
    for row in result.pop("sweep") or []:
        print("  sweep", row)
    for key, value in result.items():
        print(f"{key:>14}  {value}")


if __name__ == "__main__":
    main()

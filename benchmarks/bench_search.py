"""Query latency: the resident exact index against a bare matmul + topk, and the project's
cached query path against the naive demo loop.

Resident index (always): the project's `ExactIndex` (core/library/exact.py) over a real
format-2 library of --rows synthetic rows (generated on the device in chunks, written to disk
a chunk at a time; float16 on CUDA, float32 on the CPU), one query at a time, against a bare
`matmul` + `topk` over the very same resident matrix in the same process (the index's own
device copy, so the GPU holds the rows once: 10M x 512 fp16 = 10 GB). Also the whole
`Searcher.search_vector` path (library refresh, index, hits named from the library) and the
bare matrix-vector product alone, with the memory bandwidth it reaches. Variants interleaved
query by query; p50 over --queries queries; ratio = bare p50 / project p50 (1.0: no overhead).

Text and zero-shot (on the CPU by default; --text on CUDA, needs the `clip` package):
naive baseline (common in student demos): per query, torch.load the feature file, normalise
it, encode the text, full argsort. The project: features resident, query embedding cached on
repeat, topk instead of a full sort. Zero-shot: cached class matrix vs re-encoding every
prompt per request. Random ViT-B/32-sized CLIP (timing does not depend on the weights).

    python benchmarks/bench_search.py [--rows 100000] [--queries 20]
    python benchmarks/bench_search.py --device cuda --rows 10000000 [--queries 200]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic import write_library  # noqa: E402
from core.library.store import SNAPSHOT_NAME, Library  # noqa: E402
from core.library.index import ExactIndex  # noqa: E402
from core.library.search import Searcher, SearchQuery  # noqa: E402
from core.settings import pick_runtime  # noqa: E402

QUERIES = ["a cat on a sofa", "a red car", "一只猫", "mountains at sunset", "a bowl of soup"]
DIM = 512
GEN_CHUNK = 262_144   # rows generated on the device at a time


def per_call(fn, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - start) / n


def device_rows(runtime, rows: int, seed: int = 0):
    """Normalised random rows [n, D], made on the runtime's device a chunk at a time, moved to the
    host one chunk at a time (the library's writer puts each on disk before the next is made)."""
    g = torch.Generator(device=runtime.device).manual_seed(seed)
    for start in range(0, rows, GEN_CHUNK):
        x = torch.randn(min(GEN_CHUNK, rows - start), DIM, device=runtime.device, generator=g)
        yield F.normalize(x, dim=-1).to(runtime.dtype).cpu()


def _sync(runtime) -> None:
    if runtime.is_cuda:
        torch.cuda.synchronize(runtime.device)


def _load() -> str:
    return "load average " + " / ".join(f"{x:.2f}" for x in os.getloadavg())


def resident_index(args, runtime) -> None:
    """The project's exact index vs a bare matmul + topk over the same resident rows."""
    k = 10
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        root = Path(tmp) / "lib"
        dtype = "float16" if runtime.is_cuda else "float32"
        start = time.perf_counter()
        write_library(root, "bench", device_rows(runtime, args.rows), args.rows, DIM, dtype)
        write_s = time.perf_counter() - start
        lib = Library(root, "bench", DIM)
        index = ExactIndex(lib, runtime)
        searcher = Searcher(None, lib, index)      # search_vector needs no encoder
        queries = F.normalize(torch.randn(args.queries, DIM, generator=torch.Generator().manual_seed(1)), dim=-1)
        start = time.perf_counter()
        index.search(queries[:1], k)               # uploads the rows (CUDA) / maps them (CPU)
        _sync(runtime)
        upload_s = time.perf_counter() - start
        matrix, _ = index.resident()

        def bare(q):
            s, i = (q.to(matrix.device, matrix.dtype)[None] @ matrix.T).topk(k, dim=-1)
            return s.float().cpu(), i.cpu()

        def matmul_only(q):
            (q.to(matrix.device, matrix.dtype)[None] @ matrix.T).sum()   # scalar: no topk, a tiny read
            _sync(runtime)

        variants = {"bare matmul + topk": bare, "project ExactIndex.search": lambda q: index.search(q[None], k),
                    "project Searcher.search_vector": lambda q: searcher.search_vector(q, k),
                    "matmul alone": matmul_only}
        for q in queries[:3]:                       # warm-up: kernels chosen, caches filled
            for fn in variants.values():
                fn(q)
        _check_same(bare, index, queries[:5], k)
        times = {name: [] for name in variants}
        with torch.inference_mode():
            for q in queries:                       # interleaved, query by query
                for name, fn in variants.items():
                    _sync(runtime)
                    t = time.perf_counter()
                    fn(q)
                    times[name].append((time.perf_counter() - t) * 1e3)
        _report(args, runtime, times, matrix, write_s, upload_s)


def _check_same(bare, index, queries, k) -> None:
    """The index must find what the bare scan finds (same rows, same order up to fp16 ties)."""
    for q in queries:
        s_bare, i_bare = bare(q)
        s_ours, ids = index.search(q[None], k)
        if set(i_bare[0].tolist()) != set(ids[0].tolist()) and not torch.allclose(s_bare, s_ours, atol=1e-3):
            raise SystemExit(f"the index and the bare scan disagree: {i_bare[0].tolist()} vs {ids[0].tolist()}")


def _report(args, runtime, times, matrix, write_s, upload_s) -> None:
    p50 = {name: statistics.median(ts) for name, ts in times.items()}
    p95 = {name: sorted(ts)[int(0.95 * (len(ts) - 1))] for name, ts in times.items()}
    gib = matrix.numel() * matrix.element_size() / 2**30
    base = p50["bare matmul + topk"]
    print(f"device: {runtime.describe()}; {_load()}")
    print(f"{args.rows:,} rows x {DIM} {str(matrix.dtype).replace('torch.', '')} resident ({gib:.2f} GiB); "
          f"library written in {write_s:.1f} s, first search (upload/map) {upload_s:.2f} s; {args.queries} queries, k=10")
    if runtime.is_cuda:
        print(f"GPU memory: peak allocated {torch.cuda.max_memory_allocated(runtime.device) / 2**30:.2f} GiB")
    print("\n| search, one query at a time | p50 (ms) | p95 (ms) | bare / this |")
    print("|---|---:|---:|---:|")
    for name in times:
        print(f"| {name} | {p50[name]:.3f} | {p95[name]:.3f} | {base / p50[name]:.2f} |")
    gbps = matrix.numel() * matrix.element_size() / (p50["matmul alone"] / 1e3) / 1e9
    print(f"\nmatmul alone reads the matrix at {gbps:.0f} GB/s")
    print(f"RESULT rows={args.rows} device={runtime.device.type} bare_p50_ms={base:.3f} "
          f"index_p50_ms={p50['project ExactIndex.search']:.3f} index_vs_bare={base / p50['project ExactIndex.search']:.3f} "
          f"searcher_vs_bare={base / p50['project Searcher.search_vector']:.3f}")


def text_and_zeroshot(args, runtime) -> None:
    import clip
    from bench_library_add import synthetic_library
    from bench_text_trim import random_b32
    from core.zeroshot import ZeroShotClassifier, load_labelset, load_templates
    enc = random_b32(runtime, "bench")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "lib"
        synthetic_library(root, args.rows)
        lib = Library(root, "bench", 512)
        lib.flush()   # the naive demo reads the one feature file
        searcher = Searcher(enc, lib, ExactIndex(lib, runtime))

        def naive(i):
            snap = torch.load(root / SNAPSHOT_NAME, weights_only=True)
            feats = F.normalize(snap["features"], dim=-1)
            q = F.normalize(enc.model.encode_text(clip.tokenize([QUERIES[i % 5]]).to(runtime.device)).float().cpu(), dim=-1)
            (feats @ q[0]).argsort(descending=True)[:10]

        with torch.inference_mode():
            t_naive = per_call(naive, max(3, args.queries // 4))
        searcher.search(SearchQuery(text=QUERIES[0]))   # warm the device copy
        t_ours = per_call(lambda i: searcher.search(SearchQuery(text=QUERIES[i % 5], k=10, use_captions=False)), args.queries)
    print(f"device: {runtime.describe()}")
    print("\n| what | naive (ms) | project (ms) | naive / project |")
    print("|---|---:|---:|---:|")
    print(f"| text query, {args.rows:,} rows, 5 distinct queries repeated | {t_naive * 1e3:.1f} | {t_ours * 1e3:.1f} | {t_naive / t_ours:.1f}x |")

    labels, templates = load_labelset("cifar100"), load_templates("selected7")
    image = Image.new("RGB", (224, 224), (120, 80, 40))
    clf = ZeroShotClassifier(enc)
    clf.classify(image, labels, templates)               # builds and caches the class matrix once
    t_cached = per_call(lambda i: clf.classify(image, labels, templates), 5)
    t_fresh = per_call(lambda i: ZeroShotClassifier(enc).classify(image, labels, templates), 2)
    print(f"| zero-shot, CIFAR-100 x 7 templates, per image | {t_fresh * 1e3:.0f} | {t_cached * 1e3:.0f} | {t_fresh / t_cached:.1f}x |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--text", action=argparse.BooleanOptionalAction, default=None,
                    help="also the text-query and zero-shot rows (default: on the CPU only)")
    ap.add_argument("--tmp", default=os.environ.get("TMPDIR"), help="where the library is written")
    args = ap.parse_args()
    runtime = pick_runtime(args.device)
    resident_index(args, runtime)
    if args.text if args.text is not None else not runtime.is_cuda:
        print()
        text_and_zeroshot(args, runtime)


if __name__ == "__main__":
    main()

"""Query latency: the project's resident exact index and cached queries vs the naive demo loop.

Naive baseline (common in student demos): per query, torch.load the feature file, normalise
it, encode the text, full argsort. The project: features resident (and on the GPU when there
is one), query embedding cached on repeat, topk instead of a full sort.
Also zero-shot: cached class matrix vs re-encoding every prompt per request.
Random ViT-B/32-sized CLIP (timing does not depend on the weights); synthetic library rows.

    python benchmarks/bench_search.py [--rows 100000] [--queries 20]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_library_add import synthetic_library  # noqa: E402
from bench_text_trim import random_b32  # noqa: E402
from core.library.store import SNAPSHOT_NAME, Library  # noqa: E402
from core.library.index import ExactIndex  # noqa: E402
from core.library.search import Searcher, SearchQuery  # noqa: E402
from core.settings import pick_runtime  # noqa: E402
from core.zeroshot import ZeroShotClassifier, load_labelset, load_templates  # noqa: E402

QUERIES = ["a cat on a sofa", "a red car", "一只猫", "mountains at sunset", "a bowl of soup"]


def per_call(fn, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - start) / n


def main() -> None:
    import clip
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    runtime = pick_runtime(args.device)
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


if __name__ == "__main__":
    main()

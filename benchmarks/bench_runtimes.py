"""Encoder runtimes side by side on a CPU (issue 12): torch fp32 vs ONNX Runtime fp32 / int8,
and the text-query latency they give the search path. Variants are interleaved in one process
(round-robin, repeated) so machine load hits them alike; medians are reported.

Random ViT-B/32-sized CLIP (the speed does not depend on the weights; int8 *quality* on real
weights cannot be judged from random ones, so the cosines here say nothing about a real model).

    python benchmarks/bench_runtimes.py [--rounds 5] [--rows 10000] [--queries 30]
"""
from __future__ import annotations

import argparse
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
from bench_library_add import synthetic_library  # noqa: E402
from bench_text_trim import random_b32  # noqa: E402
from core.library.search import Searcher, SearchQuery  # noqa: E402
from core.library.store import Library  # noqa: E402
from core.models.onnx_runtime import export_towers  # noqa: E402
from core.models.openai_clip import _onnx_clip, clip_onnx_towers  # noqa: E402
from core.settings import pick_runtime  # noqa: E402

WORDS = "cat dog red car beach sunset mountain city street old building bowl soup child bird".split()


def distinct_queries(n: int) -> list[str]:
    """n different 3-8 word queries (distinct: the query cache never answers)."""
    g = torch.Generator().manual_seed(0)
    return [" ".join(WORDS[j] for j in torch.randint(len(WORDS), (3 + i % 6,), generator=g)) + f" {i}" for i in range(n)]


def median_ms(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main() -> None:
    import clip
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--queries", type=int, default=30)
    args = ap.parse_args()
    cpu = pick_runtime("cpu")
    torch_enc = random_b32(cpu, "bench")
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        meta = export_towers(clip_onnx_towers(torch_enc.model), Path(tmp) / "onnx")
        export_s = time.perf_counter() - t
        encs = {"torch fp32": torch_enc,
                "ONNX Runtime fp32": _onnx_clip(Path(tmp) / "onnx", meta, "bench", pick_runtime("cpu", "onnx")),
                "ONNX Runtime int8": _onnx_clip(Path(tmp) / "onnx", meta, "bench", pick_runtime("cpu", "onnx-int8"))}
        pixels = torch.stack([torch_enc.preprocess(Image.new("RGB", (320, 240), (i * 15, 90, 200 - i * 9)))
                              for i in range(16)])
        text = ["a photo of a tabby cat on a sofa"]   # 9 tokens with start and end
        ref_img, ref_txt = torch_enc.encode_pixels(pixels), torch_enc.encode_texts(text)
        img_ms = {k: [] for k in encs}
        txt_ms = {k: [] for k in encs}
        cos = {}
        for name, enc in encs.items():   # warm-up (sessions open, int8 made) and agreement
            cos[name] = (float((enc.encode_pixels(pixels) * ref_img).sum(-1).min()),
                         float((enc.encode_texts(text) * ref_txt).sum(-1).min()))
        for _ in range(args.rounds):     # interleaved
            for name, enc in encs.items():
                img_ms[name].append(median_ms(lambda: enc.encode_pixels(pixels), 1))
                txt_ms[name].append(median_ms(lambda: enc.encode_texts(text), 5))
        print(f"device: {cpu.describe()}; ONNX export of both towers {export_s:.0f} s (once per model)\n")
        print("| runtime | image batch 16 (img/s) | text, 9 tokens (ms) | cosine vs torch (image / text) |")
        print("|---|---:|---:|---:|")
        for name in encs:
            print(f"| {name} | {16e3 / statistics.median(img_ms[name]):.1f} | {statistics.median(txt_ms[name]):.1f} "
                  f"| {cos[name][0]:.4f} / {cos[name][1]:.4f} |")

        root = Path(tmp) / "lib"
        synthetic_library(root, args.rows)
        lib = Library(root, "bench", 512)
        queries = distinct_queries(args.queries)
        feats = F.normalize(lib.features, dim=-1)

        def naive(q):   # tokenize + full 77-token encode + matmul + sort
            with torch.inference_mode():
                v = F.normalize(torch_enc.model.encode_text(clip.tokenize([q])).float(), dim=-1)[0]
                (feats @ v).topk(10)
        rows = {}
        searchers = {k: Searcher(encs[k], lib) for k in ("torch fp32", "ONNX Runtime fp32")}
        for s in searchers.values():
            s.search(SearchQuery(text="warm up", k=10))
        dist = {k: [] for k in ["naive", *searchers]}
        rep = {k: [] for k in searchers}
        for i in range(args.queries):    # interleaved, each query new to every variant
            dist["naive"].append(median_ms(lambda: naive(queries[i]), 1))
            for k, s in searchers.items():
                dist[k].append(median_ms(lambda: s.search(SearchQuery(text=queries[i], k=10)), 1))
                rep[k].append(median_ms(lambda: s.search(SearchQuery(text=queries[i], k=10)), 1))
        print(f"\n| text query, {args.rows:,} rows, {args.queries} distinct 3-8 word queries | p50 distinct (ms) "
              "| p50 repeated (ms) |")
        print("|---|---:|---:|")
        print(f"| naive: tokenize + full 77-token encode + matmul | {statistics.median(dist['naive']):.1f} | — |")
        for k in searchers:
            print(f"| project, {k} | {statistics.median(dist[k]):.1f} | {statistics.median(rep[k]):.2f} |")


if __name__ == "__main__":
    main()

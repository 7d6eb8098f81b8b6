"""A distinct short text query (3-8 words) on the ONNX text path vs tokenize + full 77-token torch encode.

What a search pays for a query it has not seen (the query cache answers repeats): the project's
`OnnxEncoder.encode_texts([q])` (tokens cut after the end-of-text token, ONNX Runtime fp32)
against the naive `clip.tokenize([q], truncate=True)` + `model.encode_text` over all 77
positions on torch, interleaved query by query in one process; every query new to both. The
project's call is also split into its parts (tokenisation, the session run) to show its fixed
cost. Random ViT-B/32-sized CLIP (timing does not depend on the weights); the features of both
sides are compared (they must agree within float rounding).

    python benchmarks/bench_short_query.py [--queries 60]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_runtimes import distinct_queries  # noqa: E402
from bench_text_trim import random_b32  # noqa: E402
from core.models.onnx_runtime import export_towers  # noqa: E402
from core.models.openai_clip import _onnx_clip, clip_onnx_towers, clip_tokens  # noqa: E402
from core.settings import pick_runtime  # noqa: E402


def _ms(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def _load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    import clip
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=60)
    args = ap.parse_args()
    torch_enc = random_b32(pick_runtime("cpu"), "bench")
    model = torch_enc.model
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        meta = export_towers(clip_onnx_towers(model), Path(tmp) / "onnx")
        export_s = time.perf_counter() - start
        enc = _onnx_clip(Path(tmp) / "onnx", meta, "bench", pick_runtime("cpu", "onnx"))
        queries = distinct_queries(args.queries + 3)
        session = enc.session("text")

        @torch.inference_mode()
        def naive(q):
            return F.normalize(model.encode_text(clip.tokenize([q], truncate=True)).float(), dim=-1)

        diff = max(float((enc.encode_texts([q]) - naive(q)).abs().max()) for q in queries[:3])   # + warm-up
        times = {"naive": [], "project": [], "tokenise": [], "session run": []}
        load_before = _load()
        for q in queries[3:]:          # interleaved; each query new to every side
            tokens = np.ascontiguousarray(clip_tokens([q]).numpy())
            times["naive"].append(_ms(lambda: naive(q)))
            times["project"].append(_ms(lambda: enc.encode_texts([q])))
            times["tokenise"].append(_ms(lambda: clip_tokens([q])))
            times["session run"].append(_ms(lambda: session.run(None, {"tokens": tokens})))
        p50 = {k: statistics.median(v) for k, v in times.items()}
    print(f"ONNX export of both towers {export_s:.0f} s (once per model); load average before {load_before}, "
          f"after {_load()}; {args.queries} distinct 3-8 word queries, one at a time\n")
    print("| what | p50 (ms) | p95 (ms) |")
    print("|---|---:|---:|")
    for k, v in times.items():
        print(f"| {k} | {p50[k]:.2f} | {sorted(v)[int(0.95 * (len(v) - 1))]:.2f} |")
    print(f"\nnaive / project: {p50['naive'] / p50['project']:.2f}x; max abs difference of the features {diff:.1e}")


if __name__ == "__main__":
    main()

"""Indexing throughput end to end (issue 12): the project's pipelined ingest vs the encoder alone
on pre-decoded batches (the ceiling) and a naive per-image loop, for each runtime, in one process.

The pipeline decodes (JPEG draft mode), hashes and preprocesses batch i+1 in threads while batch
i is encoded, and stores batch i-1 (journal + thumbnails) on a writer thread. Goal: >= 0.85 of
the model-alone rate with the same runtime. Random ViT-B/32-sized CLIP (speed does not depend on
the weights); synthetic 1024x768 JPEGs (smooth gradients + noise, ~150-250 KB each).

    python benchmarks/bench_ingest.py [--images 192] [--runtimes torch,onnx] [--batch 64]
"""
from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_text_trim import random_b32  # noqa: E402
from core.images import decode_image  # noqa: E402
from core.library.ingest import ingest, open_library  # noqa: E402
from core.library.store import NewImage  # noqa: E402
from core.models.onnx_runtime import export_towers  # noqa: E402
from core.models.openai_clip import _onnx_clip, clip_onnx_towers  # noqa: E402
from core.settings import pick_runtime  # noqa: E402


def make_jpegs(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:768, 0:1024]
    paths = []
    for i in range(n):
        base = np.stack([(x * (i % 7 + 1)) % 256, (y * (i % 5 + 1)) % 256, ((x + y) * (i % 3 + 1)) % 256], -1)
        arr = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        path = folder / f"photo_{i:04d}.jpg"
        Image.fromarray(arr).save(path, quality=90)
        paths.append(path)
    return paths


def model_alone(enc, paths: list[Path], batch: int) -> float:
    """img/s of encode_pixels on batches decoded and preprocessed beforehand (not timed)."""
    pixels = torch.stack([enc.preprocess(decode_image(p.read_bytes(), p.name)) for p in paths])
    start = time.perf_counter()
    for i in range(0, len(pixels), batch):
        enc.encode_pixels(pixels[i:i + batch])
    return len(paths) / (time.perf_counter() - start)


def project(enc, paths: list[Path], batch: int, root: Path) -> float:
    lib = open_library(root, enc)
    report = ingest(lib, enc, paths, batch_size=batch)
    assert len(report.added) == len(paths), report.summary()
    return len(paths) / report.seconds


def naive(enc, paths: list[Path], root: Path) -> float:
    """One image at a time: read, full decode, preprocess, encode, add (as student demos do)."""
    import hashlib
    lib = open_library(root, enc)
    start = time.perf_counter()
    for p in paths:
        data = p.read_bytes()
        img = Image.open(io.BytesIO(data)).convert("RGB")
        vec = enc.encode_pixels(enc.preprocess(img)[None])[0]
        lib.add([NewImage(data, hashlib.sha256(data).hexdigest(), ".jpg", vec, {"name": p.name})])
    return len(paths) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=192)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--runtimes", default="torch,onnx")
    ap.add_argument("--naive", type=int, default=64, help="images for the (slow) naive loop")
    args = ap.parse_args()
    torch_enc = random_b32(pick_runtime("cpu"), "bench")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = make_jpegs(tmp / "jpegs", args.images)
        encs = {}
        for name in args.runtimes.split(","):
            if name == "torch":
                encs[name] = torch_enc
            else:
                meta = export_towers(clip_onnx_towers(torch_enc.model), tmp / "onnx")
                encs[name] = _onnx_clip(tmp / "onnx", meta, "bench", pick_runtime("cpu", name))
                encs[name].encode_pixels(torch.zeros(1, 3, 224, 224))   # open the session
        print(f"device: {pick_runtime('cpu').describe()}; {args.images} JPEGs 1024x768, batch {args.batch}\n")
        print("| runtime | model alone, pre-decoded (img/s) | project end to end (img/s) | ratio | "
              f"naive per-image loop, {args.naive} images (img/s) |")
        print("|---|---:|---:|---:|---:|")
        for name, enc in encs.items():   # interleaved per runtime: alone, project, naive back to back
            alone = model_alone(enc, paths, args.batch)
            ours = project(enc, paths, args.batch, tmp / f"lib-{name}")
            slow = naive(enc, paths[:args.naive], tmp / f"naive-{name}")
            print(f"| {name} | {alone:.2f} | {ours:.2f} | {ours / alone:.2f} | {slow:.2f} |", flush=True)


if __name__ == "__main__":
    main()

"""Cost of adding one image to libraries of 1k, 100k and 1M rows.

The library appends one journal record per batch (fsync'd) and never rewrites the feature
matrix; the naive baseline found in student demos does `torch.cat` + `torch.save` of the
whole matrix on every add. Both run here on the same synthetic libraries (D = 512, random
unit vectors) and the same small PNGs, and the ratio is printed.

    python benchmarks/bench_library_add.py [--sizes 1000 100000 1000000] [--adds 50]
"""
from __future__ import annotations

import argparse
import hashlib
import io
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from core.library.store import Library, NewImage  # noqa: E402
from synthetic import random_vectors, write_library  # noqa: E402

DIM = 512


def synthetic_library(root: Path, n: int) -> None:
    """A library of n rows written straight as a snapshot (images are not needed to time adds)."""
    write_library(root, "bench", random_vectors(n, DIM), n, DIM)


def new_images(count: int, seed: int) -> list[NewImage]:
    out = []
    for i in range(count):
        buf = io.BytesIO()
        Image.new("RGB", (64, 48), ((i * 37) % 256, (seed * 91) % 256, (i * 53) % 256)).save(buf, "PNG")
        data = buf.getvalue()
        vec = torch.nn.functional.normalize(torch.randn(DIM), dim=0)
        out.append(NewImage(data, hashlib.sha256(data).hexdigest(), ".png", vec, {"name": f"new{i}.png"}))
    return out


def time_library_adds(root: Path, adds: int) -> float:
    lib = Library(root, "bench", DIM)
    images = new_images(adds, seed=len(lib) % 251)
    start = time.perf_counter()
    for img in images:
        lib.add([img])                      # one image per add: the worst case for the journal
    return (time.perf_counter() - start) / adds


def time_naive_adds(root: Path, n: int, adds: int) -> float:
    """torch.cat + torch.save of the whole matrix per add (what this project never does)."""
    feats = torch.nn.functional.normalize(torch.randn(n, DIM), dim=-1)
    names = [f"{i}.jpg" for i in range(n)]
    path = root / "naive_features.pth"
    start = time.perf_counter()
    for img in new_images(adds, seed=7):
        feats = torch.cat([feats, img.vector[None]])
        names.append(img.meta["name"])
        torch.save({"features": feats, "files": names}, path)
    return (time.perf_counter() - start) / adds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000, 100_000, 1_000_000])
    ap.add_argument("--adds", type=int, default=50)
    ap.add_argument("--naive-adds", type=int, default=3)
    args = ap.parse_args()
    rows = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parent.parent) as tmp:
            root = Path(tmp)
            synthetic_library(root / "lib", n)
            ours = time_library_adds(root / "lib", args.adds)
            naive = time_naive_adds(root, n, args.naive_adds)
        rows.append((n, ours, naive))
        print(f"N={n:>9,}: library add {ours * 1e3:8.2f} ms/image   naive cat+save {naive * 1e3:10.1f} ms/image   "
              f"ratio {naive / ours:8.1f}x", flush=True)
    print("\n| rows N | library add (ms/image) | naive cat+save (ms/image) | naive / library |")
    print("|---:|---:|---:|---:|")
    for n, ours, naive in rows:
        print(f"| {n:,} | {ours * 1e3:.2f} | {naive * 1e3:.1f} | {naive / ours:.1f}x |")
    growth = rows[-1][1] / rows[0][1]
    print(f"\nper-add cost at N={rows[-1][0]:,} vs N={rows[0][0]:,}: {growth:.2f}x (flat = does not grow with N)")


if __name__ == "__main__":
    main()

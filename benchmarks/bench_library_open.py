"""Opening a library: format 2 (mapped columns) vs reading one torch pickle (format 1's way).

Format 1 opened by torch.load(weights_only=True) of features_library.pth (an N-item list of
file names, hashes and metadata dicts), then copied the matrix and built a row dict. Format 2
maps the column files and parses nothing per row. Both are timed in this process on the same
library: N synthetic rows; features_library.pth is written by `Library.flush()`, i.e. exactly
the pickle format 1 would have read (plus its ids). Peak RSS is reported for each, measured in
a child process so the two do not share a peak.

    python benchmarks/bench_library_open.py [--rows 1000000]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from core.library.store import SNAPSHOT_NAME, Library  # noqa: E402
from synthetic import random_vectors, write_library  # noqa: E402

DIM = 512
_CHILD = """
import json, sys, time
sys.path.insert(0, {root!r})
import torch
from core.library.store import Library
start = time.perf_counter()
if {how!r} == "columns":
    lib = Library({lib!r}, "bench", {dim})
    n = len(lib)
else:
    snap = torch.load({pth!r}, map_location="cpu", weights_only=True)
    feats = snap["features"].float().clone()                  # format 1 copied it into its buffer
    rows = {{s: i for i, s in enumerate(snap["sha256"])}}      # ... and built its row map
    n = len(snap["files"])
took = time.perf_counter() - start
hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM"))   # this process's own peak
print(json.dumps({{"s": took, "n": n, "rss_gib": int(hwm.split()[1]) / 2**20}}))
"""


def timed_open(how: str, lib: Path) -> dict:
    code = _CHILD.format(root=str(Path(__file__).resolve().parent.parent), how=how, lib=str(lib),
                         pth=str(lib / SNAPSHOT_NAME), dim=DIM)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parent.parent) as tmp:
        lib = Path(tmp) / "lib"
        write_library(lib, "bench", random_vectors(args.rows, DIM), args.rows, DIM)
        start = time.perf_counter()
        Library(lib, "bench", DIM).flush()
        flush_s = time.perf_counter() - start
        ours, naive = timed_open("columns", lib), timed_open("pickle", lib)
    assert ours["n"] == naive["n"] == args.rows
    print(f"| rows | open, format 2 (s) | open, one pickle (s) | pickle / format 2 | peak RSS format 2 / pickle (GiB) |")
    print("|---:|---:|---:|---:|---:|")
    print(f"| {args.rows:,} | {ours['s']:.3f} | {naive['s']:.1f} | {naive['s'] / ours['s']:.0f}x | "
          f"{ours['rss_gib']:.2f} / {naive['rss_gib']:.2f} |")
    print(f"\n(writing features_library.pth with flush(): {flush_s:.1f} s)")


if __name__ == "__main__":
    main()

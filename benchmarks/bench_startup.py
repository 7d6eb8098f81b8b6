"""Start-up of the command line (issue 12): `python -m core --help` and a warm `search` (model
exported and fingerprinted already) with ONNX Runtime vs torch, and the naive start that hashes
the whole checkpoint each time, subprocesses interleaved in one run (median of --repeats).

Random ViT-B/32-sized checkpoint written as a state dict (605 MB, as large as the real one).

    python benchmarks/bench_startup.py [--repeats 5]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_text_trim import B32  # noqa: E402
from core.models.fingerprint import _sha256  # noqa: E402


def run(args: list[str], env: dict) -> float:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr)
    return time.perf_counter() - start


def main() -> None:
    import clip
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        torch.save(clip.model.CLIP(**B32).state_dict(), tmp / "b32.pt")
        env = dict(os.environ, CLIP_WB_CACHE=str(tmp / "cache"), HF_HUB_OFFLINE="1")
        common = ["--model", str(tmp / "b32.pt"), "--library", str(tmp / "lib")]
        first = run(["index", str(ROOT / "assets" / "samples"), *common, "--runtime", "onnx", "--quiet"], env)
        cases = {"`--help`": ["--help"],
                 "`search`, --runtime onnx (warm cache)": ["search", "a red car", *common, "--runtime", "onnx"],
                 "`search`, --runtime torch": ["search", "a red car", *common, "--runtime", "torch"]}
        times: dict[str, list[float]] = {k: [] for k in cases}
        hashing = []
        for _ in range(args.repeats):   # interleaved
            for name, argv in cases.items():
                times[name].append(run(argv, env))
            start = time.perf_counter()
            _sha256(tmp / "b32.pt")     # what every start paid before the fingerprint cache
            hashing.append(time.perf_counter() - start)
    print(f"first run (export + fingerprint + index 14 images): {first:.1f} s\n")
    print("| command | median (s) |")
    print("|---|---:|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.2f} |")
    print(f"| (naive extra: SHA-256 of the 605 MB checkpoint per start) | {statistics.median(hashing):.2f} |")


if __name__ == "__main__":
    main()

"""Indexing throughput end to end (issues 12, 21): the project's ingest vs the encoder alone on
pre-decoded batches (the ceiling), a plain PyTorch DataLoader (the reference) and a naive
per-image loop, for each runtime, in one process.

- encoder alone: `encode_pixels` on batches decoded and preprocessed beforehand (not timed);
- DataLoader: `torch.utils.data.DataLoader` with --workers worker processes running CLIP's own
  preprocess (PIL decode, resize, crop, normalise), pinned memory on CUDA, feeding the same model;
- project: `core.library.ingest.ingest` into a fresh library (read, hash, decode, encode,
  journal with fsync, thumbnails), i.e. the path behind `python -m core index` and uploads;
- naive: read, full decode, preprocess, encode and add one image at a time (--naive 0 skips it).

The model is a randomly initialised CLIP of the --model's shape (speed does not depend on the
weights: nothing is downloaded); on CUDA it runs in the project's own precision (core/settings.py
`pick_runtime`: fp16). The images are synthetic JPEGs (smooth gradients + noise, seeded) written
to a temporary folder. With --json one JSON line is printed with at least encoder_alone_img_s,
dataloader_img_s, project_img_s, ratio (= project / encoder alone) and device, for the first
runtime; every runtime's numbers are under "runtimes".

    python benchmarks/bench_ingest.py [--device cpu|cuda] [--images 192] [--batch 64] [--runtimes torch,onnx]
        [--workers N] [--model vit-b-32|vit-b-16|tiny] [--size 640x480] [--seed 0] [--naive 64] [--repeats 1] [--json]
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from bench_text_trim import B32  # noqa: E402
from core.images import decode_image  # noqa: E402
from core.library.ingest import ingest, open_library  # noqa: E402
from core.library.store import NewImage  # noqa: E402
from core.models.onnx_runtime import export_towers  # noqa: E402
from core.models.openai_clip import ClipEncoder, _onnx_clip, clip_onnx_towers  # noqa: E402
from core.settings import pick_runtime  # noqa: E402
from tiny_models import CLIP_KW  # noqa: E402

MODELS = {"vit-b-32": B32,                                  # CLIP ViT-B/32's shapes (the issue's model)
          "vit-b-16": {**B32, "vision_patch_size": 16},     # 4x the image tokens of B/32
          "tiny": CLIP_KW}                                  # the tests' tiny CLIP (32 px): pipeline overhead only


def _make_jpeg(job: tuple[Path, int, int, int, int]) -> Path:
    folder, i, seed, width, height = job
    rng = np.random.default_rng([seed, i])   # per image: the same files whatever the number of processes
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([(x * (i % 7 + 1)) % 256, (y * (i % 5 + 1)) % 256, ((x + y) * (i % 3 + 1)) % 256], -1)
    arr = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    path = folder / f"photo_{i:05d}.jpg"
    Image.fromarray(arr).save(path, quality=90)
    return path


def make_jpegs(folder: Path, n: int, size: tuple[int, int] = (640, 480), seed: int = 0) -> list[Path]:
    """n synthetic JPEGs of `size` (width, height), the same bytes for the same seed."""
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(folder, i, seed, *size) for i in range(n)]
    with ProcessPoolExecutor(min(os.cpu_count() or 1, 16)) as pool:
        return list(pool.map(_make_jpeg, jobs, chunksize=16))


def random_clip(shape: str, runtime, seed: int = 0) -> ClipEncoder:
    """A randomly initialised CLIP of a MODELS shape behind the project's encoder (seeded);
    ClipEncoder moves it to the runtime's device and precision."""
    import clip
    torch.manual_seed(seed)
    return ClipEncoder(clip.model.CLIP(**MODELS[shape]), f"bench-{shape}", runtime)


def model_alone(enc, paths: list[Path], batch: int) -> float:
    """img/s of encode_pixels on batches decoded and preprocessed beforehand (not timed)."""
    pixels = torch.stack([enc.preprocess(decode_image(p.read_bytes(), p.name)) for p in paths])
    enc.encode_pixels(pixels[:batch])   # warm-up (CUDA kernels, allocator, ONNX session), not timed
    start = time.perf_counter()
    for i in range(0, len(pixels), batch):
        enc.encode_pixels(pixels[i:i + batch])   # returns on the CPU: the GPU's work is finished
    return len(paths) / (time.perf_counter() - start)


class _Files(torch.utils.data.Dataset):
    """The DataLoader reference's dataset: open, convert to RGB, CLIP's own preprocess."""

    def __init__(self, paths: list[Path], transform):
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        with Image.open(self.paths[i]) as img:
            return self.transform(img.convert("RGB"))


def dataloader(enc, paths: list[Path], batch: int, workers: int, image_size: int) -> float:
    """img/s of a plain DataLoader (worker processes, CLIP's preprocess) feeding encode_pixels;
    the workers' start is timed, as the project's pool start is."""
    import clip
    loader = torch.utils.data.DataLoader(_Files(paths, clip.clip._transform(image_size)), batch_size=batch,
                                         num_workers=workers, pin_memory=enc.runtime.is_cuda)
    start = time.perf_counter()
    for pixels in loader:
        enc.encode_pixels(pixels)
    return len(paths) / (time.perf_counter() - start)


def project(enc, paths: list[Path], batch: int, root: Path) -> float:
    lib = open_library(root, enc)
    report = ingest(lib, enc, paths, batch_size=batch)
    assert len(report.added) == len(paths), report.summary()
    return len(paths) / report.seconds


def naive(enc, paths: list[Path], root: Path) -> float:
    """One image at a time: read, full decode, preprocess, encode, add (as student demos do)."""
    lib = open_library(root, enc)
    start = time.perf_counter()
    for p in paths:
        data = p.read_bytes()
        img = Image.open(io.BytesIO(data)).convert("RGB")
        vec = enc.encode_pixels(enc.preprocess(img)[None])[0]
        lib.add([NewImage(data, hashlib.sha256(data).hexdigest(), ".jpg", vec, {"name": p.name})])
    return len(paths) / (time.perf_counter() - start)


def build_encoders(args, runtimes: dict, tmp: Path) -> dict:
    """One encoder per runtime (pick_runtime's choice of device and precision), the same random weights."""
    torch_enc = random_clip(args.model, pick_runtime(args.device, "torch"), args.seed)
    encs, meta = {}, None
    for name, runtime in runtimes.items():
        if name == "torch":
            encs[name] = torch_enc
            continue
        if meta is None:   # ONNX Runtime (CPU only): the same weights, exported once
            meta = export_towers(clip_onnx_towers(torch_enc.model), tmp / "onnx")
        encs[name] = _onnx_clip(tmp / "onnx", meta, f"bench-{args.model}", runtime)
        encs[name].encode_pixels(torch.zeros(1, 3, torch_enc.image_size, torch_enc.image_size))   # open the session
    return encs, torch_enc.image_size


def measure(enc, paths: list[Path], args, tmp: Path, name: str, image_size: int) -> dict:
    """One runtime's numbers: alone, DataLoader and project back to back, --repeats times
    (the median of each: on a shared machine the load moves between runs), then naive once."""
    runs = [(model_alone(enc, paths, args.batch), dataloader(enc, paths, args.batch, args.workers, image_size),
             project(enc, paths, args.batch, tmp / f"lib-{name}-{r}")) for r in range(args.repeats)]
    alone, loader, ours = (float(np.median(column)) for column in zip(*runs))
    row = {"encoder_alone_img_s": alone, "dataloader_img_s": loader, "project_img_s": ours}
    row["ratio"] = row["project_img_s"] / row["encoder_alone_img_s"]
    row["dataloader_ratio"] = row["dataloader_img_s"] / row["encoder_alone_img_s"]
    if args.naive:
        row["naive_img_s"] = naive(enc, paths[:args.naive], tmp / f"naive-{name}")
    return {k: float(f"{v:.4g}") for k, v in row.items()}   # 4 significant digits: the noise is larger


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (fails clearly when CUDA is absent)")
    ap.add_argument("--images", type=int, default=192)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--runtimes", default=None, help="comma separated: torch, onnx, onnx-int8 "
                                                     "(default torch,onnx on the CPU, torch on CUDA)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="DataLoader worker processes")
    ap.add_argument("--model", default="vit-b-32", choices=list(MODELS), help="random-weight CLIP shape (no download)")
    ap.add_argument("--size", default="640x480", help="JPEG width x height")
    ap.add_argument("--seed", type=int, default=0, help="seed of the images and the weights")
    ap.add_argument("--naive", type=int, default=64, help="images for the (slow) naive loop; 0 skips it")
    ap.add_argument("--repeats", type=int, default=1, help="runs of alone / DataLoader / project (medians reported)")
    ap.add_argument("--json", action="store_true", help="print one JSON line instead of the table")
    args = ap.parse_args(argv)
    if args.runtimes is None:
        args.runtimes = "torch" if args.device.startswith("cuda") else "torch,onnx"
    args.size = tuple(int(v) for v in args.size.lower().split("x"))
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        try:
            runtimes = {name: pick_runtime(args.device, name) for name in args.runtimes.split(",")}
        except ValueError as e:   # e.g. --device cuda without CUDA: pick_runtime's message says what to do
            print(f"error: {e}", file=sys.stderr)
            return 2
        paths = make_jpegs(tmp / "jpegs", args.images, args.size, args.seed)   # forked before CUDA starts
        encs, image_size = build_encoders(args, runtimes, tmp)
        mean_kb = sum(p.stat().st_size for p in paths) / len(paths) / 1024
        head = {"device": torch.device(args.device).type, "device_name": str(next(iter(encs.values())).runtime.describe()),
                "model": args.model, "images": args.images, "size": "x".join(map(str, args.size)),
                "mean_kb": round(mean_kb, 1), "batch": args.batch, "workers": args.workers, "repeats": args.repeats,
                "load_average": [round(v, 2) for v in os.getloadavg()]}
        if not args.json:
            print(f"device: {head['device_name']}; {args.images} JPEGs {head['size']} (~{mean_kb:.0f} KB), batch "
                  f"{args.batch}, DataLoader {args.workers} workers; load average {head['load_average']}\n")
            print("| runtime | encoder alone, pre-decoded (img/s) | DataLoader (img/s) | project end to end (img/s) "
                  f"| ratio | naive per-image loop, {args.naive} images (img/s) |")
            print("|---|---:|---:|---:|---:|---:|")
        rows = {}
        for name, enc in encs.items():   # interleaved per runtime: alone, DataLoader, project, naive back to back
            rows[name] = row = measure(enc, paths, args, tmp, name, image_size)
            if not args.json:
                print(f"| {name} | {row['encoder_alone_img_s']:.2f} | {row['dataloader_img_s']:.2f} | "
                      f"{row['project_img_s']:.2f} | {row['ratio']:.2f} | {row.get('naive_img_s', float('nan')):.2f} |",
                      flush=True)
        if args.json:
            first = next(iter(rows))
            print(json.dumps({**head, "runtime": first, **rows[first], "runtimes": rows,
                              "load_average_after": [round(v, 2) for v in os.getloadavg()]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

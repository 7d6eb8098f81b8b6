"""Single-process ingest vs the Ray Data job (core/scale) on the same images and model.

Both paths encode the same JPEG files with the same randomly initialised ViT-B/32-sized
CLIP (saved as a state-dict file, so Ray's encoder actors load it by path like any model).
The single-process side is `python -m core index`'s ingest; the Ray side is the job
(decode tasks -> encoder actors -> Parquet shards) plus the bulk merge into a library.
On a 2-core machine the point is the overhead of Ray and the agreement of the features,
not a speed-up; on a GPU node the same script reports images/s with GPU actors.

    python benchmarks/bench_ray_ingest.py [--images 256] [--actors 1] [--actor-cpus 1] [--tiny]
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
from bench_text_trim import random_b32  # noqa: E402
from core.library.ingest import ingest, open_library  # noqa: E402
from core.library.store import Library  # noqa: E402
from core.models import load_encoder  # noqa: E402
from core.scale import merge_shards  # noqa: E402
from core.scale.shards import list_shards, read_shard  # noqa: E402
from core.settings import ASSETS_DIR, pick_runtime  # noqa: E402


def make_jpegs(folder: Path, n: int, side: int = 320) -> None:
    """n distinct JPEGs: random crops of the bundled sample photos, resized to side x side."""
    folder.mkdir(parents=True)
    photos = [Image.open(p).convert("RGB") for p in sorted((ASSETS_DIR / "samples").glob("*.jpg"))]
    rng = np.random.default_rng(0)
    for i in range(n):
        im = photos[i % len(photos)]
        w, h = im.size
        x, y = int(rng.integers(0, w // 4)), int(rng.integers(0, h // 4))
        crop = im.crop((x, y, x + w * 3 // 4, y + h * 3 // 4)).resize((side, side))
        buf = io.BytesIO()
        crop.save(buf, "JPEG", quality=90)
        (folder / f"img{i:05d}.jpg").write_bytes(buf.getvalue())


def model_file(tmp: Path, tiny: bool) -> Path:
    path = tmp / "model.pt"
    if tiny:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from tiny_models import make_tiny_clip_file
        return make_tiny_clip_file(path)
    torch.save(random_b32(pick_runtime("cpu")).model.state_dict(), path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--actors", type=int, default=1, help="CPU encoder actors (no GPU)")
    ap.add_argument("--actor-cpus", type=float, default=1.0)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--tiny", action="store_true", help="the tests' tiny CLIP instead of ViT-B/32 (overhead only)")
    args = ap.parse_args()
    import ray
    from core.scale.ray_job import RayOptions, connect, index_with_ray
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_jpegs(tmp / "images", args.images)
        weights = model_file(tmp, args.tiny)
        encoder = load_encoder(str(weights), pick_runtime("cpu"))
        start = time.perf_counter()
        single = open_library(tmp / "single", encoder)
        ingest(single, encoder, [tmp / "images"], batch_size=args.batch_size)
        t_single = time.perf_counter() - start

        start = time.perf_counter()
        opts = RayOptions(actors=args.actors, actor_cpus=args.actor_cpus, batch_size=args.batch_size, part_size=128)
        connect(opts)
        t_start = time.perf_counter() - start
        try:
            start = time.perf_counter()
            job = index_with_ray([str(tmp / "images")], tmp / "shards", str(weights), opts)
            t_job = time.perf_counter() - start
            start = time.perf_counter()
            merged = Library(tmp / "merged", job.model_id, job.dim)
            merge_shards(merged, tmp / "shards")
            t_merge = time.perf_counter() - start
            resources = ray.cluster_resources()
        finally:
            ray.shutdown()
        worst = max(float((single.vector(s) - torch.from_numpy(e)).abs().max())
                    for p in list_shards(tmp / "shards") for s, e in zip(*map(read_shard(p)[1].get, ("sha256", "embedding"))))
        n = args.images
        model = "tiny CLIP" if args.tiny else "random ViT-B/32"
        print(f"{n} JPEGs ({model}), Ray: {int(resources.get('CPU', 0))} CPUs, {int(resources.get('GPU', 0))} GPUs, "
              f"{args.actors} encoder actor(s) x {args.actor_cpus} CPU")
        print("| path | seconds | images/s |\n|---|---:|---:|")
        print(f"| single process (`ingest`) | {t_single:.1f} | {n / t_single:.1f} |")
        print(f"| Ray job (decode tasks + encoder actors + shards) | {t_job:.1f} | {n / t_job:.1f} |")
        print(f"| Ray job + bulk merge | {t_job + t_merge:.1f} | {n / (t_job + t_merge):.1f} |")
        print(f"| Ray start (local instance, once) | {t_start:.1f} | |")
        print(f"Ray (job + merge) / single process: {(t_job + t_merge) / t_single:.2f}x the time; "
              f"with the start: {(t_start + t_job + t_merge) / t_single:.2f}x")
        print(f"largest feature difference Ray vs single process: {worst:.2e}; merged {len(merged)} of {len(single)}")


if __name__ == "__main__":
    main()

"""`python -m core index` past one machine: --engine ray, --from-shards, --from-embeddings.

Kept out of cli/main.py so that the plain command never loads any of it; Ray itself is
imported only when --engine ray runs a job.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from tqdm import tqdm

from core.errors import LibraryError
from core.library.ingest import IngestReport
from core.library.store import Library
from core.models import load_encoder
from core.settings import default_paths, pick_runtime
from core.scale.embeddings import import_clip_retrieval
from core.scale.merge import check_shards, merge_shards
from core.scale.shards import default_shard_dir, list_shards, shard_info

__all__ = ["index_scaled"]


def index_scaled(args) -> int:
    """Run the Ray job (unless merging existing shards), merge, flush; print the summary line."""
    root = Path(args.library or default_paths().library)
    start, missing = time.perf_counter(), []
    if args.from_embeddings:
        # the model that made the embeddings: the library records its id, its dim is checked
        encoder = load_encoder(args.model, pick_runtime(args.device), offline=args.offline)
        library = Library(root, encoder.model_id, encoder.dim)
        report = _with_bar(args, "importing", lambda bar: import_clip_retrieval(library, args.from_embeddings, bar))
    else:
        if args.from_shards:
            shard_dir = Path(args.from_shards)
            info = shard_info(list_shards(shard_dir)[0]) if list_shards(shard_dir) else None
            if info is None:
                raise LibraryError(f"No readable embedding shards (part-*.parquet) in {shard_dir}")
            model_id, dim = info["model_id"], int(info["dim"])
        else:
            if not args.paths:
                raise LibraryError("Give the folders, list files or tar shards to index")
            shard_dir = Path(args.shards or default_shard_dir(root, args.paths, args.model))
            job = _run_job(args, shard_dir)
            missing = job.missing
            print(f"ray: {job.summary()} in {job.seconds:.1f}s; shards in {shard_dir}", file=sys.stderr)
            if args.no_merge:
                print(f"shards written; merge them with `python -m core index --from-shards {shard_dir}`")
                return 1 if missing else 0
            model_id, dim = job.model_id, job.dim
        library = Library(root, model_id, dim)
        check_shards(library, shard_dir)   # another model / dim: refused before anything is written
        report = _with_bar(args, "merging", lambda bar: merge_shards(library, shard_dir, args.by_reference, bar))
    library.flush()   # features_library.pth now holds every image
    print("\n".join(report.lines(time.perf_counter() - start, len(library), missing)))
    return 1 if missing else 0


def _run_job(args, shard_dir: Path):
    from core.scale.ray_job import RayOptions, index_with_ray   # the one place Ray is imported
    options = RayOptions(address=args.ray_address, actors=args.actors, actor_cpus=args.actor_cpus,
                         batch_size=args.batch_size, part_size=args.part_size, device=args.device,
                         runtime=args.runtime, workers=args.workers)   # as on one machine: core.settings.pick_runtime
    with tqdm(unit="img", desc="encoding (ray)", disable=args.quiet) as bar:
        def total(n: int) -> None:
            bar.total = n
            bar.refresh()
        return index_with_ray(args.paths, shard_dir, args.model, options, offline=args.offline,
                              progress=bar.update, on_total=total)


def _with_bar(args, desc: str, run) -> IngestReport:
    with tqdm(unit="img", desc=desc, disable=args.quiet) as bar:
        return run(bar.update)

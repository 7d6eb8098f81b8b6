"""Indexing on a Ray cluster with Ray Data: CPU decode tasks, encoder actors, Parquet shards.

    report = index_with_ray(["photos/", "laion-000.tar"], Path("library/shards/job-1"), "ViT-B/32",
                            RayOptions(address="10.0.0.1:6379"))

The only module of the workbench that imports Ray (the command line loads it for
`--engine ray` alone). The pipeline, per batch of `batch_size` images:

    from_items(items of the parts still to do)
      -> map_batches(_decode)          CPU tasks, anywhere in the cluster (at most `workers` at
                                       once when given): read the bytes (file, tar member at its
                                       offset, URL), SHA-256, safe decode, the encoder's own
                                       preprocess -> pixels [B, 3, H, W]
      -> map_batches(_EncodeActor)     an actor pool: on CUDA one actor per GPU (num_gpus=1 each),
                                       on the CPU `actors` actors (num_gpus=0);
                                       -> embedding [B, D] float32, L2-normalised
      -> the driver collects rows per part and writes part-NNNNN.parquet (core/scale/shards.py)
         atomically as soon as the part is complete: the shard folder lives on the driver's disk.

Device and runtime: `device` and `runtime` mean what --device and --runtime mean on one machine
(core.settings.pick_runtime builds every actor's encoder: fp16 torch on CUDA, float32 torch or
ONNX Runtime on the CPU). `device` "auto" is CUDA when the cluster has GPUs. What is asked for but
cannot be had is refused before any image is read: on a local instance before Ray starts, with the
single-process path's own messages. Each shard records the runtime its actors used
("encoder_runtime" in its metadata); resume does not depend on it (the same model's features).

Resume: the input list is cut into numbered parts (core/scale/sources.py); a part whose shard
is already written for the same items and model is not read again. A killed job (Ctrl-C, a
lost node, kill -9) loses at most the parts in flight.

Decode tasks get the encoder's preprocessing without its weights: a shallow copy of the
encoder with every torch module dropped, pickled to the workers once per job. Workers need
the same environment as the driver (this checkout and its venv, e.g. one container image),
and the sources must be readable from every node (shared filesystem, or URLs).
"""
from __future__ import annotations

import copy
import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import ray
import torch
from PIL import Image

from ..errors import ImageError, ModelMismatchError
from ..images import decode_image, draft_size, upright_size   # the single-process path's decode choices, shared
from ..library.thumbs import THUMB_SIZE
from ..models import load_encoder, resolve
from ..messages import Msg
from ..settings import RUNTIME_CHOICES, no_cuda, onnx_not_on_cuda, pick_runtime
from .shards import clean_temp, shard_info, shard_path, write_shard
from .sources import Item, Part, display_name, expand_sources, partition, read_item

__all__ = ["RayOptions", "JobReport", "index_with_ray", "connect", "plan_device", "DECODE_WORKER_BYTES"]

CORE_DIR = Path(__file__).resolve().parents[1]
DECODE_WORKER_BYTES = 640 * 2**20   # a decode worker's own footprint (Python, torch, PIL), measured ~0.5-0.6 GiB


@dataclass
class RayOptions:
    address: str | None = None   # "HOST:6379" of `ray start --head`, "auto", ray://...; None: a local instance
    num_cpus: int | None = None  # local instance only: CPUs to give it (None: all of this machine's)
    actors: int | None = None    # encoder actors on the CPU (None: 1); on CUDA: one per GPU of the cluster
    actor_cpus: float = 1.0      # CPUs reserved per CPU encoder actor (its torch threads)
    batch_size: int = 64         # images per decode task and per encoder call
    part_size: int = 1000        # images per shard: the unit of resume
    device: str | None = None    # --device: auto (None; $CLIP_WB_DEVICE) | cpu | cuda: where the encoder actors run
    runtime: str = "torch"       # --runtime: torch | onnx | onnx-int8 | auto, as core.settings.pick_runtime takes it
    workers: int | None = None   # --workers: decode tasks running at once (None: as many as the cluster's CPUs allow)


@dataclass
class JobReport:
    shard_dir: Path
    model_id: str
    dim: int
    parts: int = 0               # parts of the input
    parts_skipped: int = 0       # already written by an earlier run (resumed)
    parts_written: int = 0
    encoded: int = 0             # images encoded by this run
    errors: list[tuple[str, str]] = field(default_factory=list)   # (name, reason), this run's parts
    missing: list[str] = field(default_factory=list)              # sources that do not exist
    seconds: float = 0.0
    runtimes: list[dict] = field(default_factory=list)   # what this run's actors encoded with: engine, device, dtype

    def summary(self) -> str:
        used = "; ".join(f"{r['engine']} on {r['device']} ({r['dtype']})" for r in self.runtimes)
        return (f"encoded {self.encoded} images into {self.parts_written} shard(s), {self.parts_skipped} of "
                f"{self.parts} part(s) already done, unreadable {len(self.errors)}" + (f"; encoder: {used}" if used else ""))


def plan_device(device: str | None, runtime: str | None, cluster_gpus: int | None) -> str:
    """The device every encoder actor builds its encoder on, "cpu" or "cuda", from --device and
    --runtime; raises ValueError with the single-process path's message for what cannot be had.
    `cluster_gpus` None: Ray is not started yet and the cluster is this machine (checked as
    pick_runtime checks it); else the GPUs the cluster has."""
    name, engine = _names(device, runtime)
    if cluster_gpus is None:
        return "cuda" if pick_runtime(name, engine).is_cuda else "cpu"   # no CUDA here, onnx on CUDA: refused
    if name == "auto":
        name = "cuda" if cluster_gpus else "cpu"
    if name == "cuda" and not cluster_gpus:
        raise ValueError(no_cuda(name))
    if name == "cuda" and engine.startswith("onnx"):
        raise ValueError(onnx_not_on_cuda(engine))
    return name


def _names(device: str | None, runtime: str | None) -> tuple[str, str]:
    """--device and --runtime, lower-cased and checked by name (not yet against any hardware)."""
    name = (device or os.environ.get("CLIP_WB_DEVICE") or "auto").strip().lower()
    engine = (runtime or "torch").strip().lower()
    if name.startswith("cuda:"):
        raise ValueError(Msg("在 Ray 上由 Ray 为每个编码 actor 分配一块 GPU，--device {device} 无法指定是哪一块；"
                             "请用 --device cuda",
                             "On Ray each encoder actor is given a GPU by Ray, so --device {device} cannot pick "
                             "one; use --device cuda", device=name))
    if name not in ("auto", "cpu", "cuda") or engine not in RUNTIME_CHOICES:
        pick_runtime(name, engine)   # raises the single-process path's message for an unknown device or runtime
    return name, engine


def connect(options: RayOptions) -> bool:
    """Join the cluster at options.address, or start a local instance. True if this call
    started Ray (the caller then shuts it down); False when Ray was already initialised."""
    if ray.is_initialized():
        return False
    if options.address is None:   # local workers inherit this process's environment
        extra = {"num_cpus": options.num_cpus}
    else:                          # a cluster's workers get this checkout's core/ (their venv has the rest)
        extra = {"runtime_env": {"py_modules": [str(CORE_DIR)], "excludes": ["__pycache__"]}}
    ray.init(address=options.address, include_dashboard=False, logging_level=logging.WARNING,
             log_to_driver=False, configure_logging=True, **extra)
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    return True


def index_with_ray(sources: list[str], shard_dir: Path, model: str, options: RayOptions | None = None,
                   cache: Path | None = None, offline: bool = False,
                   progress: Callable[[int], None] | None = None,
                   on_total: Callable[[int], None] | None = None) -> JobReport:
    """Encode every image of `sources` into Parquet shards in `shard_dir` (resumable).
    `on_total(n)` is told how many images this run will encode; `progress(k)` as k more are done."""
    options = options or RayOptions()
    start = time.perf_counter()
    # what cannot be had is refused first: a local instance is this machine, so before Ray starts
    if options.address is None and not ray.is_initialized():
        plan_device(options.device, options.runtime, None)
    else:   # a cluster's GPUs are known once connected (_run); the names are checked now
        _names(options.device, options.runtime)
    encoder = load_encoder(model, pick_runtime("cpu"), cache=cache, offline=offline)   # fails fast on a bad --model
    report = JobReport(Path(shard_dir), encoder.model_id, encoder.dim)
    items, report.missing = expand_sources(sources)
    parts = partition(items, options.part_size)
    report.shard_dir.mkdir(parents=True, exist_ok=True)
    clean_temp(report.shard_dir)
    pending = [p for p in parts if not _done(report.shard_dir, p, encoder.model_id)]
    report.parts, report.parts_skipped = len(parts), len(parts) - len(pending)
    if on_total:
        on_total(sum(len(p.items) for p in pending))
    if pending:
        started = connect(options)
        try:
            _run(pending, encoder, model, options, cache, offline, report, progress)
        finally:
            if started:
                ray.shutdown()
    report.seconds = time.perf_counter() - start
    return report


def _done(folder: Path, part: Part, model_id: str) -> bool:
    info = shard_info(shard_path(folder, part.number))
    return bool(info) and info.get("fingerprint") == part.fingerprint and info.get("model_id") == model_id


def _run(pending: list[Part], encoder, model: str, options: RayOptions, cache, offline, report: JobReport,
         progress) -> None:
    import ray.data
    ray.data.DataContext.get_current().enable_progress_bars = False   # the caller shows one bar
    rows = [{"part": p.number, "id": p.first + i, "source": it.source, "offset": it.offset, "size": it.size,
             "member": it.member} for p in pending for i, it in enumerate(p.items)]
    gpus = int(ray.cluster_resources().get("GPU", 0))
    device = plan_device(options.device, options.runtime, gpus)   # before any image is read
    pool = {"num_gpus": 1, "num_cpus": 1} if device == "cuda" else {"num_cpus": options.actor_cpus, "num_gpus": 0}
    ds = ray.data.from_items(rows, override_num_blocks=max(1, len(rows) // options.batch_size))
    pre = _Preprocess(encoder)
    # memory: what a decode worker holds (torch + PIL, its pixels twice). Differing resources
    # also keep Ray from fusing decoding into the encoder actors, which would serialise the stages.
    memory = DECODE_WORKER_BYTES + 2 * 4 * options.batch_size * int(np.prod(pre.shape))
    ds = ds.map_batches(_decode, fn_kwargs={"preprocess": pre, "draft": draft_size(getattr(encoder, "image_size", None), THUMB_SIZE)}, batch_size=options.batch_size,
                        batch_format="numpy", num_cpus=1, memory=memory,
                        compute=ray.data.TaskPoolStrategy(size=options.workers))
    ds = ds.map_batches(_EncodeActor, fn_constructor_kwargs={"model": _portable(model), "cache": cache, "offline": offline,
                                                              "expect": encoder.model_id, "device": device,
                                                              "runtime": options.runtime},
                        batch_size=options.batch_size, batch_format="numpy",
                        compute=ray.data.ActorPoolStrategy(size=gpus if device == "cuda" else options.actors or 1),
                        **pool)
    by_number = {p.number: p for p in pending}
    got: dict[int, list[dict]] = {}
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for number in np.unique(batch["part"]):
            sel = batch["part"] == number
            got.setdefault(int(number), []).append({k: v[sel] for k, v in batch.items()})
            if sum(len(b["id"]) for b in got[int(number)]) == len(by_number[int(number)].items):
                _write_part(report, by_number[int(number)], got.pop(int(number)))
        if progress:
            progress(len(batch["id"]))


def _portable(model: str) -> str:
    """The model spec as every node reads it: backend:source, a local file or folder made absolute
    (a worker's current directory is not the driver's)."""
    backend, source = resolve(model)
    path = Path(source).expanduser()
    return f"{backend}:{path.resolve() if path.exists() else source}"


def _write_part(report: JobReport, part: Part, batches: list[dict]) -> None:
    cols = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    order = np.argsort(cols["id"], kind="stable")
    cols = {k: v[order] for k, v in cols.items()}
    ok = cols["error"] == ""
    errors = [[str(n), str(e)] for n, e in zip(cols["name"][~ok], cols["error"][~ok])]
    used = [dict(zip(("engine", "device", "dtype"), str(r).split("|"))) for r in sorted(set(cols["runtime"][ok]))]
    write_shard(report.shard_dir, part.number, {k: cols[k][ok] for k in ("id", "sha256", "path", "width", "height",
                                                                          "embedding")},
                {"model_id": report.model_id, "dim": report.dim, "fingerprint": part.fingerprint,
                 "items": len(part.items), "errors": errors, "encoder_runtime": used})
    report.runtimes += [r for r in used if r not in report.runtimes]
    report.parts_written += 1
    report.encoded += int(ok.sum())
    report.errors += [tuple(e) for e in errors]


class _Preprocess:
    """The encoder's own `preprocess`, picklable: a shallow copy without its torch modules."""

    def __init__(self, encoder):
        self.encoder = copy.copy(encoder)
        for key, value in list(vars(self.encoder).items()):
            if isinstance(value, torch.nn.Module):
                setattr(self.encoder, key, None)
        self.shape = tuple(encoder.preprocess(Image.new("RGB", (8, 8))).shape)   # [3, H, W], for rows that fail

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.encoder.preprocess(image)


def _decode(batch: dict, preprocess: _Preprocess, draft: int | None) -> dict:
    """CPU task: items -> pixels float32 [B, 3, H, W] plus sha256, size and error per row.
    Decoded exactly as the single-process ingest does (JPEG draft size, upright size)."""
    n = len(batch["id"])
    pixels = np.zeros((n, *preprocess.shape), dtype=np.float32)
    out = {k: [] for k in ("sha256", "path", "name", "width", "height", "error")}
    for i in range(n):
        item = Item(str(batch["source"][i]), int(batch["offset"][i]), int(batch["size"][i]), str(batch["member"][i]))
        sha, w, h, err = "", 0, 0, ""
        try:
            data = read_item(item)
            sha = hashlib.sha256(data).hexdigest()
            image = decode_image(data, display_name(item), draft=draft)
            w, h = upright_size(data)[1]
            pixels[i] = preprocess(image).numpy()
        except ImageError as e:
            err = e.reason
        for k, v in zip(out, (sha, item.path, display_name(item), w, h, err)):
            out[k].append(v)
    return {"part": batch["part"], "id": batch["id"], "pixels": pixels,
            **{k: np.asarray(v, dtype=np.int32 if k in ("width", "height") else object) for k, v in out.items()}}


class _EncodeActor:
    """One encoder, loaded once per actor as --device and --runtime say (on CUDA: the GPU Ray gave it)."""

    def __init__(self, model: str, cache: Path | None, offline: bool, expect: str, device: str = "cpu",
                 runtime: str = "torch"):
        self.encoder = load_encoder(model, pick_runtime(device, runtime), cache=cache, offline=offline)
        rt = self.encoder.runtime   # what runs it (a backend without ONNX runs on torch): recorded in each shard
        self.used = f"{rt.engine}|{rt.device}|{str(rt.dtype).replace('torch.', '')}"
        if self.encoder.model_id != expect:   # e.g. another file under the same path on this node
            raise ModelMismatchError(f"Model {model!r} loads as {self.encoder.model_id!r} on this node but as "
                                     f"{expect!r} on the driver; give every node the same weights")

    def __call__(self, batch: dict) -> dict:
        ok = batch["error"] == ""
        emb = np.zeros((len(ok), self.encoder.dim), dtype=np.float32)
        if ok.any():
            emb[ok] = self.encoder.encode_pixels(torch.from_numpy(np.ascontiguousarray(batch["pixels"][ok]))).numpy()
        return {k: v for k, v in batch.items() if k != "pixels"} | {"embedding": emb,
                                                                     "runtime": np.full(len(ok), self.used, dtype=object)}


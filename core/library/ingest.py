"""Adding images to a library: read, hash, dedupe, decode, embed and store, in batches.

A three-stage pipeline, so the encoder never waits for files:

    decode pool (threads)  read, hash, dedupe, decode (JPEGs in draft mode), preprocess  batch i+1
    calling thread         encode (and annotate, e.g. captions)                          batch i
    writer thread          journal append (library.add), thumbnails                      batch i-1

On CUDA (an encoder whose runtime keeps tensors on the GPU and whose preprocess has a tensor form,
`pixel_recipe`) the decode pool only reads, hashes, dedupes and screens each file's header; one
device thread decodes batch i+1's JPEGs with nvJPEG and resizes, crops and normalises them there
(core/models/pixels.py), and makes their thumbnails from those pixels. What nvJPEG is not given or
cannot read (PNG, WebP, CMYK or progressive JPEGs, corrupt files) the pool decodes with PIL as on
the CPU, and its pixels reach the GPU pinned and non-blocking.

One bad file never stops a batch: it is reported with its reason. Duplicates (same bytes,
in the library or earlier in the same run) are recognised by hash before any decoding.
`progress(n)` is called from the calling thread as each batch is stored. Each stage's busy time
is kept in a `StageTimes` (the busiest stage bounds the rate: the progress bar names it).
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
from PIL import Image

from ..errors import ImageError, LibraryError
from ..images import (check_size, decode_image, draft_size, iter_image_files, read_file, safe_display_name, stored_ext,
                      upright_size)
from ..messages import Msg
from ..models.pixels import decode_jpegs, tensor_orientation, to_device
from .store import MANIFEST_NAME, SNAPSHOT_NAME, Library, NewImage
from .thumbs import THUMB_SIZE, write_thumbnail
from ..settings import ASSETS_DIR

__all__ = ["ingest", "IngestReport", "StageTimes", "Upload", "read_source", "open_library", "peek_model", "reindex", "repair", "seed",
           "sample_files", "SAMPLE_DIRS"]

_WORKERS = min(8, os.cpu_count() or 1)   # decode threads unless the caller says (`ingest(workers=...)`)
_WORKER_NICE = 10   # decode/writer threads' niceness increment (0 = as urgent as the encoder, 19 = idle only)
SAMPLE_DIRS = (ASSETS_DIR / "samples", ASSETS_DIR / "shapes")   # licensed photos + the mini model's Shapes


@dataclass(frozen=True)
class Upload:
    """Raw bytes with the name the user gave them (display only, never used as a path)."""
    name: str
    data: bytes
    sha256: str | None = None   # their content hash, when the caller computed it already (read_source)


class StageTimes:
    """Busy seconds of each stage of one ingest, updated as it runs (thread-safe): decode (read,
    hash, decode, preprocess: summed over the decode workers, divided by their number; on CUDA
    the device thread's JPEG decoding too, when it is busier), encode (the calling thread) and
    write (the writer thread). The busiest stage bounds the rate."""
    STAGES = ("decode", "encode", "write")

    def __init__(self):
        self.workers = 1                       # decode workers (set by ingest)
        self._busy = dict.fromkeys(self.STAGES + ("device decode",), 0.0)   # the last: one thread, CUDA only
        self._start, self._lock = time.perf_counter(), threading.Lock()

    def begin(self, workers: int) -> None:
        """The ingest starts now, with this many decode workers."""
        with self._lock:
            self.workers, self._start = workers, time.perf_counter()

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self._busy[stage] += seconds

    def busy(self, stage: str) -> float:
        """Seconds the stage was busy (decode: per worker, or the device thread's when it is busier)."""
        if stage == "decode":
            return max(self._busy[stage] / self.workers, self._busy["device decode"])
        return self._busy[stage]

    def bound(self) -> str:
        """The stage that bounds the rate: the busiest one."""
        return max(self.STAGES, key=self.busy)

    def describe(self) -> str:
        """e.g. "bound by encode; busy: decode 41% (8 workers), encode 97%, write 12%" (share of the
        time since the ingest started)."""
        wall = max(time.perf_counter() - self._start, 1e-9)
        share = {s: f"{min(100 * self.busy(s) / wall, 100):.0f}%" for s in self.STAGES}
        worker = "worker" if self.workers == 1 else "workers"
        return (f"bound by {self.bound()}; busy: decode {share['decode']} ({self.workers} {worker}), "
                f"encode {share['encode']}, write {share['write']}")


def _timed(stages: StageTimes, stage: str, fn, *args):
    """fn(*args), its duration added to `stage`."""
    start = time.perf_counter()
    try:
        return fn(*args)
    finally:
        stages.add(stage, time.perf_counter() - start)


@dataclass
class IngestReport:
    added: list[str] = field(default_factory=list)         # ids of newly stored images
    duplicates: list[str] = field(default_factory=list)    # names of files already present
    errors: list[tuple[str, str]] = field(default_factory=list)  # (name, reason: a Msg, zh and en)
    seconds: float = 0.0
    total: int = 0                                         # images in the library after the run (Workbench.add)
    held: list[str] = field(default_factory=list)          # ids of new images waiting for the teacher's review
    near: list[tuple[str, str, float]] = field(default_factory=list)  # (new id, older id, cosine): near-duplicates
    stages: StageTimes | None = None                       # each stage's busy time in this run

    def summary(self) -> str:
        return f"added {len(self.added)}, already present {len(self.duplicates)}, unreadable {len(self.errors)}"

    def lines(self, seconds: float, total: int, missing: Sequence = ()) -> list[str]:
        """What `python -m core index` prints, whatever engine ran it: the summary line, then each
        path not found and each unreadable file with its reason, then the images held for review and
        the near-duplicates of images already stored."""
        return ([f"{self.summary()} in {seconds:.1f}s; library now holds {total} images"]
                + [f"  not found: {p}" for p in missing]
                + [f"  unreadable: {name}: {reason}" for name, reason in self.errors]
                + [f"  held for review: {i}" for i in self.held]
                + [f"  near-duplicate: {i} of {older} (cosine {cos:.3f})" for i, older, cos in self.near])


@dataclass
class _Prepared:
    name: str
    data: bytes
    sha256: str
    image: Image.Image | None = None     # decoded RGB (maybe draft-reduced: for thumbnails only)
    pixels: torch.Tensor | None = None
    ext: str = ".jpg"
    size: tuple[int, int] = (0, 0)       # full (width, height), upright, as stored in the metadata
    orientation: int | None = None       # EXIF orientation of a JPEG left to the device's decoder (core/models/pixels.py)


def open_library(root: str | os.PathLike, encoder) -> Library:
    """Open (or create) the library at `root` for this encoder's features."""
    return Library(root, encoder.model_id, encoder.dim)


def peek_model(root: str | os.PathLike) -> tuple[str, int] | None:
    """(model_id, dim) recorded in an existing library, or None if there is none yet."""
    manifest, snapshot = Path(root) / MANIFEST_NAME, Path(root) / SNAPSHOT_NAME
    if manifest.exists():
        head = json.loads(manifest.read_text(encoding="utf-8"))
    elif snapshot.exists():   # a version-1 library, migrated when it is opened
        head = torch.load(snapshot, map_location="cpu", weights_only=True)
    else:
        return None
    return head["model_id"], int(head["dim"])


def read_source(source: str | os.PathLike | Upload) -> Upload:
    """One file (or Upload) read, limits checked, and hashed: an Upload with its sha256 (the one
    already given is kept), or ImageError. What the front door reads once per upload."""
    if isinstance(source, Upload):
        name = safe_display_name(source.name)
        check_size(len(source.data), name)
        return Upload(name, source.data, source.sha256 or hashlib.sha256(source.data).hexdigest())
    name = safe_display_name(Path(source).name)
    data = read_file(source, name)
    return Upload(name, data, hashlib.sha256(data).hexdigest())


class _Seen:
    """Hashes met in this run (thread-safe): the second copy of a file is a duplicate, never decoded."""

    def __init__(self):
        self._shas, self._lock = set(), threading.Lock()

    def first(self, sha: str) -> bool:
        with self._lock:
            new = sha not in self._shas
            self._shas.add(sha)
            return new


def _prepare(source, library: Library, encoder, seen: _Seen, draft: int | None,
             stored: set[str] | None, on_device: bool = False) -> _Prepared | tuple[str, str]:
    """Read + hash; decode + preprocess only if new. Returns _Prepared or (name, error reason).
    `on_device`: a JPEG the device decodes is only screened here (its `orientation` set)."""
    try:
        upload = read_source(source)
        item = _Prepared(upload.name, upload.data, upload.sha256)
        known = item.sha256 in stored if stored is not None else library.contains(item.sha256)
        if known or not seen.first(item.sha256):
            return item
        item.orientation = tensor_orientation(item.data) if on_device else None
        if item.orientation is None:
            item.image = decode_image(item.data, item.name, draft=draft)
        fmt, item.size = upright_size(item.data)
        item.ext = stored_ext(fmt)
        if item.orientation is None:
            item.pixels = encoder.preprocess(item.image)
        return item
    except ImageError as e:
        return e.name, e.reason


def ingest(library: Library, encoder, sources: Iterable, batch_size: int = 64,
           progress: Callable[[int], None] | None = None,
           annotate: Callable[[list[Image.Image]], list[dict]] | None = None,
           stored: set[str] | None = None,
           before_store: Callable[[list[str], torch.Tensor], None] | None = None,
           workers: int | None = None, stages: StageTimes | None = None) -> IngestReport:
    """Add image files, folders (recursively) or `Upload`s. `progress(n)` is called as n more
    files are done; `annotate(images)` may return extra metadata per image (e.g. captions).
    `stored`: the hashes of these sources already in the library, when the caller asked already
    (Workbench.add, with Uploads from read_source): then nothing is asked again or hashed again.
    `before_store(sha256s, vectors [B, D])` is called with each batch of new images before any of
    it is stored (the safety policy holds flagged images durably first: core/safety/review.py).
    `workers`: decode threads (default min(8, CPUs)); `stages`: a StageTimes to watch while it runs."""
    if encoder.model_id != library.model_id:
        raise ValueError(f"encoder {encoder.model_id} does not match library model {library.model_id}")
    if workers is not None and workers < 1:
        raise ValueError(Msg("解码线程数至少为 1，而不是 {n}", "workers must be at least 1, not {n}", n=workers))
    report, start = IngestReport(stages=stages or StageTimes()), time.perf_counter()
    stages = report.stages
    stages.begin(workers or _WORKERS)
    sources = list(sources)   # may be a generator: it is read twice below
    sources = [s for s in sources if isinstance(s, Upload)] + list(iter_image_files(s for s in sources if not isinstance(s, Upload)))
    seen, draft = _Seen(), draft_size(getattr(encoder, "image_size", None), THUMB_SIZE)
    device = _decode_device(encoder, annotate)
    batches = [sources[i:i + batch_size] for i in range(0, len(sources), batch_size)]
    with ThreadPoolExecutor(stages.workers, initializer=_yield_to_encoder) as pool, \
            ThreadPoolExecutor(1, thread_name_prefix="ingest-device") as on_device, \
            ThreadPoolExecutor(1, thread_name_prefix="ingest-writer", initializer=_yield_to_encoder) as writer:
        def submit(chunk):   # a future of the batch's prepared items
            files = [pool.submit(_timed, stages, "decode", _prepare, s, library, encoder, seen, draft, stored,
                                 device is not None) for s in chunk]
            return on_device.submit(_decode_on_device, files, encoder, device, draft, stages)
        ahead = submit(batches[0]) if batches else None
        writing = None                     # (future, files in it): the previous batch being stored
        for b in range(len(batches)):
            prepared = ahead.result()
            ahead = submit(batches[b + 1]) if b + 1 < len(batches) else None   # decoded while this one encodes
            fresh, news = _timed(stages, "encode", _encode_batch, encoder, prepared, report, annotate)
            if before_store is not None and news:
                before_store([n.sha256 for n in news], torch.stack([n.vector for n in news]))
            writing = _finish(writing, progress)
            writing = (writer.submit(_timed, stages, "write", _write_batch, library, fresh, news, report), len(prepared))
        _finish(writing, progress)
    report.seconds = time.perf_counter() - start
    return report


def _decode_device(encoder, annotate) -> torch.device | None:
    """Where new JPEGs are decoded to pixels: the encoder's CUDA device when its tensors live there
    (not ZeroGPU, where CUDA exists only inside model calls) and its preprocess has a tensor form;
    None = the decode pool with PIL, as on the CPU (there PIL's draft decoding in threads keeps up
    with the encoder). Captioning (`annotate`) reads full PIL images, so it keeps the PIL path."""
    runtime = getattr(encoder, "runtime", None)
    if annotate is None and runtime is not None and runtime.resident and getattr(encoder, "pixel_recipe", None):
        return runtime.device
    return None


def _decode_on_device(files: list, encoder, device: torch.device | None, draft: int | None, stages: StageTimes) -> list:
    """The batch's prepared items (each a _Prepared or (name, reason)) once the pool is done; with a
    device, its screened JPEGs decoded there (those it cannot read through PIL, named as today) and
    every new image's pixels on the device."""
    prepared = [f.result() for f in files]
    if device is None:
        return prepared
    start = time.perf_counter()
    jpegs = [k for k, p in enumerate(prepared) if isinstance(p, _Prepared) and p.orientation is not None]
    batch = decode_jpegs([(prepared[k].name, prepared[k].data) for k in jpegs], encoder.pixel_recipe, encoder.preprocess,
                         device, THUMB_SIZE, [prepared[k].orientation for k in jpegs], draft)
    for row, i in enumerate(batch.rows):
        prepared[jpegs[i]].pixels, prepared[jpegs[i]].image = batch.pixels[row], batch.images[row]
    for i, name, reason in batch.errors:
        prepared[jpegs[i]] = (name, reason)
    on_cpu = [p for p in prepared if isinstance(p, _Prepared) and p.pixels is not None and p.pixels.device.type == "cpu"]
    if on_cpu and device.type != "cpu":   # decoded with PIL in the pool: one pinned, non-blocking copy for them all
        moved = to_device(torch.stack([p.pixels for p in on_cpu]), device)
        for p, pixels in zip(on_cpu, moved):
            p.pixels = pixels
    stages.add("device decode", time.perf_counter() - start)
    return prepared


def _yield_to_encoder() -> None:
    """Lower this worker thread's scheduling priority (Linux: per thread): the encoder's threads
    meet at a barrier after every operation, so a decode thread preempting one of them stalls
    them all; at a lower priority decoding fills the gaps instead. The threads end with the ingest."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), _WORKER_NICE)
    except (AttributeError, OSError):
        pass   # not Linux, or not permitted: the pipeline still overlaps, only less politely


def _finish(writing, progress) -> None:
    """Wait for the batch being written (its errors are raised here) and report its progress."""
    if writing is not None:
        writing[0].result()
        if progress:
            progress(writing[1])
    return None


def _encode_batch(encoder, prepared: Sequence, report: IngestReport, annotate) -> tuple[list, list]:
    fresh = []
    for item in prepared:
        if isinstance(item, tuple):
            report.errors.append(item)
        elif item.pixels is None:
            report.duplicates.append(item.name)
        else:
            fresh.append(item)
    if not fresh:
        return [], []
    vectors = encoder.encode_pixels(torch.stack([p.pixels for p in fresh]))
    extra = annotate([p.image for p in fresh]) if annotate else [{}] * len(fresh)
    now = time.time()
    news = [NewImage(p.data, p.sha256, p.ext, v, {"name": p.name, "added": now, "width": p.size[0],
                                                   "height": p.size[1], "bytes": len(p.data), **x})
            for p, v, x in zip(fresh, vectors, extra)]
    return fresh, news


def _write_batch(library: Library, fresh: list, news: list, report: IngestReport) -> None:
    """Journal append (fsync'd by the library) and thumbnails, on the writer thread."""
    if not fresh:
        return
    for p, added in zip(fresh, library.add(news)):
        if added:
            report.added.append(p.sha256[:12])
            try:
                write_thumbnail(library.root, p.sha256, p.image)
            except OSError:
                pass   # derived data: the gallery makes it again when it is missing
        else:
            report.duplicates.append(p.name)


def reindex(root: str | os.PathLike, encoder, batch_size: int = 64,
            progress: Callable[[int], None] | None = None) -> Library:
    """Re-encode every stored image with `encoder` and switch the library to its model.
    The images are the source of truth; only the features are replaced (atomically)."""
    found = peek_model(root)
    if found is None:
        return open_library(root, encoder)
    library = Library(root, *found)
    entries = library.entries()
    missing = [e.name for e in entries if not e.path.is_file()]
    if missing:
        raise LibraryError(Msg("有 {n} 张已存储的图片不见了（{names}...）；请先运行 `python -m core library repair`，再重新索引",
                               "{n} stored image(s) are missing ({names}...); "
                               "run `python -m core library repair` first, then reindex",
                               n=len(missing), names=", ".join(missing[:5])))
    feats = []
    with ThreadPoolExecutor(_WORKERS) as pool:
        for i in range(0, len(entries), batch_size):
            chunk = entries[i:i + batch_size]
            pixels = list(pool.map(lambda e: encoder.preprocess(decode_image(e.path.read_bytes(), e.name)), chunk))
            feats.append(encoder.encode_pixels(torch.stack(pixels)))
            if progress:
                progress(len(chunk))
    library.replace_all(encoder.model_id, torch.cat(feats) if feats else torch.empty(0, encoder.dim),
                        [e.sha256 for e in entries])
    return library


def repair(library: Library, encoder) -> dict:
    """Make rows and files agree again after damage done outside the program (files deleted by
    hand, a journal record lost to disk corruption): rows whose image file is gone are removed,
    and image files that lost their row are re-added (re-encoded), never deleted."""
    report = library.verify()
    missing = [e.sha256 for e in library.entries() if not e.path.is_file()]
    removed = library.remove(missing) if missing else 0
    orphans = [library.root / rel for rel in report["orphan_files"]]
    readded = ingest(library, encoder, orphans) if orphans else IngestReport()
    for path in orphans:   # a stray copy under a name that is not its hash: the stored copy replaces it
        sha = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
        if sha and library.contains(sha) and library.find(sha).path != path:
            path.unlink()
    return {"rows_removed": removed, "images_readded": len(readded.added), "unreadable": readded.errors}


def sample_files() -> list[Path]:
    """The bundled sample images (assets/samples photos and assets/shapes)."""
    return list(iter_image_files(d for d in SAMPLE_DIRS if d.is_dir()))


def seed(library: Library, encoder, progress: Callable[[int], None] | None = None) -> IngestReport:
    """Add the bundled sample images (a fresh library's first content); safe to run again."""
    return ingest(library, encoder, sample_files(), progress=progress)

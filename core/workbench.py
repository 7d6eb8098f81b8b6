"""The front door: one object that offers every service of the workbench.

    wb = build_workbench(model="ViT-B/32", library_dir="library", device="auto")
    wb.search(SearchQuery(text="一只猫", k=5)).hits
    wb.classify("photo.jpg", "cat,dog,小鸟", "ensemble80")
    wb.add(["photos/"], caption=True)
    wb.page(1).entries, wb.thumbnail(entry), wb.stats()
    wb.remove(["3f2a9c0e11d4"]); wb.compact(); wb.verify(); wb.repair()

The Gradio UI, the CLI, the JSON HTTP API and batch jobs are thin adapters over a
`Workbench`; none of them reaches into the library, the index or the encoders. Image
inputs may be PIL images, paths or bytes: paths and bytes go through core's safe loader
(size and pixel limits, clear errors). Heavy optional models (captioner, translator) are
created on first use, once. Nothing here knows about Gradio.
"""
from __future__ import annotations

import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
from PIL import Image

from .batching import BatchingEncoder
from .errors import LibraryError, ModelMismatchError, ModelUnavailableError, UnknownModelError
from .images import load_image
from .messages import Msg, join
from .language.caption import DEFAULT_CAPTIONER, Captioner
from .language.query import caption_metadata, prepare_query
from .language.translate import DEFAULT_TRANSLATOR, Translator
from .library.index import ExactIndex, LibraryANN, open_index, resolve_kind
from .library.int8check import check_int8
from .library.ingest import IngestReport, ingest, open_library, reindex, repair, sample_files
from .library.search import Hit, Searcher, SearchQuery, SearchResult
from .library.store import Entry, Library
from .library.thumbs import thumb_for
from .lab.learn import Learn
from .models import Encoder, load_encoder, load_encoder_with_fallback
from .models.hf import hub_unreachable
from .starters import Starters, starters
from .settings import DEFAULT_MODEL, Runtime, default_paths, pick_runtime
from .zeroshot import ZeroShotClassifier, plan_prompts

__all__ = ["Workbench", "build_workbench", "Page", "ImageInput", "PAGE_SIZE", "reindex_library"]

log = logging.getLogger(__name__)

PAGE_SIZE = 48   # library entries per page: 6 rows of 8, one screen on a classroom projector
ImageInput = Image.Image | str | os.PathLike | bytes


@dataclass(frozen=True)
class Page:
    entries: list[Entry]   # newest first
    page: int              # 1-based, clamped to [1, pages]
    pages: int
    total: int


def as_image(image: ImageInput, name: str | None = None) -> Image.Image:
    """A PIL image as is; a path or bytes through the safe loader (limits, EXIF, modes)."""
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, (str, os.PathLike)):
        return load_image(image, name or Path(image).name)
    return load_image(bytes(image), name or "image")


class _Flusher:
    """Keeps features_library.pth current without an O(N) write per upload: each poke
    schedules one background flush, at most one per max(MIN_GAP, 10 x the last flush's
    duration), so a small library is current within seconds and a 1M one is not rewritten
    more than a tenth of the time."""
    MIN_GAP = 2.0   # seconds

    def __init__(self, flush: Callable[[], None]):
        self._flush, self._lock = flush, threading.Lock()
        self._timer: threading.Timer | None = None
        self._next = 0.0                # no flush starts before this (monotonic seconds)
        self._running = self._again = False

    def poke(self) -> None:
        with self._lock:
            if self._running:            # a write during a flush: one more flush after it, throttled
                self._again = True
            elif self._timer is None:
                self._schedule()

    def _schedule(self) -> None:
        self._timer = threading.Timer(max(0.0, self._next - time.monotonic()), self._run)
        self._timer.daemon = True
        self._timer.start()

    def _run(self) -> None:
        with self._lock:
            self._timer, self._running, self._again = None, True, False
        start = time.monotonic()
        try:
            self._flush()
        except (OSError, LibraryError) as e:   # e.g. disk full: the journal still holds every add
            log.warning("could not rewrite features_library.pth: %s", e)
        with self._lock:
            self._next = time.monotonic() + max(self.MIN_GAP, 10 * (time.monotonic() - start))
            self._running = False
            if self._again:
                self._schedule()

    def close(self) -> None:
        """Cancel what is pending and flush now (on shutdown)."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        self._flush()


class Workbench:
    """Every service over one encoder and one library. Build with `build_workbench`."""

    def __init__(self, runtime: Runtime, encoder: Encoder, library: Library, notice: str | None = None,
                 offline: bool = False, captioner: str | None = None, translator: str | None = None,
                 index: str = "auto", background: bool = False, fallback: bool = False):
        """fallback=True: the model asked for could not be had and the bundled mini model stands in.
        index: "auto" | "exact" | "ivf" | "hnsw" | "ivfpq" | "ivfsq" (see core.library.index).
        background=True (the app): an ANN index is loaded or built in a thread while exact
        search serves, and features_library.pth is rewritten in the background after writes;
        False (the CLI, scripts): both happen in the calling thread, `flush()` when asked."""
        if background:   # a shared server: concurrent requests share forward passes (core/batching.py)
            encoder = BatchingEncoder(encoder)
        self.runtime, self.encoder, self.library = runtime, encoder, library
        self.notice = notice                 # why a fallback model / library is in use, shown to the user
        self.fallback = fallback             # the bundled mini model stands in for the model asked for
        self.offline = offline
        self.captioner_name = captioner or DEFAULT_CAPTIONER
        self.translator_name = translator or DEFAULT_TRANSLATOR
        self.searcher = Searcher(encoder, library, ExactIndex(library, runtime), plan=self.plan_query)
        self.classifier = ZeroShotClassifier(encoder)
        self.index_kind = resolve_kind(index, len(library))
        self._lazy: dict = {}
        self._lazy_lock = threading.Lock()
        self._flusher = _Flusher(self.flush) if background else None
        self._index_lock = threading.Lock()
        self._index_opened = self.index_kind == "exact"
        if background and not self._index_opened:   # exact search serves until it is ready
            threading.Thread(target=self._open_index, name="open-index", daemon=True).start()

    def _open_index(self) -> None:
        """Load (or build) the ANN index once; later calls return at once."""
        with self._index_lock:
            if self._index_opened:
                return
            start = time.monotonic()
            self.searcher.index = open_index(self.library, self.runtime, self.index_kind)
            self._index_opened = True
        log.info("%s index over %d images ready in %.1f s", self.index_kind, len(self.library), time.monotonic() - start)

    def _searchable(self) -> Searcher:
        """The searcher, its ANN index opened first unless the app opens it in the background."""
        if not self._index_opened and self._flusher is None:
            self._open_index()
        return self.searcher

    def build_index(self, kind: str | None = None) -> str:
        """(Re)build the ANN index of `kind` (default: this workbench's) from every row and save
        it beside the library; returns the kind. "exact" needs no index."""
        kind = resolve_kind(kind or self.index_kind, len(self.library))
        if kind == "exact":
            return kind
        with self._index_lock:
            index = LibraryANN.build(self.library, kind)
            index.save()
            self.searcher.index, self.index_kind, self._index_opened = index, kind, True
        return kind

    def flush(self) -> None:
        """Make features_library.pth (and a persisted ANN index) hold every image now."""
        self.library.flush()
        if isinstance(self.searcher.index, LibraryANN):
            self.searcher.index.save()

    def close(self) -> None:
        """On shutdown: flush what the background flusher has not written yet."""
        if self._flusher is not None:
            self._flusher.close()
        elif self.library.stale:
            self.flush()

    def _written(self) -> None:
        if self._flusher is not None:
            self._flusher.poke()

    # ------------------------------------------------------------ language models (lazy)

    def _get(self, key: str, make):
        with self._lazy_lock:
            if key not in self._lazy:
                self._lazy[key] = make()
            return self._lazy[key]

    @property
    def translator(self) -> Translator:
        """The zh↔en translator (its weights load on first translation)."""
        return self._get("translator", lambda: Translator(self.translator_name, self.runtime, offline=self.offline))

    @property
    def captioner(self) -> Captioner:
        return self._get("captioner", lambda: Captioner(self.captioner_name, self.runtime, offline=self.offline))

    def provide(self, captioner=None, translator=None) -> None:
        """Use these captioner / translator objects instead of building them (tests, custom models)."""
        with self._lazy_lock:
            if captioner is not None:
                self._lazy["captioner"] = captioner
            if translator is not None:
                self._lazy["translator"] = translator

    def preload_translator(self) -> bool:
        """Load the zh→en translator now (e.g. in a background thread at app start) so the first
        Chinese query does not wait for it. Only useful with an English-only encoder."""
        if self.encoder.multilingual:
            return False
        try:
            self.translator.load("en")
            return True
        except (ModelUnavailableError, UnknownModelError):
            return False   # the search says so on the first Chinese query

    def plan_query(self, text: str) -> tuple[str, str | None]:
        """Translate a Chinese query for an English-only encoder; (text used, note for the user)."""
        plan = prepare_query(text, self.encoder, self.translator)
        return plan.text, plan.note

    def translate(self, texts: list[str], to: str) -> list[str]:
        return self.translator.translate(texts, to=to)

    @staticmethod
    def image(image: ImageInput, name: str | None = None) -> Image.Image:
        """Decode an image input through the safe loader (ImageError with the reason otherwise)."""
        return as_image(image, name)

    def caption(self, images: Sequence[ImageInput], stage: Callable[[str], None] | None = None) -> list[dict]:
        """N images -> N dicts {"caption_en", "caption_zh"[, "caption_zh_error"]} (see caption_metadata,
        which also says the `stage`s a front end hears). A missing captioner raises ModelUnavailableError."""
        return caption_metadata([as_image(im) for im in images], self.captioner, self.translator, stage)

    def captions_unavailable(self) -> Msg | None:
        """Why no caption can be made here before anyone tries (the weights are not on this machine and
        cannot be downloaded: offline, or the hub does not answer); None when they are, or may come."""
        captioner = self.captioner
        if captioner.loaded or captioner.on_this_machine():
            return None
        why = Msg("离线模式", "offline mode") if self.offline else hub_unreachable()
        if why is None:
            return None
        return Msg("这台机器上没有描述模型 {model}，现在也无法下载（{why}）。要生成描述：联网运行一次（可设置镜像 "
                   "`HF_ENDPOINT=https://hf-mirror.com`），或用 `--captioner` 指定 save_pretrained() 保存的本地文件夹。",
                   "The captioner {model} is not on this machine and cannot be downloaded now ({why}). To caption: run "
                   "once online (`HF_ENDPOINT` may name a mirror, e.g. `https://hf-mirror.com`), or pass `--captioner` with "
                   "a local folder saved with save_pretrained().", model=captioner.model_id, why=why)

    # ------------------------------------------------------------ search and classify

    def search(self, query: SearchQuery) -> SearchResult:
        """Text / image / combined / negative search (see core.library.search)."""
        if query.image is not None and not isinstance(query.image, Image.Image):
            query.image = as_image(query.image)
        return self._searchable().search(query)

    def search_vector(self, vector: Sequence[float] | torch.Tensor, k: int = 10) -> list[Hit]:
        """Nearest library images to a raw embedding (normalised here); for API clients."""
        return self._searchable().search_vector(torch.as_tensor(vector, dtype=torch.float32), k)

    def similar(self, image_id: str, k: int = 10) -> tuple[Entry, list[Hit]]:
        """Image→image from an image already in the library (no re-encoding)."""
        entry = self.library.find(image_id)
        return entry, self._searchable().similar_to(entry.id, k)

    def unknown_words(self, *texts: str) -> list[str]:
        """Words of labels / queries the model has no token for (only a narrow model knows its
        vocabulary, e.g. the bundled mini model: coloured shapes); its scores for them are noise."""
        return self.encoder.unknown_words([t for t in texts if t])

    @property
    def starters(self) -> Starters:
        """Example images, default labels and search suited to this model (core/starters.py)."""
        return starters(self.encoder.domain)

    def classify(self, image: ImageInput, labels: str, templates: str = "single", lang: str = "en",
                 top_k: int = 5) -> tuple[list[tuple[str, float]], str | None]:
        """Zero-shot: (top-k (label, probability) in the user's language, note or None).
        Chinese labels are planned for the encoder (see plan_prompts)."""
        picture = as_image(image)

        def translate(texts):
            try:
                return self.translator.translate(texts, to="en")
            except ModelUnavailableError:
                return None
        plan = plan_prompts(self.encoder, labels, templates, lang, translate)
        top = self.classifier.classify(picture, plan.labels, plan.templates, top_k, prompt_labels=plan.prompt_labels)
        return top, join([plan.note, self._cannot_judge(plan.labels)])

    def _cannot_judge(self, labels: list[str]) -> Msg | None:
        """Why some labels' scores mean nothing (words the model never saw), so none wins silently."""
        words = self.unknown_words(*labels)
        if not words:
            return None
        unjudged = [label for label in labels if self.unknown_words(label)]
        return Msg("模型从未见过这些词：{words}，无法判断含有它们的标签（{labels}），这些标签的概率只是猜测。",
                   "The model has never seen these words: {words}; it cannot judge the labels with them ({labels}), "
                   "whose probabilities are guesses.", words=", ".join(words), labels=", ".join(unjudged))

    # ------------------------------------------------------------ the library

    def add(self, sources: Iterable, progress: Callable[[int], None] | None = None, caption: bool = False,
            batch_size: int = 64) -> IngestReport:
        """Add files, folders or `Upload`s; `caption=True` also stores zh/en captions (searchable)."""
        annotate = (lambda images: caption_metadata(images, self.captioner, self.translator)) if caption else None
        try:
            return ingest(self.library, self.encoder, sources, batch_size=batch_size, progress=progress,
                          annotate=annotate)
        finally:
            self._written()

    def seed(self, progress: Callable[[int], None] | None = None) -> IngestReport:
        """Add the bundled sample photos and Shapes images (safe to run again)."""
        return self.add(sample_files(), progress=progress)

    def page(self, page: int | float | None = 1, size: int = PAGE_SIZE) -> Page:
        """Page `page` (1-based, clamped) of the library, newest entry first. Reads one page only."""
        self.library.refresh()   # show what the CLI or another app process added
        total = len(self.library)
        pages = max(1, math.ceil(total / size))
        number = min(max(1, int(page or 1)), pages)
        stop = total - (number - 1) * size
        start = max(0, stop - size)
        return Page(self.library.entries(start, stop - start)[::-1], number, pages, total)

    def entries(self, offset: int = 0, limit: int | None = None) -> list[Entry]:
        """Entries in the order they were added (for listings and batch jobs)."""
        self.library.refresh()
        return self.library.entries(offset, limit)

    @property
    def root(self) -> Path:
        """The library folder."""
        return self.library.root

    def entry(self, image_id: str) -> Entry:
        """The entry with this id (the 12-character id `library list` shows, or a longer prefix)."""
        return self.library.find(image_id)

    def thumbnail(self, entry: Entry | Hit) -> Path:
        """Path of the entry's gallery thumbnail (made from the stored image when missing)."""
        return thumb_for(self.library.root, entry.sha256, entry.path, entry.name)

    def stats(self) -> dict:
        """Image count, model, sizes; fresh (other processes' adds included)."""
        self.library.refresh()
        return self.library.stats()

    def __len__(self) -> int:
        return len(self.library)

    # ------------------------------------------------------------ the Learn tab (core/lab/learn.py)

    @property
    def learn(self) -> Learn:
        """Embedding map, similarity matrix, zero-shot vs linear probe over this encoder and library."""
        return self._get("learn", lambda: Learn(self))

    def with_model(self, model: str, library_dir: str | Path, seed: bool = True) -> "Workbench":
        """A new Workbench over another model (e.g. a checkpoint just trained) with its OWN library
        in `library_dir` (features of two models never mix); same device and runtime, in the
        background mode of this one. seed=True adds the bundled samples to a new, empty library."""
        wb = build_workbench(model, library_dir, device=str(self.runtime.device), offline=self.offline,
                             fallback=False, captioner=self.captioner_name, translator=self.translator_name,
                             background=self._flusher is not None, runtime=self.runtime.engine)
        if seed and not len(wb):
            wb.seed()
        return wb

    # ------------------------------------------------------------ housekeeping

    def remove(self, image_ids: Sequence[str]) -> list[Entry]:
        """Remove images by id; returns the entries removed."""
        entries = [self.library.find(i) for i in image_ids]
        self.library.remove([e.sha256 for e in entries])
        self._written()
        return entries

    def compact(self) -> None:
        self.library.compact()

    def verify(self, deep: bool = False) -> dict:
        return self.library.verify(deep=deep)

    def repair(self) -> dict:
        """Rows without files removed, files without rows re-added (never deleted)."""
        try:
            return repair(self.library, self.encoder)
        finally:
            self._written()


def _open_for(root: Path, encoder: Encoder, fallback_used: bool) -> tuple[Library, str | None]:
    """Open the library; when the fallback model meets a library of the real model, keep that
    library untouched and use a separate one beside it (the features must never mix)."""
    try:
        return open_library(root, encoder), None
    except ModelMismatchError:
        if not fallback_used:
            raise
        side = root / "offline-mini"
        return open_library(side, encoder), Msg(
            "{root} 中的图库属于另一个模型，保持原样不动；在那个模型重新可用之前，离线模型使用 {side} 中的单独图库。",
            "The library in {root} belongs to another model and is kept as it is; the offline model "
            "uses a separate library in {side} until that model is available again.", root=str(root), side=str(side))


def build_workbench(model: str | None = None, library_dir: str | Path | None = None, device: str | None = None,
                    offline: bool = False, fallback: bool = True, cache: Path | None = None,
                    captioner: str | None = None, translator: str | None = None, index: str = "auto",
                    background: bool = False, runtime: str | None = None) -> Workbench:
    """Load the encoder (with the bundled mini model as fallback), open the library, wire the services.
    runtime: "torch" (default) | "onnx" | "onnx-int8" | "auto" (see core.settings.pick_runtime); with
    onnx-int8 the quantised encoder is checked against fp32 on this library first (refused below par)."""
    rt = pick_runtime(device, runtime)
    name = model or DEFAULT_MODEL
    if fallback:
        encoder, notice = load_encoder_with_fallback(name, rt, cache, offline)
    else:
        encoder, notice = load_encoder(name, rt, cache=cache, offline=offline), None
    fallback_used = bool(notice)
    library, library_note = _open_for(Path(library_dir or default_paths().library), encoder, fallback_used)
    int8_note = check_int8(encoder, library) if encoder.runtime.engine == "onnx-int8" else None
    notes = (notice, encoder.source_note, encoder.runtime_note, library_note, int8_note)
    notice = join(notes)   # one notice, each part still in both languages
    wb = Workbench(rt, encoder, library, notice=notice, offline=offline, captioner=captioner,
                   translator=translator, index=index, background=background, fallback=fallback_used)
    if captioner:
        wb.captioner   # noqa: B018  an unknown name fails here, at start, not inside the first request
    if translator:
        wb.translator  # noqa: B018  (building them is cheap: the weights load on first use)
    return wb


def reindex_library(library_dir: str | Path | None, model: str, device: str | None = None, offline: bool = False,
                    progress: Callable[[int], None] | None = None, runtime: str | None = None) -> Library:
    """Re-encode every stored image with `model` and switch the library to it."""
    encoder = load_encoder(model, pick_runtime(device, runtime), offline=offline)
    root = Path(library_dir or default_paths().library)
    if not root.exists():
        raise LibraryError(Msg("{root} 处没有图库", "No library at {root}", root=str(root)))
    return reindex(root, encoder, progress=progress)

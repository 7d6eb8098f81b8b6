"""The front door: one object that offers every service of the workbench.

    wb = build_workbench(model="ViT-B/32", library_dir="library", device="auto", access=access)
    wb.search(SearchQuery(text="一只猫", k=5), caller).hits   # .strong of them are strong, the rest weak
    wb.classify("photo.jpg", "cat,dog,小鸟", "ensemble80", caller=caller)
    wb.add(["photos/"], caption=True, caller=caller)
    wb.page(1).entries, wb.thumbnail(entry), wb.stats()
    wb.remove(["3f2a9c0e11d4"], caller); wb.compact(caller); wb.verify(); wb.repair(caller)
    Holder(wb).switch(caller, "runs/r1/best.pt", "runs/r1/library")   # core/holder.py: every surface at once

The Gradio UI, the CLI, the JSON HTTP API, MCP tools and batch jobs are thin adapters over a
`Workbench`; none of them reaches into the library, the index or the encoders. Each action
takes the `caller` (core/access.py: who, role, quota, surface; None is the machine's own user)
and its policy (core/policy.py) is applied here, once: roles, quotas, dedupe, the weak-hit rule.
Image inputs may be PIL images, paths or bytes: paths and bytes go through core's safe loader
(size and pixel limits, clear errors). Heavy optional models (captioner, translator) are
created on first use, once. Nothing here knows about Gradio.
"""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
from PIL import Image

from .access import Access, Caller
from .batching import BatchingEncoder
from .errors import LibraryError, ModelMismatchError, ModelUnavailableError, QueryError, UnknownModelError
from .images import load_image
from .messages import Msg, join
from .monitor import Monitor, measured
from .language.caption import DEFAULT_CAPTIONER, Captioner
from .language.query import caption_metadata, prepare_query
from .language.translate import DEFAULT_TRANSLATOR, Translator
from .library.flusher import Flusher
from .library.index import ServedIndex
from .library.int8check import check_int8
from .library.ingest import IngestReport, StageTimes, ingest, open_library, reindex, repair, sample_files
from .library.search import Hit, Planned, Searcher, SearchQuery, SearchResult, Term, check_query
from .library.store import Entry, Library
from .library.thumbs import thumb_for
from .lab.learn import Learn
from .lab.live import LiveConfig, LiveTrainer
from .models import Encoder, load_encoder, load_encoder_with_fallback
from .policy import Policy
from .safety import Held, SafetyConfig, SafetyPolicy
from .safety.screen import Screen
from .starters import Starters, starters
from .settings import DEFAULT_MODEL, Runtime, default_paths, pick_runtime
from .zeroshot import ZeroShotClassifier, cannot_judge, plan_prompts

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
    held: frozenset = frozenset()   # ids of the entries shown that wait for review (only the teacher sees them)


def as_image(image: ImageInput, name: str | None = None) -> Image.Image:
    """A PIL image as is; a path or bytes through the safe loader (limits, EXIF, modes)."""
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, (str, os.PathLike)):
        return load_image(image, name or Path(image).name)
    return load_image(bytes(image), name or "image")


class Workbench:
    """Every service over one encoder and one library. Build with `build_workbench`."""

    def __init__(self, runtime: Runtime, encoder: Encoder, library: Library, notice: str | None = None,
                 offline: bool = False, captioner: str | None = None, translator: str | None = None,
                 index: str = "auto", background: bool = False, fallback: bool = False, access: Access | None = None,
                 safety: SafetyConfig | None = None, monitor: Monitor | None = None):
        """fallback=True: the model asked for could not be had and the bundled mini model stands in.
        index: "auto" | "exact" | "ivf" | "hnsw" | "ivfpq" | "ivfsq" (see core.library.index).
        background=True (the app): an ANN index is loaded or built in a thread while exact
        search serves, and features_library.pth is rewritten in the background after writes;
        False (the CLI, scripts): both happen in the calling thread, `flush()` when asked.
        access: the app's accounts, roles and quotas (None: open, default limits).
        safety: the class's safety policy (core/safety; None: off).
        monitor: where every action's duration, outcome and caller's surface is recorded (core/monitor.py;
        a new one by default; a model switch hands it on, so the health panel keeps its history)."""
        if background:   # a shared server: concurrent requests share forward passes (core/batching.py)
            encoder = BatchingEncoder(encoder)
        self.runtime, self.encoder, self.library = runtime, encoder, library
        self.notice = notice                 # why a fallback model / library is in use, shown to the user
        self.fallback = fallback             # the bundled mini model stands in for the model asked for
        self.offline = offline
        self.monitor = monitor or Monitor()
        self.captioner_name = captioner or DEFAULT_CAPTIONER
        self.translator_name = translator or DEFAULT_TRANSLATOR
        self.policy = Policy(access)         # roles, quotas, dedupe, the weak-hit rule: applied here only
        self.index = ServedIndex(library, runtime, index, background)   # exact until an ANN index is ready
        self.searcher = Searcher(encoder, library, self.index)
        self.classifier = ZeroShotClassifier(encoder)
        self._lazy: dict = {}
        self._lazy_lock = threading.Lock()
        self._flusher = Flusher(self.flush) if background else None
        self.safety = SafetyPolicy(safety or SafetyConfig(), encoder, library.root, translate=self._translate_or_none)
        self.screen = Screen(library, self.safety)   # what each caller may see: applied here only

    @property
    def access(self) -> Access:
        """The app's accounts, roles, quotas and login throttle (the adapters resolve callers with it)."""
        return self.policy.access

    def build_index(self, kind: str | None = None, caller: Caller | None = None) -> str:
        """(Re)build the ANN index of `kind` (default: this workbench's) from every row and save
        it beside the library; returns the kind. "exact" needs no index."""
        self.policy.admit(caller, "build_index")
        return self.index.build(kind)

    def flush(self) -> None:
        """Make features_library.pth (and a persisted ANN index) hold every image now."""
        self.library.flush()
        self.index.save()

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

    def _translate_or_none(self, texts: list[str]) -> list[str] | None:
        """English for Chinese labels or concepts, or None when no translator can be had here."""
        try:
            return self.translator.translate(texts, to="en")
        except ModelUnavailableError:
            return None

    @staticmethod
    def image(image: ImageInput, name: str | None = None) -> Image.Image:
        """Decode an image input through the safe loader (ImageError with the reason otherwise)."""
        return as_image(image, name)

    @measured("caption")
    def caption(self, images: Sequence[ImageInput], stage: Callable[[str], None] | None = None,
                caller: Caller | None = None) -> list[dict]:
        """N images -> N dicts {"caption_en", "caption_zh"[, "caption_zh_error"]} (see caption_metadata,
        which also says the `stage`s a front end hears). A missing captioner raises ModelUnavailableError."""
        self.policy.admit(caller, "caption")
        return caption_metadata([as_image(im) for im in images], self.captioner, self.translator, stage)

    def captions_unavailable(self) -> Msg | None:
        """Why no caption can be made here before anyone tries (Captioner.unavailable); None when it can."""
        return self.captioner.unavailable()

    # ------------------------------------------------------------ search and classify

    @measured("search")
    def search(self, query: SearchQuery, caller: Caller | None = None) -> SearchResult:
        """Text / image / combined / negative / weighted-terms search (see core.library.search and
        core.library.terms): the query checked, its terms resolved (a library image id as the caller may
        see it, an image file named in the query only for the machine's own user), its texts planned for
        the encoder (Chinese translated for an English-only model, with a note), then its hits, best first,
        of which `result.strong` are strong (core/policy.py). The caller's query is left as it was."""
        self.policy.admit(caller, "search")
        query = check_query(query)
        if query.image is not None and not isinstance(query.image, Image.Image):
            query = replace(query, image=as_image(query.image))
        terms = [self._resolved(t, caller) for t in query.all_terms()]
        planned, note = self._plan_terms(terms)
        for typed, term in zip(terms, planned):
            if term.text is not None and term.weight > 0:
                self.safety.check_query(typed.text, term.text, self.searcher.embed_text)   # QueryRefused, neutral
        plan = Planned(planned[0].text if query.text else "", tuple(planned), note)   # the text comes first
        hidden = self.screen.hidden(caller)
        result = self.searcher.search(replace(query, k=self.screen.widen(query.k, hidden)), plan)
        return self.policy.judge(replace(result, hits=self.screen.hits(result.hits, hidden)[:query.k]))

    def _resolved(self, term: Term, caller: Caller | None) -> Term:
        """A query term ready for the encoder: a library image id found as the caller may see it (an image
        waiting for review is unknown to a student), an image file named in the query read through the safe
        loader, only for the machine's own user (the shared app's users upload instead), bytes decoded."""
        if term.image_id is not None:
            entry = self.screen.entry(term.image_id, caller)
            return replace(term, image_id=entry.sha256, name=entry.name)
        if term.path is not None:
            self.policy.read_file(caller, term.name or term.path)
            path = Path(term.path).expanduser()
            if not path.is_file():
                raise QueryError(Msg("没有图片文件 {path}：查询中以 /、./ 开头或以 .jpg、.png 等结尾的项会当作图片文件读取",
                                     "No image file {path}: a term starting with / or ./, or ending in .jpg, .png "
                                     "and the like, is read as an image file", path=term.path))
            return replace(term, image=load_image(path), path=None)
        if term.image is not None and not isinstance(term.image, Image.Image):
            return replace(term, image=as_image(term.image, term.name or None))
        return term

    def _plan_terms(self, terms: list[Term]) -> tuple[list[Term], str | None]:
        """Each text term as the encoder reads it (translated for an English-only model: `asked` keeps what
        was typed), and the note: a lone text's as ever; with several terms the plan shows the translations,
        so only the warnings (untranslated, not Chinese) are said."""
        planned, notes = [], []
        lone = sum(t.text is not None for t in terms) == 1
        for term in terms:
            if term.text is None:
                planned.append(term)
                continue
            p = prepare_query(term.text, self.encoder, self.translator)
            planned.append(replace(term, text=p.text, asked=term.text) if p.translated else term)
            if p.note and (lone or p.warning) and p.note not in notes:
                notes.append(p.note)
        return planned, join(notes)

    @measured("search")
    def search_vector(self, vector: Sequence[float] | torch.Tensor, k: int = 10,
                      caller: Caller | None = None) -> list[Hit]:
        """Nearest library images to a raw embedding (normalised here); for API clients."""
        self.policy.admit(caller, "search")
        hidden = self.screen.hidden(caller)
        hits = self.searcher.search_vector(torch.as_tensor(vector, dtype=torch.float32), self.screen.widen(k, hidden))
        return self.screen.hits(hits, hidden)[:k]

    @measured("search")
    def similar(self, image_id: str, k: int = 10, caller: Caller | None = None) -> tuple[Entry, list[Hit]]:
        """Image→image from an image already in the library (no re-encoding)."""
        self.policy.admit(caller, "search")
        hidden = self.screen.hidden(caller)
        entry, hits = self.searcher.similar(image_id, self.screen.widen(k, hidden))   # k checked first
        return self.entry(entry.id, caller), self.screen.hits(hits, hidden)[:k]

    def unknown_words(self, *texts: str) -> list[str]:
        """Words of labels / queries the model has no token for (only a narrow model knows its
        vocabulary, e.g. the bundled mini model: coloured shapes); its scores for them are noise."""
        return self.encoder.unknown_words([t for t in texts if t])

    @property
    def starters(self) -> Starters:
        """Example images, default labels and search suited to this model (core/starters.py)."""
        return starters(self.encoder.domain)

    @measured("classify")
    def classify(self, image: ImageInput, labels: str, templates: str = "single", lang: str = "en",
                 top_k: int = 5, caller: Caller | None = None) -> tuple[list[tuple[str, float]], str | None]:
        """Zero-shot: (top-k (label, probability) in the user's language, note or None).
        Chinese labels are planned for the encoder (see plan_prompts)."""
        self.policy.admit(caller, "classify")
        picture = as_image(image)
        plan = plan_prompts(self.encoder, labels, templates, lang, self._translate_or_none)
        top = self.classifier.classify(picture, plan.labels, plan.templates, top_k, prompt_labels=plan.prompt_labels)
        return top, join([plan.note, cannot_judge(self.encoder, plan.labels)])

    # ------------------------------------------------------------ the library

    @measured("add")
    def add(self, sources: Iterable, progress: Callable[[int], None] | None = None, caption: bool = False,
            batch_size: int = 64, caller: Caller | None = None, workers: int | None = None,
            stages: StageTimes | None = None) -> IngestReport:
        """Add files, folders or `Upload`s; `caption=True` also stores zh/en captions (searchable).
        `workers`: decode workers (default: ingest's); `stages`: a StageTimes to watch while it runs.
        A user of the shared app adds within the quota and the disk budget (QuotaError before
        anything is stored); each file is read and hashed once, "is it stored?" asked once
        (core/policy.py). `report.total` is the library's size after."""
        caller = self.policy.admit(caller, "add")
        annotate = (lambda images: caption_metadata(images, self.captioner, self.translator)) if caption else None
        held: dict[str, Held] = {}
        run = lambda items, stored=None: ingest(self.library, self.encoder, items, batch_size=batch_size,  # noqa: E731
                                                progress=progress, annotate=annotate, stored=stored,
                                                workers=workers, stages=stages,
                                                before_store=lambda shas, vectors: self.screen.hold(caller, shas, vectors, held))
        try:
            if not self.policy.reads_first(caller):
                report = run(sources)
            else:
                with self.policy.intake(caller, sources, self.library) as intake:
                    report = intake.done(run(intake.uploads, intake.stored))
        finally:
            self._written()
        report.total = len(self.library)
        report.held = [sha[:12] for sha in held if sha[:12] in set(report.added)]
        report.near = self.screen.near(report.added, self.index)
        return report

    @measured("add")
    def seed(self, progress: Callable[[int], None] | None = None, caller: Caller | None = None) -> IngestReport:
        """Add the bundled sample photos and Shapes images (safe to run again; the teacher only)."""
        self.policy.admit(caller, "seed")
        return self.add(sample_files(), progress=progress)

    @measured("page")
    def page(self, page: int | float | None = 1, size: int = PAGE_SIZE, caller: Caller | None = None) -> Page:
        """Page `page` (1-based, clamped) of the library, newest entry first, as `caller` may see it:
        a student never sees an image waiting for review; the teacher sees it, its id in `held`."""
        return Page(*self.screen.page(caller, page, size))

    def entries(self, offset: int = 0, limit: int | None = None) -> list[Entry]:
        """Entries in the order they were added (for listings and batch jobs)."""
        self.library.refresh()
        return self.library.entries(offset, limit)

    @property
    def root(self) -> Path:
        """The library folder."""
        return self.library.root

    def entry(self, image_id: str, caller: Caller | None = None) -> Entry:
        """The entry with this id (the 12-character id `library list` shows, or a longer prefix);
        NotFoundError for an image waiting for review that the caller may not see."""
        return self.screen.entry(image_id, caller)

    def thumbnail(self, entry: Entry | Hit) -> Path:
        """Path of the entry's gallery thumbnail (made from the stored image when missing)."""
        return thumb_for(self.library.root, entry.sha256, entry.path, entry.name)

    def stats(self) -> dict:
        """Image count, model, sizes, and the safety policy ({"mode", "filter", "held"}); fresh (other
        processes' adds included)."""
        self.library.refresh()
        return {**self.library.stats(), "safety": self.safety.status(len(self.safety.waiting(self.library.contains)))}

    def __len__(self) -> int:
        return len(self.library)

    # ------------------------------------------------------------ the Learn tab (core/lab/learn.py)

    @property
    def learn(self) -> Learn:
        """Embedding map, similarity matrix, zero-shot vs linear probe over this encoder and library."""
        return self._get("learn", lambda: Learn(self))

    @measured("train")
    def train(self, trainer: LiveTrainer, config: LiveConfig, caller=None) -> bool:
        """Start a live mini-CLIP training with `trainer` (core/lab/live.py); False when one is running
        already. `caller`: who asks, from where (the monitor counts its surface)."""
        return trainer.start(config)

    def with_model(self, model: str, library_dir: str | Path, seed: bool = True) -> "Workbench":
        """A new Workbench over another model (e.g. a checkpoint just trained) with its OWN library
        in `library_dir` (features of two models never mix); same device, runtime and policy (the
        quotas used so far carry over), in the background mode of this one. seed=True adds the
        bundled samples to a new, empty library. Holder.switch puts it in place for every surface."""
        wb = build_workbench(model, library_dir, device=str(self.runtime.device), offline=self.offline,
                             fallback=False, captioner=self.captioner_name, translator=self.translator_name,
                             background=self._flusher is not None, runtime=self.runtime.engine, access=self.access,
                             safety=self.safety.config, monitor=self.monitor)
        if seed and not len(wb):
            wb.seed()
        return wb

    # ------------------------------------------------------------ housekeeping

    def remove(self, image_ids: Sequence[str], caller: Caller | None = None) -> list[Entry]:
        """Remove images by id (the teacher only); returns the entries removed."""
        self.policy.admit(caller, "remove")
        entries = [self.library.find(i) for i in image_ids]
        self.library.remove([e.sha256 for e in entries])
        self.screen.removed(entries)
        self._written()
        return entries

    # ------------------------------------------------------------ review and near-duplicates (the teacher)

    def review(self, caller: Caller | None = None) -> list[tuple[Entry, Held]]:
        """The images waiting for the teacher, oldest first, each with why it waits."""
        return self.screen.review(self.policy.admit(caller, "review"))

    def approve(self, image_ids: Sequence[str], caller: Caller | None = None) -> list[Entry]:
        """Let these waiting images be seen and searched by everyone; returns the entries approved."""
        return self.screen.approve(image_ids, self.policy.admit(caller, "review"))

    def near_duplicates(self, threshold: float | None = None, caller: Caller | None = None) -> list[list[Entry]]:
        """Groups of near-duplicate images (cosine >= threshold, default the policy's 0.94), each oldest
        first: the teacher keeps one and removes the rest."""
        self.policy.admit(caller, "review")
        return self.screen.near_duplicates(threshold)

    def compact(self, caller: Caller | None = None) -> None:
        self.policy.admit(caller, "compact")
        self.library.compact()

    def verify(self, deep: bool = False) -> dict:
        return self.library.verify(deep=deep)

    def repair(self, caller: Caller | None = None) -> dict:
        """Rows without files removed, files without rows re-added (never deleted; the teacher only)."""
        self.policy.admit(caller, "repair")
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
                    background: bool = False, runtime: str | None = None, access: Access | None = None,
                    safety: SafetyConfig | None = None, monitor: Monitor | None = None) -> Workbench:
    """Load the encoder (with the bundled mini model as fallback), open the library, wire the services.
    runtime: "torch" (default) | "onnx" | "onnx-int8" | "auto" (see core.settings.pick_runtime); with
    onnx-int8 the quantised encoder is checked against fp32 on this library first (refused below par).
    access: the app's accounts, roles and quotas (None: open, default limits). safety: the class's
    safety policy (core/safety: mode, concept list, classifier head; None: off); monitor: see Workbench."""
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
                   translator=translator, index=index, background=background, fallback=fallback_used, access=access,
                   safety=safety, monitor=monitor)
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

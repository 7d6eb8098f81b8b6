"""Build the services once and hand them to the CLI or the app.

    wb = build_workbench(model="ViT-B/32", library_dir="library", device="auto")
    wb.searcher.search(SearchQuery(text="一只猫"))

Nothing here knows about Gradio; the app and the CLI receive a `Workbench`.
Heavy optional models (captioner, translator) are created on first use, once.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from .encoders import Encoder, load_encoder, load_encoder_with_fallback
from .ingest import open_library
from .library import Library, ModelMismatchError
from .search import ExactIndex, Searcher
from .settings import DEFAULT_MODEL, Runtime, default_paths, pick_runtime
from .zeroshot import ZeroShotClassifier, plan_prompts

__all__ = ["Workbench", "build_workbench"]


@dataclass
class Workbench:
    runtime: Runtime
    encoder: Encoder
    library: Library
    searcher: Searcher
    classifier: ZeroShotClassifier
    notice: str | None = None          # why a fallback model is in use, shown to the user
    offline: bool = False
    captioner_name: str = "vit-gpt2"
    translator_name: str = "nllb"
    _lazy: dict = field(default_factory=dict)
    _lazy_lock: threading.Lock = field(default_factory=threading.Lock)

    def _get(self, key: str, make):
        with self._lazy_lock:
            if key not in self._lazy:
                self._lazy[key] = make()
            return self._lazy[key]

    @property
    def translator(self):
        """The zh↔en translator object (it loads its weights lazily on first translation)."""
        from .translate import Translator
        return self._get("translator", lambda: Translator(self.translator_name, self.runtime, offline=self.offline))

    @property
    def captioner(self):
        from .caption import Captioner
        return self._get("captioner", lambda: Captioner(self.captioner_name, self.runtime, offline=self.offline))

    def provide(self, captioner=None, translator=None) -> None:
        """Use these captioner / translator objects instead of building them (tests, custom models)."""
        with self._lazy_lock:
            if captioner is not None:
                self._lazy["captioner"] = captioner
            if translator is not None:
                self._lazy["translator"] = translator

    def zero_shot(self, image, label_spec: str, template_spec: str, lang: str = "en",
                  top_k: int = 5) -> tuple[list[tuple[str, float]], str | None]:
        """Classify one image; Chinese labels are planned for the encoder (see plan_prompts).
        Returns (top-k (label, probability) in the user's language, note or None)."""
        from .encoders import ModelUnavailableError

        def translate(texts):
            try:
                return self.translator.translate(texts, to="en")
            except ModelUnavailableError:
                return None
        plan = plan_prompts(self.encoder, label_spec, template_spec, lang, translate)
        top = self.classifier.classify(image, plan.labels, plan.templates, top_k, prompt_labels=plan.prompt_labels)
        return top, plan.note

    def preload_translator(self) -> bool:
        """Load the zh→en translator now (e.g. in a background thread at app start) so the first
        Chinese query does not wait for it. Only useful with an English-only encoder."""
        from .encoders import ModelUnavailableError, UnknownModelError
        if self.encoder.multilingual:
            return False
        try:
            self.translator.load("en")
            return True
        except (ModelUnavailableError, UnknownModelError):
            return False   # the search tab says so on the first Chinese query

    def plan_query(self, text: str) -> tuple[str, str | None]:
        """Translate a Chinese query for an English-only encoder; (text used, note for the user)."""
        from .lang import prepare_query
        plan = prepare_query(text, self.encoder, self.translator)
        return plan.text, plan.note


def _open_for(root: Path, encoder: Encoder, fallback_used: bool) -> tuple[Library, str | None]:
    """Open the library; when the fallback model meets a library of the real model, keep that
    library untouched and use a separate one beside it (the features must never mix)."""
    try:
        return open_library(root, encoder), None
    except ModelMismatchError:
        if not fallback_used:
            raise
        side = root / "offline-mini"
        return open_library(side, encoder), (
            f"The library in {root} belongs to another model and is kept as it is; the offline model "
            f"uses a separate library in {side} until that model is available again.")


def build_workbench(model: str | None = None, library_dir: str | Path | None = None, device: str | None = None,
                    offline: bool = False, fallback: bool = True, cache: Path | None = None,
                    captioner: str | None = None, translator: str | None = None) -> Workbench:
    """Load the encoder (with the bundled mini model as fallback), open the library, wire the services."""
    runtime = pick_runtime(device)
    name = model or DEFAULT_MODEL
    if fallback:
        encoder, notice = load_encoder_with_fallback(name, runtime, cache, offline)
    else:
        encoder, notice = load_encoder(name, runtime, cache, offline), None
    library, library_note = _open_for(Path(library_dir or default_paths().library), encoder, fallback_used=bool(notice))
    notice = " ".join(n for n in (notice, library_note) if n) or None
    wb = Workbench(runtime, encoder, library, searcher=None, classifier=ZeroShotClassifier(encoder),  # type: ignore[arg-type]
                   notice=notice, offline=offline)
    wb.captioner_name = captioner or wb.captioner_name
    wb.translator_name = translator or wb.translator_name
    if captioner:
        wb.captioner   # noqa: B018  an unknown name fails here, at start, not inside the first request
    if translator:
        wb.translator  # noqa: B018  (building them is cheap: the weights load on first use)
    wb.searcher = Searcher(encoder, library, ExactIndex(library, runtime), plan=wb.plan_query)
    return wb

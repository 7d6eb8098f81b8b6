"""Gradio callbacks: check inputs, call core, turn domain errors into gr.Error. No model logic.

`Callbacks(holder)` receives the server's Holder (core/holder.py: the Workbench built once at start,
switched for every surface at once) and reads `holder.wb` at every event; every method is one event
and passes its caller (who, from the page) to the Workbench, which applies the policy.
The last input of each is the UI language (a gr.State, so API clients need not pass it).
A message for a slot (a status or info Markdown) is a `Say` (ui/language.py): text in that language
that a later language switch can say again in the other.
"""
from __future__ import annotations

import html
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import gradio as gr

from core import Holder, IngestReport, SearchQuery, SearchResult, Workbench
from core.access import Access, Caller
from core.errors import ModelUnavailableError, UnknownModelError
from core.library.search import WEAK_RATIO, parse_terms
from core.messages import localize

from .errors import KEEP, SLOT, fail, in_place, user_errors
from .i18n import t
from .language import Say, say

__all__ = ["Callbacks", "UploadJanitor", "CUSTOM", "UPLOAD_CHUNK"]

CUSTOM = "custom"     # dropdown value: the labels / template typed by the user
UPLOAD_CHUNK = 32     # images encoded and stored per batch (progress every 32 images)
UPLOAD_GRACE_S = 60.0  # an ingested upload's temp file is deleted once unused (and not re-sent) this long
_MB = 2 ** 20


def _gallery_label(name: str, image_id: str, meta: dict, lang: str) -> str:
    """"name · id", then the stored caption in the UI language (the other one if only that exists)."""
    first, second = ("caption_zh", "caption_en") if lang == "zh" else ("caption_en", "caption_zh")
    caption = meta.get(first) or meta.get(second)
    return f"{name} · {image_id}" + (f"\n{caption}" if caption else "")


def _summary_line(added: int, dups: int, errors: int, total: int, lang: str) -> str:
    """An upload's summary line (the page's and the toast's): added, already present, unreadable, library size."""
    return t("lib.summary", lang, added=added, dups=dups, errors=errors, n=total)


def who(access: Access, request: gr.Request | None) -> Caller:
    """The caller of an event: the login name, or the browser session without logins, on the page."""
    return access.caller(getattr(request, "username", None), getattr(request, "session_hash", None), "page")


class UploadJanitor:
    """Deletes Gradio's temp copies of uploads once used: stored images live in the library, and
    rejected, duplicate, classified, searched or captioned ones must not stay on disk (Gradio's own
    cache keeps them up to a day in a folder every process on the machine shares). Gradio names uploads by content,
    so two students sending the same file share one temp file: a file is deleted only when no
    request is using it and nobody uploaded it again for `grace_s` seconds. Files outside
    Gradio's upload folder (e.g. bundled samples) are never touched."""

    def __init__(self, grace_s: float | None = None):
        self.grace_s = UPLOAD_GRACE_S if grace_s is None else grace_s
        self._using: dict[Path, int] = {}
        self._done: dict[Path, float] = {}   # path -> when its last user finished
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    @contextmanager
    def using(self, files: list[str]):
        folder = Path(gr.utils.get_upload_folder()).resolve()
        paths = [p for p in (Path(f).resolve() for f in files) if p.is_relative_to(folder)]
        with self._lock:
            for p in paths:
                self._using[p] = self._using.get(p, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                for p in paths:
                    self._using[p] -= 1
                    if not self._using[p]:
                        del self._using[p]
                    self._done[p] = time.time()
            self.sweep()

    @staticmethod
    def gone(file: str) -> bool:
        """True for an upload already deleted (a box still showing it sends its old path again)."""
        path = Path(file).resolve()
        return path.is_relative_to(Path(gr.utils.get_upload_folder()).resolve()) and not path.exists()

    def sweep(self) -> None:
        now, later = time.time(), False
        with self._lock:
            for p, done in list(self._done.items()):
                try:
                    age = now - max(done, p.stat().st_mtime)
                except OSError:
                    del self._done[p]
                    continue
                if p not in self._using and age >= self.grace_s:
                    p.unlink(missing_ok=True)
                    del self._done[p]
                else:
                    later = True
            if later and not (self._timer and self._timer.is_alive()):   # one look again after the grace
                self._timer = threading.Timer(self.grace_s + 1, self._timed_sweep)
                self._timer.daemon = True   # never blocks shutdown
                self._timer.start()

    def _timed_sweep(self) -> None:
        with self._lock:
            self._timer = None
        self.sweep()


class Callbacks:
    def __init__(self, holder: Holder | Workbench, access: Access | None = None):
        """`access`, when given, must be the workbench's own (build_workbench(access=...)): one policy."""
        self.holder = Holder.of(holder)
        if access is not None and access is not self.access:
            raise ValueError("Callbacks: the access policy is the workbench's; build it with build_workbench(access=...)")
        self.janitor = UploadJanitor()

    @property
    def wb(self) -> Workbench:
        """The server's workbench now (the Learn tab may switch it for every surface)."""
        return self.holder.wb

    @property
    def access(self) -> Access:
        return self.holder.access

    def _who(self, request: gr.Request | None) -> Caller:
        return who(self.access, request)

    # ------------------------------------------------------------ zero-shot

    @in_place(None, SLOT)
    def classify(self, image: str | None, labelset: str, labels: str, templates: str, custom_template: str,
                 add: bool, lang: str, page: bool = False, request: gr.Request = None):
        """-> ({label: probability} top 5, status markdown). `page`: a browser session (ui/errors.py in_place)."""
        if not image:
            raise fail("err.no_image", lang)
        with user_errors(lang):
            picture = self._picture(image, lang)   # core's safe loader: the same error for every bad file
            top, note = self.wb.classify(picture, labels if labelset == CUSTOM else labelset,
                                         custom_template if templates == CUSTOM else templates, lang,
                                         caller=self._who(request))
            added = self._summary(self._ingest([image], self._who(request))) if add else None
        unjudged = {label for label, _ in top if self.wb.unknown_words(label)}   # core's note says why

        def status(l: str) -> str:
            sign = "⚠️" if unjudged else "ℹ️"
            parts = (note and f"{sign} {localize(note, l)}", added and t("zs.added", l, summary=added(l)))
            return "\n\n".join(s for s in parts if s)
        return {f"⚠️ {label}" if label in unjudged else label: p for label, p in top}, Say(status, lang)

    # ------------------------------------------------------------ search

    @in_place(KEEP, KEEP, SLOT)
    def search(self, text: str, image: str | None, minus: str, k: float, threshold: float, all_k: bool = False,
               image_weight: float = 1.0, lang: str = "en", page: bool = False, request: gr.Request = None):
        """-> (gallery items, hit ids, info markdown). The text box takes weighted terms ('"2:cat" + ID - dog':
        core's parse_terms), the uploaded image is one more term (`image_weight`). The weak hits core marks
        (result.strong on) are left out unless `all_k`, then marked ◌; /api/search returns the same hits with
        "weak" flags."""
        with user_errors(lang):   # the syntax, an empty query, k and the threshold are core's to check
            query = SearchQuery(terms=parse_terms(text or ""), image=self._picture(image, lang) if image else None,
                                image_weight=float(image_weight), minus=[minus or ""], k=int(k),
                                threshold=float(threshold) or None)
            result = self.wb.search(query, self._who(request))
        hits = result.hits if all_k else result.hits[:result.strong]
        asked = " ".join(t.asked or t.text for t in result.terms if t.text is not None)
        info = self._search_info(result, asked, weak=result.weak, shown_all=all_k)
        return self._gallery(hits, result.strong), [h.id for h in hits], Say(info, lang)

    @staticmethod
    def add_term(text: str, image_id: str, lang: str) -> str:
        """The selected result's id added to the query text as one more term ("beach" -> "beach + 3f2a9c0e11d4")."""
        image_id = (image_id or "").strip()
        if not image_id:
            raise fail("search.no_selection", lang)
        text = (text or "").strip()
        return f"{text} + {image_id}" if text else image_id

    @in_place(KEEP, KEEP, SLOT)
    def search_similar(self, image_id: str, k: float, lang: str, page: bool = False, request: gr.Request = None):
        """Image→image from a library image id -> (gallery items, hit ids, info markdown)"""
        if not (image_id or "").strip():
            raise fail("search.no_selection", lang)
        with user_errors(lang):
            entry, hits = self.wb.similar(image_id, int(k), caller=self._who(request))
        return self._gallery(hits), [h.id for h in hits], say("search.similar_to", lang, name=entry.name, id=entry.id,
                                                              n=len(hits))

    @staticmethod
    def pick(ids: list[str], evt: gr.SelectData) -> str:
        """Gallery click -> the id of the clicked image."""
        return ids[evt.index] if ids and 0 <= evt.index < len(ids) else ""

    def _unknown(self, text: str) -> Callable[[str], str]:
        """lang -> a warning naming the words the model never saw ("" when it knows them all)."""
        words = ", ".join(self.wb.unknown_words(text))
        return lambda lang: t("warn.unknown_words", lang, words=words) if words else ""

    def _gallery(self, hits, strong: int | None = None) -> list[tuple[str, str]]:
        """Thumbnails captioned "score · name"; hits from index `strong` on are marked ◌ (weak)."""
        strong = len(hits) if strong is None else strong
        return [(str(self.wb.thumbnail(h)), f"{'◌ ' if i >= strong else ''}{h.score:.3f} · {h.name}")
                for i, h in enumerate(hits)]

    def _search_info(self, result: SearchResult, asked: str, weak: int = 0,
                     shown_all: bool = True) -> Callable[[str], str]:
        """lang -> the search's info markdown (read from the library now, said in any language later).
        It keeps the note, the text used and the count, never the result: it lives in the session's State."""
        unknown, empty = self._unknown(asked), not len(self.wb)
        note, used, n, plan = result.note, result.text_used, len(result.hits), result.plan
        asked = asked.strip()

        def info(lang: str) -> str:
            lines = [w for w in (unknown(lang),) if w]
            if plan:   # several or weighted terms: each with its weight, a translated one with what was read
                lines.append(t("search.plan", lang, plan=localize(plan, lang)))
            if note:   # core's note is a Msg: English, and Chinese for a Chinese page
                lines.append(t("search.note", lang, note=localize(note, lang)))
            elif used and used != asked and not plan:
                lines.append(t("search.used", lang, text=used))
            if not n:
                lines.append(t("search.empty_lib" if empty else "search.none", lang))
            else:
                lines.append(t("search.count", lang, n=n - (0 if shown_all else weak)))
            if weak:
                lines.append(t("search.weak_marked" if shown_all else "search.weak_hidden", lang, m=weak,
                               pct=round(WEAK_RATIO * 100)))
            return "\n\n".join(lines)
        return info

    # ------------------------------------------------------------ captions

    @in_place("", "", SLOT)
    def caption(self, image: str | None, lang: str, page: bool = False, request: gr.Request = None,
                progress=gr.Progress()):
        """-> (English caption, Chinese caption, status markdown); a missing model is explained, not raised.
        The progress text says which step runs: loading the captioner (the slow first time), captioning,
        translating."""
        if not image:
            raise fail("err.no_image", lang)
        with user_errors(lang):
            picture = self._picture(image, lang)
        steps = {"load": (0.0, "cap.loading"), "caption": (0.4, "cap.writing"), "translate": (0.7, "cap.translating")}

        def stage(name: str) -> None:
            if name in steps:
                progress(steps[name][0], desc=t(steps[name][1], lang))
        try:
            meta = self.wb.caption([picture], stage=stage, caller=self._who(request))[0]
        except (ModelUnavailableError, UnknownModelError) as e:
            return "", "", say("cap.unavailable", lang, detail=e)
        zh_error = meta.get("caption_zh_error")
        status = say("cap.no_zh", lang, detail=zh_error) if zh_error else say("cap.done", lang)
        return meta["caption_en"], meta.get("caption_zh") or "", status

    # ------------------------------------------------------------ library

    @in_place(SLOT)
    def add_to_library(self, files: list[str] | None, lang: str, page: bool = False, request: gr.Request = None,
                       progress=gr.Progress()):
        """Many uploaded files -> summary markdown (added / already present / unreadable with reasons).
        Within the caller's quota and the library's budget; the temp copies are deleted either way."""
        if not files:
            raise fail("lib.no_files", lang)
        with self.janitor.using(files), user_errors(lang):
            report = self._ingest(files, self._who(request), progress=progress, lang=lang)
        if report.errors:   # a toast too: the summary may be scrolled out of view on a projector
            gr.Warning(self._toast(report, lang), title=t("warn.title", lang))
        return Say(self._summary(report), lang)

    @in_place(SLOT)
    def seed_library(self, lang: str, page: bool = False, request: gr.Request = None, progress=gr.Progress()):
        """Add the bundled sample images -> summary markdown (the teacher only)."""
        with user_errors(lang):
            report = self.wb.seed(progress=self._progress(progress, None, t("lib.progress", lang), t("lib.unit", lang)),
                                  caller=self._who(request))
        return Say(self._summary(report), lang)

    def library_page(self, page: float | None, lang: str, request: gr.Request = None):
        """-> (gallery items, ids on the page, page info markdown, page number). A student never sees an
        image waiting for review; the teacher sees it marked ⏸."""
        with user_errors(lang):
            pg = self.wb.page(page, caller=self._who(request))
        items = [(str(self.wb.thumbnail(e)), ("⏸ " + t("review.mark", lang) + " · " if e.id in pg.held else "")
                  + _gallery_label(e.name, e.id, e.meta, lang)) for e in pg.entries]
        info = (say("lib.page_info", lang, page=pg.page, pages=pg.pages, n=pg.total) if pg.total
                else say("lib.empty", lang))
        return items, [e.id for e in pg.entries], info, pg.page

    def library_stats(self, lang: str, request: gr.Request = None) -> Say:
        """Size, model and disk; the library's folder only for the teacher (students see no server paths)."""
        s = self.wb.stats()
        key = "lib.stats_admin" if self._who(request).admin else "lib.stats"
        return say(key, lang, n=s["images"], model=s["model_id"], dim=s["dim"], path=s["path"],
                   images_mb=s["image_bytes"] / _MB, feats_mb=s["features_bytes"] / _MB)

    def confirm_remove(self, image_id: str, lang: str):
        """Delete, step one: -> (the confirmation row shown, its question naming the image)."""
        if not (image_id or "").strip():
            raise fail("lib.no_selection", lang)
        with user_errors(lang):
            entry = self.wb.entry(image_id)
        return gr.update(visible=True), say("lib.confirm", lang, name=entry.name, id=entry.id)

    @in_place(SLOT)
    def remove_image(self, image_id: str, lang: str, page: bool = False, request: gr.Request = None) -> Say:
        if not (image_id or "").strip():
            raise fail("lib.no_selection", lang)
        with user_errors(lang):
            entry, = self.wb.remove([image_id], self._who(request))
        return say("lib.removed", lang, name=entry.name, id=entry.id, n=len(self.wb))

    def teacher_controls(self, request: gr.Request = None):
        """On page load: the delete / maintenance buttons only for the teacher (core checks again)."""
        admin = self._who(request).admin
        return [gr.update(visible=admin)] * 4

    @in_place(SLOT)
    def verify_library(self, lang: str, page: bool = False) -> Say:
        with user_errors(lang):
            r = self.wb.verify()
        if not r["healthy"]:
            return say("lib.verify_bad", lang, missing=r["missing_files"], orphans=r["orphan_files"],
                       finite=r["features_finite"])
        return say("lib.verify_ok", lang, rows=r["rows"])

    @in_place(SLOT)
    def compact_library(self, lang: str, page: bool = False, request: gr.Request = None) -> Say:
        with user_errors(lang):
            self.wb.compact(self._who(request))
        return say("lib.compacted", lang, n=len(self.wb))

    @in_place(SLOT)
    def repair_library(self, lang: str, page: bool = False, request: gr.Request = None) -> Say:
        """Rows without files removed, files without rows re-added (never deleted) -> summary."""
        with user_errors(lang):
            r = self.wb.repair(self._who(request))
        return say("lib.repaired", lang, removed=r["rows_removed"], readded=r["images_readded"], n=len(self.wb))

    # ------------------------------------------------------------ helpers

    def _picture(self, image: str, lang: str):
        """An uploaded image through core's safe loader; its temp file is deleted a minute after its
        last use (UploadJanitor), so a second click on the same box still finds it."""
        if self.janitor.gone(image):
            raise fail("err.upload_gone", lang)
        with self.janitor.using([image]):
            return self.wb.image(image)

    def _ingest(self, files: list[str], caller: Caller, progress=None, lang: str = "en") -> IngestReport:
        """Add uploaded files as the caller (core reads and hashes each once and holds the upload against
        the quota), reporting progress per batch. Gradio keeps each upload under its original name: core
        reads that name for display only."""
        advance = self._progress(progress, len(files), t("lib.progress", lang), t("lib.unit", lang))
        return self.wb.add([Path(f) for f in files], progress=advance, batch_size=UPLOAD_CHUNK, caller=caller)

    @staticmethod
    def _progress(progress, total: int | None, desc: str, unit: str = "images"):
        """A core progress callback (n more done) driving a gr.Progress bar (`unit`: what is counted)."""
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress((done, total), desc=desc, unit=unit)
        return advance

    def _summary(self, report: IngestReport) -> Callable[[str], str]:
        """lang -> the ingest summary markdown (with the library's size after it, report.total); keeps the
        counts and the names it lists, not the report."""
        added, duplicates, errors, total = len(report.added), tuple(report.duplicates), tuple(report.errors), report.total
        held, near = len(report.held), tuple(report.near)

        def summary(lang: str) -> str:
            head = _summary_line(added, len(duplicates), len(errors), total, lang)
            head += " " + t("lib.held", lang, n=held) if held else ""
            items = [t("lib.dup_item", lang, name=n) for n in duplicates]
            items += [t("lib.near_item", lang, id=i, older=o, cos=f"{c:.3f}") for i, o, c in near]
            items += [t("lib.error_item", lang, name=n, reason=localize(r, lang)) for n, r in errors]
            return "\n".join([head, ""] + [f"- {i}" for i in items])
        return summary

    def _toast(self, report: IngestReport, lang: str, shown: int = 5) -> str:
        """The summary line and the first unreadable files, HTML-escaped (toasts render HTML)."""
        head = _summary_line(len(report.added), len(report.duplicates), len(report.errors), report.total, lang)
        lines = [t("lib.error_item", lang, name=n, reason=localize(r, lang)) for n, r in report.errors[:shown]]
        return "<br>".join(html.escape(x) for x in [head, *lines] + (["…"] if len(report.errors) > shown else []))



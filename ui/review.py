"""The teacher's review panel in the Library tab: the images waiting for review, each approved or
removed in one click, and the near-duplicate groups (keep one, remove the rest).

    panel = review_panel(cb, loc, lang, on_page)   # inside library_tab; hidden from students on load

Every decision is the front door's (Workbench.review / approve / remove / near_duplicates): only a
teacher who logged in may see or decide, and core checks that again on every call.
"""
from __future__ import annotations

import gradio as gr

from core import Workbench
from core.messages import localize

from .callbacks import Callbacks
from .errors import SLOT, fail, in_place, user_errors
from .i18n import t
from .language import Localizer, Say, say

__all__ = ["review_panel", "Review"]

_PRIVATE = {"api_visibility": "private"}
_CHEAP = {"concurrency_limit": 16}


class Review:
    """The panel's callbacks, over the server's workbench (Callbacks.holder) as the page's caller."""

    def __init__(self, cb: Callbacks):
        self.cb = cb

    @property
    def wb(self) -> Workbench:
        return self.cb.wb

    def waiting(self, lang: str, request: gr.Request = None):
        """-> (gallery items captioned with why each waits, their ids, count markdown)."""
        with user_errors(lang):
            queue = self.wb.review(self.cb._who(request))
        items = [(str(self.wb.thumbnail(e)), f"{localize(h.reason(), lang)} · {e.name} · {e.id}") for e, h in queue]
        status = say("review.count", lang, n=len(queue)) if queue else say("review.none", lang)
        return items, [e.id for e, _ in queue], status

    @in_place(SLOT)
    def refresh(self, lang: str, request: gr.Request = None):
        """The waiting list for the teacher; nothing for anyone else (the panel is hidden from them)."""
        if not self.wb.safety.sees_held(self.cb._who(request)):
            return [], [], ""
        return self.waiting(lang, request)

    def approve(self, image_id: str, lang: str, page: bool = False, request: gr.Request = None) -> Say:
        """Approve the selected waiting image: everyone may see and find it from now on."""
        if not (image_id or "").strip():
            raise fail("review.no_selection", lang)
        with user_errors(lang):
            approved = self.wb.approve([image_id], self.cb._who(request))
        if not approved:
            return say("review.not_waiting", lang, id=image_id.strip())
        return say("review.approved", lang, name=approved[0].name, id=approved[0].id)

    @in_place(SLOT)
    def remove(self, image_id: str, lang: str, page: bool = False, request: gr.Request = None) -> Say:
        """Remove the selected image (waiting, or one of a near-duplicate group) in one click."""
        if not (image_id or "").strip():
            raise fail("review.no_selection", lang)
        with user_errors(lang):
            entry, = self.wb.remove([image_id], self.cb._who(request))
        return say("lib.removed", lang, name=entry.name, id=entry.id, n=len(self.wb))

    def duplicates(self, lang: str, request: gr.Request = None):
        """-> (gallery items, one group after another, oldest first in each; their ids; count markdown)."""
        with user_errors(lang):
            groups = self.wb.near_duplicates(caller=self.cb._who(request))
        items, ids = [], []
        for g, group in enumerate(groups, 1):
            for i, e in enumerate(group):
                tag = t("review.oldest" if i == 0 else "review.copy", lang)
                items.append((str(self.wb.thumbnail(e)), f"{t('review.group', lang, g=g)} · {tag} · {e.name} · {e.id}"))
                ids.append(e.id)
        status = say("review.groups", lang, n=len(groups)) if groups else say("review.no_groups", lang)
        return items, ids, status

    def visible(self, request: gr.Request = None):
        """On page load: the panel only for the teacher who may review (core checks again)."""
        return gr.update(visible=self.wb.safety.sees_held(self.cb._who(request)))


def review_panel(cb: Callbacks, loc: Localizer, lang: gr.State, on_page: gr.State, then: dict) -> tuple[dict, dict]:
    """Lays out the panel; `then`: the event kwargs that refresh the library page after a decision.
    Returns (the event kwargs that refresh the waiting list, the kwargs of the load event that shows
    the panel to the teacher only)."""
    review = Review(cb)
    ids = gr.State([])
    with loc(gr.Accordion, label="review.title", open=cb.wb.safety.on, visible=False, elem_id="review") as panel:
        status = loc.message(elem_id="review-status")
        gallery = loc(gr.Gallery, label="review.gallery", columns=8, height=300, object_fit="cover",
                      fit_columns=False, elem_id="review-gallery")
        with gr.Row():
            selected = loc(gr.Textbox, label="review.selected", scale=2, elem_id="review-selected")
            approve = loc(gr.Button, value="review.approve", variant="primary", scale=1, elem_id="review-approve")
            remove = loc(gr.Button, value="review.remove", variant="stop", scale=1, elem_id="review-remove")
        with gr.Row():
            show_waiting = loc(gr.Button, value="review.show_waiting", size="sm")
            show_dups = loc(gr.Button, value="review.show_duplicates", size="sm", elem_id="review-duplicates")
        report = loc.message(elem_id="review-report")
    waiting = loc.wire(review.refresh, [lang], [gallery, ids, status], **_PRIVATE, **_CHEAP, show_progress="hidden")
    show_waiting.click(**loc.wire(review.waiting, [lang], [gallery, ids, status], api_name="review_queue", **_CHEAP))
    show_dups.click(**loc.wire(review.duplicates, [lang], [gallery, ids, status], api_name="near_duplicates",
                               concurrency_limit=1))
    gallery.select(cb.pick, [ids], [selected], **_PRIVATE, **_CHEAP)
    approve.click(**loc.wire(review.approve, [selected, lang, on_page], [report], api_name="approve_image", **_CHEAP)
                  ).then(lambda: "", None, [selected], **_PRIVATE).then(**waiting).then(**then)
    remove.click(**loc.wire(review.remove, [selected, lang, on_page], [report], api_name="reject_image", **_CHEAP)
                 ).then(lambda: "", None, [selected], **_PRIVATE).then(**waiting).then(**then)
    shown = {"fn": review.visible, "inputs": None, "outputs": [panel], **_PRIVATE, "show_progress": "hidden",
             "concurrency_limit": None}
    return waiting, shown

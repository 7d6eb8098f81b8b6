"""The four tabs' layouts and event wiring.

Each tab function lays out components (registering every visible string with the
Localizer, ui/language.py) and wires its events to `Callbacks` methods with stable api_names.
"""
from __future__ import annotations

from typing import Callable

import gradio as gr

from core.library.search import MAX_K
from core.messages import localize

from .callbacks import CUSTOM, Callbacks
from .i18n import t
from .language import Localizer
from .review import review_panel
from .safe_image import SafeImage

__all__ = ["SafeImage", "classify_tab", "search_tab", "caption_tab", "library_tab"]

LABEL_SETS = {CUSTOM: "zs.set.custom", "imagenet1k": "zs.set.imagenet1k", "cifar10": "zs.set.cifar10",
              "cifar100": "zs.set.cifar100"}
TEMPLATES = {"single": "zs.tpl.single", "selected7": "zs.tpl.selected7", "ensemble80": "zs.tpl.ensemble80",
             "zh": "zs.tpl.zh", CUSTOM: "zs.tpl.custom"}
SEARCH_K = (1, min(100, MAX_K), 12)       # slider min, max, default
CHEAP = 16                                # concurrent runs of cheap events (paging, stats): no model involved
MODEL = {"concurrency_id": "model"}       # classify + search share one queue (limit: the app's default)
INGEST = {"concurrency_id": "ingest", "concurrency_limit": 8}   # uploads queue apart: a long upload never
                                                               # stalls the class's searches (their encodes batch)
_PRIVATE = {"api_visibility": "private"}
_IMAGE_INPUT = {"type": "filepath", "image_mode": None, "placeholder": "app.drop_image", "sources": ["upload", "clipboard"]}


# ---------------------------------------------------------------- tabs

def classify_tab(cb: Callbacks, loc: Localizer, lang: gr.State, on_page: gr.State, samples: list[list[str]],
                 labels: str) -> None:
    """samples and labels: the model's starters (core/starters.py; coloured shapes for the mini model)."""
    default_labels = labels
    with gr.Row():
        with gr.Column():
            image = loc(SafeImage, **_IMAGE_INPUT, label="zs.image",
                        height=320, elem_id="zs-image")
            examples = _samples(loc, image, samples)
        with gr.Column():
            labelset = loc(gr.Dropdown, label="zs.labelset", choices=LABEL_SETS, value=CUSTOM)
            labels = loc(gr.Textbox, label="zs.labels", placeholder="zs.labels_ph", lines=3,
                         value=default_labels, elem_id="zs-labels")
            templates = loc(gr.Dropdown, label="zs.templates", choices=TEMPLATES, value="single")
            custom = loc(gr.Textbox, label="zs.custom_tpl", value="a photo of a {c}.", visible=False)
            add = loc(gr.Checkbox, label="zs.add", value=False)
            button = loc(gr.Button, value="zs.button", variant="primary")
            result = loc(gr.Label, label="zs.result", num_top_classes=5, elem_id="zs-result")
            status = loc.message(elem_id="zs-status")
    button.click(**loc.wire(cb.classify, [image, labelset, labels, templates, custom, add, lang, on_page],
                            [result, status], api_name="classify", **MODEL))
    if examples is not None:   # a sample click sets the value alone: the box keeps its label in the page's language
        examples.click(lambda sample: sample[0], [examples], [image], queue=False, show_progress="hidden", **_PRIVATE)
    # typed labels / a custom template only matter when chosen: show their boxes only then
    quick = dict(concurrency_limit=None, show_progress="hidden", **_PRIVATE)
    labelset.change(_shown_if_custom, [labelset], [labels], **quick)
    templates.change(_shown_if_custom, [templates], [custom], **quick)


def search_tab(cb: Callbacks, loc: Localizer, lang: gr.State, on_page: gr.State, query: str = "") -> None:
    """query: a default search suited to the model ("blue star" for the mini model)."""
    ids = gr.State([])
    with gr.Row():
        with gr.Column(scale=1):
            text = loc(gr.Textbox, label="search.text", placeholder="search.text_ph", value=query)
            image = loc(SafeImage, **_IMAGE_INPUT, label="search.image",
                        height=200, elem_id="search-image")
            image_weight = loc(gr.Slider, label="search.image_weight", minimum=-2.0, maximum=3.0, value=1.0, step=0.1,
                               elem_id="search-image-weight")
            minus = loc(gr.Textbox, label="search.minus", placeholder="search.minus_ph")
            k = loc(gr.Slider, label="search.k", minimum=SEARCH_K[0], maximum=SEARCH_K[1], value=SEARCH_K[2], step=1)
            threshold = loc(gr.Slider, label="search.threshold", minimum=0.0, maximum=1.0, value=0.0, step=0.01)
            all_k = loc(gr.Checkbox, label="search.all_k", value=False, elem_id="search-all-k")
            button = loc(gr.Button, value="search.button", variant="primary")
        with gr.Column(scale=2):
            info = loc.message(elem_id="search-info")
            gallery = loc(gr.Gallery, label="search.results", columns=4, height=560, object_fit="contain",
                          fit_columns=False, elem_id="search-gallery")
            with gr.Row():
                selected = loc(gr.Textbox, label="search.selected", scale=2)
                similar = loc(gr.Button, value="search.similar", scale=1)
                add_term = loc(gr.Button, value="search.add_term", scale=1, elem_id="search-add-term")
    # the checkbox reaches the callback through a State, so the documented /search keeps its five inputs
    # (API callers get the default: weak matches left out, as on the page)
    show_all, weight = gr.State(False), gr.State(1.0)   # so does the image's weight (API callers: 1)
    all_k.change(lambda v: bool(v), [all_k], [show_all], **_PRIVATE, concurrency_limit=CHEAP, show_progress="hidden")
    image_weight.change(lambda v: float(v), [image_weight], [weight], **_PRIVATE, concurrency_limit=CHEAP,
                        show_progress="hidden")
    run = loc.wire(cb.search, [text, image, minus, k, threshold, show_all, weight, lang, on_page], [gallery, ids, info],
                   **MODEL)
    button.click(**run, api_name="search")
    text.submit(**run, **_PRIVATE)
    similar.click(**loc.wire(cb.search_similar, [selected, k, lang, on_page], [gallery, ids, info], concurrency_limit=CHEAP),
                  api_name="search_similar")
    # the selected result as one more term of the query text ("beach + 3f2a9c0e11d4"); the user may weigh it
    add_term.click(cb.add_term, [text, selected, lang], [text], **_PRIVATE, concurrency_limit=CHEAP, show_progress="hidden")
    # a click only selects (the preview keeps the clicked image); "similar" searches with it on demand
    gallery.select(cb.pick, [ids], [selected], **_PRIVATE, concurrency_limit=CHEAP)


def caption_tab(cb: Callbacks, loc: Localizer, lang: gr.State, on_page: gr.State) -> None:
    with gr.Row():
        with gr.Column():
            image = loc(SafeImage, **_IMAGE_INPUT, label="cap.image",
                        height=320, elem_id="cap-image")
            button = loc(gr.Button, value="cap.button", variant="primary")
            missing = cb.wb.captions_unavailable()   # said before anyone clicks, not only after
            if missing is not None:
                loc(gr.Markdown, value=lambda l: t("cap.offline", l, detail=localize(missing, l)),
                    elem_id="cap-offline")
        with gr.Column():
            en = loc(gr.Textbox, label="cap.en", interactive=False)
            zh = loc(gr.Textbox, label="cap.zh", interactive=False)
            status = loc.message(elem_id="caption-status")
    button.click(**loc.wire(cb.caption, [image, lang, on_page], [en, zh, status], api_name="caption", concurrency_limit=1))


def library_tab(cb: Callbacks, loc: Localizer, lang: gr.State, on_page: gr.State) -> tuple[dict, list, dict, dict]:
    """Lays out the library tab; returns the event kwargs that refresh gallery, page info and stats,
    the teacher-only buttons (hidden from students on load), and the review panel's (ui/review.py)
    refresh and load events."""
    ids = gr.State([])
    with gr.Row():
        with gr.Column(scale=2):
            files = loc(gr.File, label="lib.upload", file_count="multiple", type="filepath", height=260,
                        elem_id="lib-upload")
            with gr.Row():
                add = loc(gr.Button, value="lib.add", variant="primary", scale=2)
                seed = loc(gr.Button, value="lib.seed", scale=1)
            summary = loc.message(elem_id="lib-summary")
        with gr.Column(scale=3):
            stats = loc.message(elem_id="lib-stats")
            with gr.Row():
                stats_btn = loc(gr.Button, value="lib.stats_button", size="sm")
                verify = loc(gr.Button, value="lib.verify", size="sm")
                compact = loc(gr.Button, value="lib.compact", size="sm")
                fix = loc(gr.Button, value="lib.repair", size="sm")
            report = loc.message(elem_id="lib-report")
    gallery = loc(gr.Gallery, label="lib.gallery", columns=8, height=620, object_fit="cover", fit_columns=False,
                  elem_id="lib-gallery")
    with gr.Row(variant="compact"):
        prev = loc(gr.Button, value="lib.prev", size="sm", scale=0, min_width=120)
        page = loc(gr.Number, label="lib.page", value=1, precision=0, minimum=1, scale=0, min_width=100,
                   show_label=False, container=False)
        nxt = loc(gr.Button, value="lib.next", size="sm", scale=0, min_width=120)
        info = loc.message(elem_id="lib-page-info")
    with gr.Row():
        selected = loc(gr.Textbox, label="lib.selected", scale=2, elem_id="lib-selected")
        remove = loc(gr.Button, value="lib.remove", variant="stop", scale=1)
    with gr.Row(visible=False, elem_id="lib-confirm") as confirm_row:   # delete asks first
        question = loc.message(elem_id="lib-confirm-text")
        yes = loc(gr.Button, value="lib.confirm_yes", variant="stop", scale=0, min_width=160)
        no = loc(gr.Button, value="lib.confirm_no", scale=0, min_width=120)

    def refresh_all(page_no, lang_value, request: gr.Request):
        return (*cb.library_page(page_no, lang_value, request), cb.library_stats(lang_value, request))

    refresh = loc.wire(refresh_all, [page, lang], [gallery, ids, info, page, stats], concurrency_limit=CHEAP,
                       show_progress="hidden", **_PRIVATE)
    cheap = dict(concurrency_limit=CHEAP)
    waiting, shown = review_panel(cb, loc, lang, on_page, then=refresh)   # the teacher's review, under the gallery
    add.click(**loc.wire(cb.add_to_library, [files, lang, on_page], [summary], api_name="add_to_library", **INGEST)).then(
        lambda: (1, None), None, [page, files], **_PRIVATE).then(**refresh).then(**waiting)
    seed.click(**loc.wire(cb.seed_library, [lang, on_page], [summary], api_name="seed_library", **INGEST)).then(
        lambda: 1, None, [page], **_PRIVATE).then(**refresh)
    gallery.select(cb.pick, [ids], [selected], **_PRIVATE, **cheap)
    remove.click(**loc.wire(cb.confirm_remove, [selected, lang], [confirm_row, question], **_PRIVATE, **cheap))
    no.click(lambda: gr.update(visible=False), None, [confirm_row], **_PRIVATE, **cheap)
    yes.click(lambda: gr.update(visible=False), None, [confirm_row], **_PRIVATE, **cheap).then(
        **loc.wire(cb.remove_image, [selected, lang, on_page], [report], api_name="remove_image", **cheap)).then(
        **refresh).then(**waiting)
    _pager(loc.wire(cb.library_page, [page, lang], [gallery, ids, info, page], concurrency_limit=CHEAP),
           prev, nxt, page, step=lambda p, d: max(1, int(p or 1) + d))
    stats_btn.click(**loc.wire(cb.library_stats, [lang], [stats], api_name="library_stats", **cheap))
    verify.click(**loc.wire(cb.verify_library, [lang, on_page], [report], api_name="verify_library", **cheap))
    compact.click(**loc.wire(cb.compact_library, [lang, on_page], [report], api_name="compact_library", concurrency_limit=1))
    fix.click(**loc.wire(cb.repair_library, [lang, on_page], [report], api_name="repair_library", **INGEST)).then(**refresh)
    return refresh, [seed, compact, fix, remove], waiting, shown


def _samples(loc: Localizer, image: gr.Image, samples: list[list[str]]) -> gr.Dataset | None:
    """Clickable sample images for `image`. A plain Dataset, not gr.Examples: Examples re-sends the
    input's start-up properties with the value, which turned a relabelled box back to the start language."""
    if not samples:
        return None
    return loc(gr.Dataset, components=[image], samples=samples, label="zs.examples", samples_per_page=12,
               type="values", elem_id="zs-samples")


def _shown_if_custom(choice: str):
    return gr.update(visible=choice == CUSTOM)


def _pager(show: dict, prev: gr.Button, nxt: gr.Button, page: gr.Number, step: Callable[[float, int], int]) -> None:
    """Previous / next / typed page number -> one library page (`show`: the event showing it; api_name
    "library_page")."""
    page.submit(**show, api_name="library_page")
    prev.click(lambda p: step(p, -1), [page], [page], **_PRIVATE).then(**show, **_PRIVATE)
    nxt.click(lambda p: step(p, +1), [page], [page], **_PRIVATE).then(**show, **_PRIVATE)

"""The Gradio Blocks app over a Workbench: five tabs (the fifth, Learn, in ui/learn.py), a language
switch, a queue for a classroom.

    access = Access(Accounts.parse(students=["ann:pw"], admins=["teacher:secret"]), Limits())
    wb = build_workbench(..., access=access)     # the policy lives in the workbench, one for the page and /api
    demo = build_app(wb, lang="zh")
    demo.launch(server_name=..., **launch_options(wb, lang="zh"))   # login, served folders, /api, throttle, locale

All model work happens in core/ through `ui.callbacks.Callbacks`; this module only lays
out components and wires events. Every public event has a stable `api_name`
(docs/API.md shows gradio_client calls).
"""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from fastapi.middleware import Middleware

from core.access import Access
from core.errors import ModelMismatchError, ModelUnavailableError
from core.images import MAX_BYTES
from core.messages import localize, without_paths
from core import Health, Holder, Workbench

from .callbacks import Callbacks
from .guard import LoginLimiter, blocked_paths, served_paths
from .health import health_tab
from .http_api import build_api
from .http_health import build_health_routes
from .i18n import AUTH_MESSAGE, DEFAULT_LANG, pick_lang, t
from .language import Localizer, header, language_events, language_radio
from .learn import learn_tab
from .mcp import McpTools, mcp_lifespan
from .locale import TOAST_CSS, LocaleScript
from .tabs import caption_tab, classify_tab, library_tab, search_tab

__all__ = ["build_app", "build_error_app", "launch_options", "QueueConfig"]

TITLE = "CLIP Workbench · 图文多模态工作台"
CSS = """
#notice {background: #fff4e5; border-left: 4px solid #f59e0b; padding: 6px 12px; border-radius: 6px}
#broken {background: #fdecea; border-left: 4px solid #dc2626; padding: 6px 12px; border-radius: 6px}
footer {display: none !important}
/* the galleries' floating label chip sat over their first row of thumbnails */
#lib-gallery .grid-container, #search-gallery .grid-container {padding-top: 2.6rem !important}
""" + TOAST_CSS
CACHE_LIFETIME = (3600, 86400)   # every hour, delete served copies and uploads older than a day


class QueueConfig:
    """How many requests of each kind run at once. Model requests in flight share forward passes
    (core/batching.py): more of them at once make bigger batches, not more passes fighting for
    the cores, so the limit is high; the rest of a class waits in a visible queue. Measured with
    benchmarks/bench_classroom.py (benchmarks/RESULTS.md, "A class on one link")."""
    heavy_cpu = 16        # search / classify requests in flight on a CPU (batched together)
    heavy_gpu = 16        # ... on a GPU
    max_size = 200        # waiting requests before new ones are refused ("queue full")


def build_app(wb: Workbench | Holder, lang: str | None = None, access: Access | None = None,
              mcp: bool = False) -> gr.Blocks:
    """The app for one Workbench. `lang` ("zh" | "en") fixes the start language; None follows the browser.
    `access`: None, or the workbench's own policy (build_workbench(access=...): roles and quotas).
    `mcp`: also the five MCP tools (ui/mcp.py; serve them with launch_options(..., mcp=True)).
    The page, the JSON API (launch_options) and the MCP tools share the server's Holder: a model
    switch reaches them all."""
    start = pick_lang(lang) if lang else DEFAULT_LANG
    cb, loc = Callbacks(wb, access), Localizer(start)
    wb = cb.wb   # the workbench the server starts with (layout, starters, banner)
    heavy = QueueConfig.heavy_gpu if wb.runtime.is_cuda else QueueConfig.heavy_cpu
    with gr.Blocks(title=TITLE, delete_cache=CACHE_LIFETIME) as demo:
        lang_state = gr.State(start)
        on_page = gr.State(False)   # True in a browser's session (set on load); API callers keep False (ui/errors.py)
        radio = header(loc, start, subtitle=lambda l: t("app.subtitle", l, model=wb.encoder.model_id,
                                                          device=localize(wb.encoder.runtime.describe(), l)))   # what runs
        _banner(wb, loc)
        starters = wb.starters
        with loc(gr.Tab, label="tab.classify"):
            classify_tab(cb, loc, lang_state, on_page, samples=[[str(p)] for p in starters.images], labels=starters.labels)
        with loc(gr.Tab, label="tab.search"):
            search_tab(cb, loc, lang_state, on_page, query=starters.query)
        with loc(gr.Tab, label="tab.caption"):
            caption_tab(cb, loc, lang_state, on_page)
        with loc(gr.Tab, label="tab.library") as lib_tab:
            refresh, teacher_only, waiting, review_shown = library_tab(cb, loc, lang_state, on_page)
        lib_tab.select(**refresh).then(**waiting)
        with loc(gr.Tab, label="tab.learn") as learn:   # the fifth tab (ui/learn.py)
            pickers = learn_tab(cb, loc, lang_state, demo)
        learn.select(**pickers)
        show_health = health_tab(cb, loc, lang_state, Health(lambda: cb.wb, cb.access.limits.budget_mb), demo)
        language_events(demo, radio, lang_state, loc, follow_browser=lang is None, then=[refresh, waiting])
        demo.load(**refresh)
        demo.load(**review_shown).then(**waiting)
        demo.load(lambda: True, None, [on_page], api_visibility="private", show_progress="hidden", queue=False)
        demo.load(cb.teacher_controls, None, teacher_only, api_visibility="private", show_progress="hidden",
                  concurrency_limit=None)
        demo.load(**show_health)   # the health panel: the teacher's only (ui/health.py)
        if mcp:   # tools for AI assistants, over the same holder and policy (ui/mcp.py)
            McpTools(cb.holder, heavy=heavy).register()
    return demo.queue(default_concurrency_limit=heavy, max_size=QueueConfig.max_size)


def build_error_app(problem: Exception, lang: str | None = None, model: str = "MODEL") -> gr.Blocks:
    """A one-page app that explains why the model or library could not be opened, and the fix."""
    start = pick_lang(lang) if lang else DEFAULT_LANG
    loc = Localizer(start)

    def body(l: str) -> str:
        if isinstance(problem, ModelMismatchError):
            fix = t("fix.mismatch", l, model=model)
        elif isinstance(problem, ModelUnavailableError):
            fix = t("fix.model", l)
        else:
            fix = t("fix.other", l)
        return t("app.broken_title", l) + "\n\n" + t("app.broken_body", l, problem=localize(problem, l), fix=fix)

    with gr.Blocks(title=TITLE) as demo:
        lang_state = gr.State(start)
        radio = language_radio(start)
        loc(gr.Markdown, value=body, elem_id="broken")
        language_events(demo, radio, lang_state, loc, follow_browser=lang is None, then=[])
    return demo.queue()


def launch_options(wb: Workbench | Holder | None = None, access: Access | None = None, lang: str | None = None,
                   mcp: bool = False) -> dict:
    """Keyword arguments for demo.launch() besides the address: the login (the workbench's accounts, or
    `access`'s for the page without one; none = open), only stored images, thumbnails and bundled samples served (ui/guard.py), failed
    logins throttled per client and, with a workbench, the JSON API at /api/... (docs/API.md#json-http-api)
    first in Gradio's own FastAPI app, under the same roles and quotas as the UI. `lang`: demo.py's
    --lang, so Gradio's own texts start in it too (ui/locale.py). `mcp`: Gradio's MCP server at
    /gradio_api/mcp/ with only the five tools of ui/mcp.py (build_app(..., mcp=True) adds them);
    ui.mcp.mcp_problem(demo) says after launch whether it came up."""
    holder = Holder.of(wb) if wb is not None else None   # the page's own (build_app): one per server
    if holder is not None and access is not None and access is not holder.access:
        raise ValueError("launch_options: the access policy is the workbench's; build it with build_workbench(access=...)")
    access = holder.access if holder is not None else access or Access()
    wb = holder.wb if holder is not None else None
    root = Path(wb.root) if wb is not None else None
    options = {"allowed_paths": served_paths(root), "blocked_paths": blocked_paths(root), "css": CSS,
               "theme": gr.themes.Soft(), "max_file_size": MAX_BYTES,   # oversized uploads refused before read
               # Gradio keeps each browser's inputs and outputs in its local storage (run history): on a shared
               # link the next student at that computer would find them. Off there (None: GRADIO_RUN_HISTORY decides)
               "run_history": False if _shared(wb, access) else None,
               "auth": None if access.open else access.accounts.check,
               "auth_message": None if access.open else AUTH_MESSAGE,
               # the page comes from this Python server, not Node (Spaces may set GRADIO_SSR_MODE=true):
               # LocaleScript must see its HTML, and the guards every request
               "ssr_mode": False}
    app_kwargs = {"middleware": [Middleware(LoginLimiter, throttle=access.throttle),
                                 Middleware(LocaleScript, forced=pick_lang(lang) if lang else None)]}
    if wb is not None:
        heavy = QueueConfig.heavy_gpu if wb.runtime.is_cuda else QueueConfig.heavy_cpu
        app_kwargs["routes"] = build_api(holder, heavy=heavy).routes + build_health_routes(lambda: holder.wb, access).routes
        if mcp:
            app_kwargs["lifespan"] = mcp_lifespan   # before the first request: only the five tools
    # the flag decides, not Gradio's GRADIO_MCP_SERVER (which would offer every page endpoint as a tool)
    options["mcp_server"] = bool(mcp and wb is not None)
    return {**options, "app_kwargs": app_kwargs}


def _shared(wb: Workbench | None, access: Access) -> bool:
    """Whether others reach the app: logins, --share, a Space (the workbench's safety policy knows)."""
    return not access.open or (wb is not None and wb.safety.config.shared)


def _banner(wb: Workbench, loc: "Localizer") -> None:
    """Why the app runs as it does: after a fallback to the bundled model, a short bilingual
    explanation and the way to the real model, with the technical reason folded away. On a Space
    (or with --sync-to-hub): where the library lives, and a warning if a restart would lose it."""
    if wb.fallback:
        loc(gr.Markdown, value="app.offline", elem_id="notice")
        with loc(gr.Accordion, label="app.details", open=False, elem_id="notice-details"):
            loc(gr.Markdown, value=lambda l: localize(without_paths(wb.notice), l), elem_id="notice-detail")
    elif wb.notice:   # every visitor reads the banner: no server paths in it
        loc(gr.Markdown, value=lambda l: t("app.notice", l, notice=localize(without_paths(wb.notice), l)),
            elem_id="notice")
    if wb.safety.on:   # which filter, for which model; and a model that cannot judge says so
        loc(gr.Markdown, value=lambda l: _safety_text(wb, l), elem_id="safety")
    from core import storage   # core/hosting/sync.py: where the library lives, its backup
    where = storage(wb.root)
    if where.on_space or where.sync is not None:   # re-read on each switch: a failed backup shows up
        loc(gr.Markdown, value=lambda l: _storage_text(storage(wb.root), l), elem_id="storage")


def _safety_text(wb: Workbench, lang: str) -> str:
    """The banner's safety line: the mode, the filter and its model; then why the model cannot judge, if so."""
    mode = t({"standard": "safety.standard", "strict": "safety.strict"}[wb.safety.mode], lang)
    text = t("safety.banner", lang, mode=mode, filter=localize(wb.safety.describe(), lang))
    missing = wb.safety.cannot_judge()
    return text + ("\n\n" + t("safety.cannot_judge", lang, detail=localize(missing, lang)) if missing else "")


def _storage_text(where, lang: str) -> str:
    """Where the library lives, for _banner: a warning when uploads would vanish on a restart or the
    backup fails (core/hosting/sync.py's Msg), else how it is kept. Re-read on every language switch."""
    if where.warning is not None:
        return t("storage.warning", lang, warning=where.warning.text(lang))
    if where.sync is not None:
        return t("storage.synced", lang, repo=where.sync.repo_id, every=f"{where.sync.every:g}")
    return t("storage.persistent", lang, disk=str(where.persistent)) if where.on_persistent else ""

"""The health panel: how the class and the server are doing, for the teacher (everyone on a private start).

    health = Health(lambda: cb.wb, access.limits.budget_mb)      # core/health.py
    demo.load(**health_tab(cb, loc, lang_state, health, demo))   # the tab shown, and ticking, for the teacher only

Per action, requests per minute and p50 / p95 latency over the last 5 and 60 minutes, errors by
kind with the last few messages, the app's queue, memory (RSS), the library's disk against its
budget, the model and runtime, and the uptime. A gr.Timer refreshes it every REFRESH_S seconds.
Its events never wait behind model work: they skip the queue (queue=False) and read only what
core/health.py keeps ready (the library's size is re-read in the background). A student's session
gets no panel and no timer, and the tick itself answers nothing to a student.
"""
from __future__ import annotations

import html
import time
from functools import partial

import gradio as gr

from core import Health, Snapshot
from core.messages import localize

from .callbacks import Callbacks, who
from .i18n import t
from .language import Say

__all__ = ["health_tab", "render", "queue_counts", "REFRESH_S"]

REFRESH_S = 5.0      # seconds between refreshes of an open panel
_MB = 2 ** 20
_QUICK = {"queue": False, "show_progress": "hidden", "api_visibility": "private"}
ACTIONS = {"search": "health.action.search", "classify": "health.action.classify", "caption": "health.action.caption",
           "add": "health.action.add", "page": "health.action.page", "train": "health.action.train"}
SURFACES = {"page": "health.surface.page", "api": "health.surface.api", "mcp": "health.surface.mcp",
            "cli": "health.surface.cli", "python": "health.surface.python"}
OUTCOMES = {"refused": "health.outcome.refused", "failed": "health.outcome.failed"}


def queue_counts(blocks: gr.Blocks | None) -> tuple[int, int] | None:
    """(waiting, running) events in Gradio's queue, or None before it runs. Reads Gradio's queue
    (its own counts, read only: the numbers its status messages are made of)."""
    per_id = getattr(getattr(blocks, "_queue", None), "event_queue_per_concurrency_id", None)
    if per_id is None:
        return None
    queues = list(per_id.values())
    return sum(len(q.queue) for q in queues), sum(q.current_concurrency for q in queues)


def health_tab(cb: Callbacks, loc, lang: gr.State, health: Health, demo: gr.Blocks) -> dict:
    """Lays out the panel's tab (hidden until a teacher's page loads) and wires its timer; returns the
    load event's kwargs that show the tab and start the timer for the teacher only."""
    with loc(gr.Tab, label="tab.health", visible=False, elem_id="health-tab") as tab:
        panel = loc.message(elem_id="health-panel")
        timer = gr.Timer(REFRESH_S, active=False)

    def tick(lang_value: str, request: gr.Request = None):
        if not who(cb.access, request).admin:   # the tab is hidden from students; the event answers nothing either
            return gr.update()
        snap = health.snapshot(queue=queue_counts(demo))
        return Say(partial(render, snap), lang_value)

    refresh = loc.wire(tick, [lang], [panel], **_QUICK)
    timer.tick(**refresh)
    tab.select(**refresh)

    def show(request: gr.Request = None):
        admin = who(cb.access, request).admin
        return gr.update(visible=admin), gr.Timer(active=admin)
    return {"fn": show, "inputs": None, "outputs": [tab, timer], **_QUICK}


# ---------------------------------------------------------------- the panel's text

def render(snap: Snapshot, lang: str) -> str:
    """The panel's Markdown in `lang` for one snapshot."""
    parts = [t("health.title", lang),
             t("health.summary", lang, model=snap.model, runtime=localize(snap.runtime, lang),
               uptime=_duration(snap.uptime_s), every=f"{REFRESH_S:g}"),
             _table(snap, lang), _resources(snap, lang), _errors(snap, lang)]
    return "\n\n".join(p for p in parts if p)


def _table(snap: Snapshot, lang: str) -> str:
    first, last = min(snap.windows), max(snap.windows)   # minutes: 5 and 60
    short, long = snap.windows[first], snap.windows[last]
    if not any(w.requests for w in long.values()):
        return t("health.no_requests", lang, minutes=last)
    rows = [t("health.table_head", lang, short=first, long=last)]
    for action, hour in long.items():
        recent = short.get(action)
        surfaces = ", ".join(f"{_surface(s, lang)} {n}" for s, n in sorted(hour.surfaces.items()))
        cells = (_action(action, lang), _rate(recent), _latency(recent), _rate(hour), _latency(hour),
                 f"{hour.refused} / {hour.failed}", surfaces)
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n\n" + t("health.note", lang)


def _resources(snap: Snapshot, lang: str) -> str:
    lib = snap.library
    queue = (t("health.queue", lang, waiting=snap.queue[0], running=snap.queue[1]) if snap.queue is not None
             else t("health.queue_none", lang))
    memory = t("health.memory", lang, rss=_size(snap.rss_bytes))
    share = "" if lib.image_bytes is None else f" ({100 * lib.image_bytes / max(1, lib.budget_bytes):.0f} %)"
    disk = t("health.disk", lang, n=lib.images, used=_size(lib.image_bytes), budget=_size(lib.budget_bytes),
             share=share, features=_size(lib.features_bytes), free=_size(lib.disk_free_bytes))
    return "\n\n".join([queue + " · " + memory, disk])


def _errors(snap: Snapshot, lang: str) -> str:
    if not snap.errors:
        return t("health.errors_none", lang, minutes=max(snap.windows))
    kinds = ", ".join(f"`{kind}` × {n}" for kind, n in snap.errors.items())
    lines = []
    for p in snap.problems:
        message = html.escape(" ".join(localize(p.message, lang).split()))
        lines.append(t("health.problem", lang, time=time.strftime("%H:%M:%S", time.localtime(p.at)),
                       action=_action(p.action, lang), surface=_surface(p.surface, lang), kind=p.kind,
                       outcome=t(OUTCOMES[p.outcome], lang) if p.outcome in OUTCOMES else p.outcome,
                       message=message[:300] + ("…" if len(message) > 300 else "")))
    return "\n\n".join([t("health.errors", lang, minutes=max(snap.windows), kinds=kinds), t("health.last", lang),
                        "\n".join(lines)])


def _action(action: str, lang: str) -> str:
    return t(ACTIONS[action], lang) if action in ACTIONS else action


def _surface(surface: str, lang: str) -> str:
    return t(SURFACES[surface], lang) if surface in SURFACES else surface


def _rate(w) -> str:
    return "–" if w is None or not w.requests else f"{w.per_minute:.1f}"


def _latency(w) -> str:
    if w is None or w.p50_s is None:
        return "–"
    return f"{_ms(w.p50_s)} / {_ms(w.p95_s)}"


def _ms(seconds: float) -> str:
    ms = seconds * 1000
    return f"{ms:.0f} ms" if ms >= 10 else f"{ms:.1f} ms"


def _size(n: int | None) -> str:
    if n is None:
        return "–"
    if n >= 1024 * _MB:
        return f"{n / _MB / 1024:.1f} GiB"
    return f"{n / _MB:.1f} MiB" if n >= _MB else f"{n / 1024:.0f} KiB"


def _duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"

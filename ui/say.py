"""Messages that stay in the UI language after they are shown.

A callback fills a message slot (ui/tabs.py `Localizer.message`: a Markdown with a hidden
gr.State beside it) with a `Say`: the text in the request's language that can also say itself
in the other one. The event wiring (`Localizer.wire`) keeps each Say's renderer in the slot's
State, and the language switch renders every filled slot again.

    return say("lib.compacted", lang, n=len(self.wb))               # a key and its fields
    return Say(lambda l: self._summary_text(report, n, l), lang)    # anything else
"""
from __future__ import annotations

from typing import Callable

from core.lru import LRU
from core.messages import Msg, error_message, localize

from .i18n import t

__all__ = ["Say", "say", "SessionLangs", "session_langs"]


class Say(str):
    """Text in one language (the str value, what an API caller gets) that can say itself in
    another: `.render(lang)`. A str, like core's Msg, so a callback still returns text."""

    render: Callable[[str], str]

    def __new__(cls, render: Callable[[str], str], lang: str) -> "Say":
        self = super().__new__(cls, render(lang))
        self.render = render
        return self


def say(key: str, lang: str, **fields) -> Say:
    """t(key, lang, **fields) as a Say; fields that are Msgs or errors carrying one follow the language too.
    An error is kept as its message (`error_message`), never itself: its traceback would keep every frame's
    locals (an upload's decoded picture...) alive as long as the slot's State."""
    kept = {k: error_message(v) if isinstance(v, BaseException) else v for k, v in fields.items()}

    def render(l: str) -> str:
        return t(key, l, **{k: localize(v, l) if isinstance(v, Msg) else v for k, v in kept.items()})
    return Say(render, lang)



class SessionLangs:
    """The language each browser session shows now (keyed by the request's session_hash), for what runs
    on across a language switch: a training's live status reads it at every poll. The language switch
    (ui/app.py) writes it. The `size` sessions used last are kept (an LRU: a closed tab costs nothing
    for long)."""

    def __init__(self, size: int = 500):
        self._langs = LRU(size)

    def set(self, request, lang: str) -> None:
        key = getattr(request, "session_hash", None)
        if key is not None:
            self._langs.put(key, lang)

    def get(self, request, default: str) -> str:
        """The session's language now; `default` (the event's language) for a session never switched."""
        key = getattr(request, "session_hash", None)
        return (self._langs.get(key) if key is not None else None) or default


session_langs = SessionLangs()

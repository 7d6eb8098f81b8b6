"""The UI's language plumbing, in one place: how the page switches between 中文 and English.

    loc = Localizer("zh")                                   # every visible string registered as it is made
    loc(gr.Button, value="search.button")                   # an i18n key (ui/i18n.py holds the strings)
    info = loc.message()                                    # a slot a callback fills with a Say
    return say("lib.compacted", lang, n=len(self.wb))       # a key and its fields, said again on a switch
    radio = header(loc, start, subtitle); language_events(demo, radio, lang_state, loc, ...)

A callback fills a message slot (`Localizer.message`: a Markdown with a hidden gr.State beside
it) with a `Say`: the text in the request's language that can also say itself in the other one.
The event wiring (`Localizer.wire`) keeps each Say's renderer in the slot's State, and the
language switch (`language_events`) relabels every registered component, says every filled slot
again, and records the session's language (`session_langs`, for what runs on: a training's live
status). The strings themselves are ui/i18n.py's; Gradio's own texts follow through ui/locale.py.
"""
from __future__ import annotations

import functools
import inspect
import logging
from typing import Callable

import gradio as gr

from core.lru import LRU
from core.messages import Msg, error_message, localize

from .i18n import choices, has_key, pick_lang, t
from .locale import detect_js, switch_js

__all__ = ["Say", "say", "SessionLangs", "session_langs", "Localizer", "header", "language_radio", "language_events"]

log = logging.getLogger(__name__)


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


# component properties that hold text a person reads (axis titles of plots included)
_LOCALIZED = ("label", "value", "placeholder", "info", "choices", "x_title", "y_title", "color_title")


class Localizer:
    """Creates components with strings in the start language and remembers which property
    holds which string, so a language switch can update them all in one event. Message slots
    (`message`) are the callbacks' texts: the switch says their last `Say` again.

    A property's spec is an i18n key, a callable lang -> text, or {value: key} for choices."""

    def __init__(self, lang: str):
        self.lang = lang
        self._items: list[tuple[gr.components.Component, dict]] = []
        self._slots: list[tuple[gr.components.Component, gr.State]] = []   # message, how to say it again

    def __call__(self, cls, **kwargs):
        specs = {k: v for k, v in kwargs.items() if k in _LOCALIZED
                 and (callable(v) or isinstance(v, dict) or (isinstance(v, str) and has_key(v)))}
        kwargs.update({k: self._text(v, self.lang) for k, v in specs.items()})
        return self.register(cls(**kwargs), **specs)

    def register(self, component, **specs):
        """Relabel an existing component on language switches (specs as for __call__)."""
        self._items.append((component, specs))
        return component

    def message(self, cls=gr.Markdown, **kwargs):
        """A message slot: a Markdown (or HTML) that events wired with `wire` fill with a `Say`."""
        component = cls(**kwargs)
        self._slots.append((component, gr.State(None)))
        return component

    def wire(self, fn: Callable, inputs: list, outputs: list, **kwargs) -> dict:
        """The keyword arguments of an event running fn (a function or a generator): each message
        slot among its outputs gets the Say's text and its State the Say's renderer (None for plain
        text: nothing to say again). Gradio's API skips State outputs: API callers see the same
        endpoint, and get the text."""
        states = {id(c): s for c, s in self._slots}
        slots = [i for i, c in enumerate(outputs) if id(c) in states]
        if not slots:
            return {"fn": fn, "inputs": inputs, "outputs": outputs, **kwargs}

        def split(result):
            values = list(result) if len(outputs) > 1 else [result]
            renders = [values[i].render if isinstance(values[i], Say) else None for i in slots]
            return (*(str(v) if isinstance(v, Say) else v for v in values), *renders)

        if inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)   # Gradio reads the signature (gr.Request, gr.Progress) through __wrapped__
            def remembered(*args, **kw):
                for result in fn(*args, **kw):
                    yield split(result)
        else:
            @functools.wraps(fn)
            def remembered(*args, **kw):
                return split(fn(*args, **kw))
        return {"fn": remembered, "inputs": inputs, "outputs": [*outputs, *(states[id(outputs[i])] for i in slots)],
                **kwargs}

    @property
    def components(self) -> list:
        """What the language switch updates: the registered components, then the message slots."""
        return [c for c, _ in self._items] + [c for c, _ in self._slots]

    @property
    def memories(self) -> list[gr.State]:
        """The slots' States, inputs of the language switch (in the order of `components`' slots)."""
        return [s for _, s in self._slots]

    def updates(self, lang: str, said: tuple) -> list[dict]:
        """`components`' updates in `lang`; `said`: the `memories`' values (a slot without one stays)."""
        labels = [gr.update(**{k: self._text(v, lang) for k, v in specs.items()}) for _, specs in self._items]
        return labels + [self._again(render, lang) for render in said]

    @staticmethod
    def _again(render: Callable[[str], str] | None, lang: str):
        """A slot's message said again in `lang`; one that cannot be stays as it is (the others still switch)."""
        if not render:
            return gr.update()
        try:
            return gr.update(value=render(lang))
        except Exception:   # noqa: BLE001  one message must not break the whole language switch
            log.exception("could not say a message again in %s", lang)
            return gr.update()

    @staticmethod
    def _text(spec, lang: str):
        if isinstance(spec, dict):
            return choices(spec, lang)
        return spec(lang) if callable(spec) else t(spec, lang)


def language_radio(start: str, **layout) -> gr.Radio:
    """The 中文 / English switch, showing `start`."""
    return gr.Radio([("中文", "zh"), ("English", "en")], value=start, label=t("app.lang", start), **layout)


def header(loc: Localizer, start: str, subtitle: Callable[[str], str]) -> gr.Radio:
    """The app's title beside the language switch, the subtitle under them; returns the switch."""
    with gr.Row(equal_height=True):
        loc(gr.Markdown, value="app.title")
        radio = language_radio(start, scale=0, min_width=220, elem_id="lang")
    loc(gr.Markdown, value=subtitle)
    return radio


def language_events(demo: gr.Blocks, radio: gr.Radio, lang_state: gr.State, loc: Localizer,
                    follow_browser: bool, then: list[dict]) -> None:
    """The radio relabels every registered component and says every filled message slot again;
    on load it follows the browser's locale."""
    def relabel(request: gr.Request, value: str, *said):
        lang = pick_lang(value)
        session_langs.set(request, lang)   # what runs on (a training's live status) follows too
        return [lang, *loc.updates(lang, said)]

    event = radio.change(relabel, [radio, *loc.memories], [lang_state, *loc.components], api_visibility="private",
                         concurrency_limit=None, show_progress="hidden", js=switch_js())   # Gradio's texts too
    for extra in then:
        event = event.then(**extra)
    # js only (no server round trip): the radio is set as the page mounts, before anyone can click it,
    # from the page's locale: ?lang=, else --lang, else the browser's (ui/locale.py sets it first)
    demo.load(None, [radio], [radio], js=detect_js(follow_browser),
              api_visibility="private", show_progress="hidden")

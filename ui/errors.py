"""Domain errors -> what the user reads, in the user's language (never a stack trace in the browser).

Callbacks raise `UserError` (a gr.Error that can say itself in either language): from `fail(key, ...)`
for a problem the UI itself sees (no image given), from `user_errors(lang)` for core's domain errors.
An API caller (gradio_client) gets it as the endpoint's error. On the page, a callback wrapped in
`in_place(...)` shows it in its message slot next to the input instead, where it stays until the next
action and follows the language switch (a toast says it too; a toast alone leaves after ~10 s and
a bare "Error" pill on the outputs).
"""
from __future__ import annotations

import functools
import inspect
from contextlib import contextmanager
from typing import Callable

import gradio as gr

from core.errors import (ImageError, LabelError, LibraryError, ModelUnavailableError, PermissionDenied, QueryError,
                         QueryRefused, QuotaError, UnknownModelError)
from core.messages import localize

from .i18n import LANGS, t

__all__ = ["user_errors", "error_text", "fail", "in_place", "UserError", "SLOT", "KEEP", "DOMAIN_ERRORS"]

DOMAIN_ERRORS = (ImageError, QueryError, LabelError, LibraryError, ModelUnavailableError, UnknownModelError,
                 PermissionDenied, QuotaError)
SLOT, KEEP = object(), object()   # in_place: the output that shows the reason / an output left as it is


class UserError(gr.Error):
    """A gr.Error in `lang` that keeps how to say itself in the other language (`render(lang)`)."""

    def __init__(self, render: Callable[[str], str], lang: str):
        super().__init__(render(lang), title=t("err.title", lang), print_exception=False)
        self.render = render


def error_text(e: Exception, lang: str) -> str:
    """A readable message for a domain error: a heading in `lang`, then the core's detail, in `lang`
    too where the core wrote it in both (core/messages.py); file names and OS errors stay verbatim."""
    if isinstance(e, ImageError):
        return t("err.image", lang, name=e.name, reason=localize(e.reason, lang))
    key = {QueryRefused: "err.refused", QueryError: "err.query", LabelError: "err.labels", LibraryError: "err.library",
           ModelUnavailableError: "err.model", UnknownModelError: "err.model", PermissionDenied: "err.permission",
           QuotaError: "err.quota"}
    for cls, k in key.items():
        if isinstance(e, cls):
            return t(k, lang, detail=localize(e, lang))
    return localize(e, lang)


def fail(key: str, lang: str, **fields) -> UserError:
    """The error for a problem the UI itself detected (e.g. no image given)."""
    return UserError(lambda l: t(key, l, **fields), lang)


@contextmanager
def user_errors(lang: str):
    """Turn the narrow domain errors raised inside the block into a UserError in `lang`."""
    try:
        yield
    except DOMAIN_ERRORS as e:
        texts = {l: error_text(e, l) for l in LANGS}   # said now in both: the error (and its frames) is not kept
        raise UserError(lambda l: texts.get(l, texts["en"]), lang) from None


def in_place(*on_refusal):
    """Decorate a callback whose inputs end with (..., lang, page[, request...]): on the page
    (`page` true: ui/app.py sets it for browser sessions; API callers keep False) a UserError becomes
    the event's outputs — per output, SLOT (the reason, as a Say that follows the language switch),
    KEEP (left as it is) or a value (e.g. None: cleared) — and a toast. API callers get the error."""
    def decorate(fn):
        signature = inspect.signature(fn)

        @functools.wraps(fn)   # Gradio reads the signature (gr.Request, gr.Progress) through __wrapped__
        def shown(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except UserError as e:
                bound = signature.bind_partial(*args, **kwargs).arguments
                if not bound.get("page"):
                    raise
                return _refusal_outputs(e, bound.get("lang") or "en", on_refusal)
        return shown
    return decorate


def _refusal_outputs(e: UserError, lang: str, on_refusal: tuple):
    from .language import Say   # ui/language.py imports nothing of this module; kept local to keep the layers plain
    gr.Warning(e.render(lang), title=t("warn.title", lang))
    values = [Say(lambda l: "⚠️ " + e.render(l), lang) if v is SLOT else gr.update() if v is KEEP else v
              for v in on_refusal]
    return values[0] if len(values) == 1 else tuple(values)

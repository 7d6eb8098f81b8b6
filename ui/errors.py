"""Domain errors -> gr.Error in the user's language (never a stack trace in the browser)."""
from __future__ import annotations

from contextlib import contextmanager

import gradio as gr

from core.errors import (ImageError, LabelError, LibraryError, ModelUnavailableError, PermissionDenied, QueryError,
                         QuotaError, UnknownModelError)
from core.messages import localize

from .i18n import t

__all__ = ["user_errors", "error_text", "fail", "DOMAIN_ERRORS"]

DOMAIN_ERRORS = (ImageError, QueryError, LabelError, LibraryError, ModelUnavailableError, UnknownModelError,
                 PermissionDenied, QuotaError)


def error_text(e: Exception, lang: str) -> str:
    """A readable message for a domain error: a heading in `lang`, then the core's detail, in `lang`
    too where the core wrote it in both (core/messages.py); file names and OS errors stay verbatim."""
    if isinstance(e, ImageError):
        return t("err.image", lang, name=e.name, reason=localize(e.reason, lang))
    key = {QueryError: "err.query", LabelError: "err.labels", LibraryError: "err.library",
           ModelUnavailableError: "err.model", UnknownModelError: "err.model", PermissionDenied: "err.permission",
           QuotaError: "err.quota"}
    for cls, k in key.items():
        if isinstance(e, cls):
            return t(k, lang, detail=localize(e, lang))
    return localize(e, lang)


def fail(key: str, lang: str, **fields) -> gr.Error:
    """A gr.Error for a problem the UI itself detected (e.g. no image given)."""
    return gr.Error(t(key, lang, **fields), title=t("err.title", lang), print_exception=False)


@contextmanager
def user_errors(lang: str):
    """Turn the narrow domain errors raised inside the block into gr.Error in `lang`."""
    try:
        yield
    except DOMAIN_ERRORS as e:
        raise gr.Error(error_text(e, lang), title=t("err.title", lang), print_exception=False) from None

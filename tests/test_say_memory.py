"""What a message slot keeps per session: a Say's renderer lives in a gr.State until the tab closes,
so it must hold text and counts, never errors (their tracebacks keep every frame's locals) or whole results."""
from __future__ import annotations

import pickle
import sys

import pytest

from core.messages import Msg
from core.models.hf import ModelUnavailableError
from ui.say import Say, say


def _cells(render) -> list:
    """Everything a renderer's closure (or partial) holds."""
    out = list(getattr(render, "args", ()))
    out += list((getattr(render, "keywords", None) or {}).values())
    for cell in getattr(render, "__closure__", None) or ():
        out.append(cell.cell_contents)
    return out


def _holds_exception(obj, seen=None, depth=0) -> bool:
    seen = seen if seen is not None else set()
    if id(obj) in seen or depth > 6:
        return False
    seen.add(id(obj))
    if isinstance(obj, BaseException):
        return True
    if isinstance(obj, dict):
        return any(_holds_exception(v, seen, depth + 1) for v in obj.values())
    if isinstance(obj, (list, tuple, set)):
        return any(_holds_exception(v, seen, depth + 1) for v in obj)
    if callable(obj):
        return any(_holds_exception(v, seen, depth + 1) for v in _cells(obj))
    return False


def test_say_keeps_an_errors_message_not_the_error():
    def fails():
        big = bytearray(10_000_000)   # noqa: F841  a frame local the traceback would keep
        raise ModelUnavailableError(Msg("缺少 {x}", "missing {x}", x="m"))
    try:
        fails()
    except ModelUnavailableError as e:
        said = say("cap.unavailable", "en", detail=e)
    assert "missing m" in said and "缺少 m" in said.render("zh")
    assert not _holds_exception(said.render)
    assert len(pickle.dumps(_cells(said.render))) < 5_000


def test_say_keeps_an_image_errors_name_and_reason_in_both_languages():
    from core.errors import ImageError
    said = say("cap.unavailable", "en", detail=ImageError("a.png", Msg("坏了", "broken")))
    assert "a.png: broken" in said and "a.png: 坏了" in said.render("zh")
    assert not _holds_exception(said.render)

"""What the core says to people, in both of the app's languages, written where it is said.

    raise QueryError(Msg("查询太长：{n} 个词元，上限 {limit}。",
                         "Query too long: {n} tokens, the limit is {limit}.", n=n, limit=77))

    str(err)                 # English, as the CLI, the logs and the JSON API print it
    localize(err, "zh")      # Chinese, as the app shows it (ui/errors.py)

A `Msg` is a `str` (its English text), so everything that printed, joined or compared the
old English message still works; it also keeps its Chinese text and its fields, so a front
end can say it in the user's language. Fields that are themselves `Msg`s (a reason inside a
sentence) follow the language too; anything else (file names, numbers, an OS error's text)
is inserted verbatim. tests/test_messages.py walks every `Msg(...)` in core/ and checks that
both texts exist, the Chinese one is Chinese, and both name the same fields.
"""
from __future__ import annotations

import re
from typing import Any

__all__ = ["Msg", "localize", "join", "error_message", "without_paths"]


class Msg(str):
    """An English message (the str value) that can also say itself in Chinese: `.text("zh")`."""

    zh: str
    en: str
    fields: dict[str, Any]

    def __new__(cls, zh: str, en: str, **fields: Any) -> "Msg":
        self = super().__new__(cls, _format(en, fields, "en"))
        self.zh, self.en, self.fields = zh, en, fields
        return self

    def text(self, lang: str) -> str:
        """The message in `lang` ("zh" | "en")."""
        return _format(self.zh, self.fields, "zh") if lang == "zh" else str.__str__(self)

    def __reduce__(self):   # pickles (Ray, multiprocessing) keep both languages
        return (_rebuild, (self.zh, self.en, self.fields))

    def __repr__(self) -> str:
        return f"Msg({str.__repr__(self)})"


def _rebuild(zh: str, en: str, fields: dict[str, Any]) -> Msg:
    return Msg(zh, en, **fields)


def _format(template: str, fields: dict[str, Any], lang: str) -> str:
    if not fields:
        return template
    return template.format(**{k: localize(v, lang) if isinstance(v, Msg) else v for k, v in fields.items()})


def localize(value: Any, lang: str) -> str:
    """A `Msg`, an exception raised with one (or any other value) as text in `lang`."""
    if isinstance(value, BaseException):
        value = error_message(value)
    return value.text(lang) if isinstance(value, Msg) else str(value)


def error_message(e: BaseException) -> str:
    """The message `e` was raised with, to put inside another message (or keep without `e` and its
    traceback): its Msg (both languages) when it has one, an ImageError's "name: reason" too, else
    str(e) verbatim."""
    reason = getattr(e, "reason", None)
    if isinstance(reason, Msg) and hasattr(e, "name"):
        return Msg("{name}: {reason}", "{name}: {reason}", name=str(e.name), reason=reason)
    return e.args[0] if len(e.args) == 1 and isinstance(e.args[0], Msg) else str(e)


def join(parts, sep: str = " ") -> str | None:
    """Several messages as one (None if all are empty); each part keeps its own languages."""
    parts = [p for p in parts if p]
    if not parts:
        return None
    names = [f"part{i}" for i in range(len(parts))]
    template = sep.join("{%s}" % n for n in names)
    return Msg(template, template, **dict(zip(names, parts)))


# an absolute path on the server (/home/..., ~/..., C:\\...): two or more parts, up to a space, quote or bracket
_PATH = re.compile(r"(?<![\w:/.])(?:[A-Za-z]:[\\/]|~/|/)(?:[^\s`'\"()（）,，;；<>]+[\\/])+([^\s`'\"()（）,，;；<>]*)")


def without_paths(value: Any) -> Any:
    """`value` (a Msg or a str; None passes) with every absolute server path cut to "…/its-name":
    what a student on a shared link may read of a message (the model cache's place under the home
    folder, the library's folder) without learning the server's layout."""
    if value is None:
        return None

    def cut(text: str) -> str:
        return _PATH.sub(lambda m: "…/" + m.group(1) if m.group(1) else "…/", text)
    if isinstance(value, Msg):
        return Msg(cut(value.text("zh")), cut(value.text("en")))   # no fields: the texts are kept as they are
    return cut(str(value))

"""What a query must become before CLIP reads it, and captions for the library.

OpenAI CLIP was trained on English captions: on raw Chinese it is nearly useless
(XTD10 text->image R@1 1.1% vs 54% in English). So with an English-only encoder a
Chinese query is translated to English first, as the user's source system did
("英文查询: 'The Cat Who Flies'"); Chinese-capable encoders (ChineseCLIP, AltCLIP,
multilingual OpenCLIP models, the project's mini model: `encoder.multilingual`) read it as it is.

The translator and captioner are passed in (anything with `translate(texts, to)` /
`caption(images)`), so this module depends on neither implementation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

from PIL import Image

from ..errors import ModelUnavailableError
from ..messages import Msg, error_message
from .script import has_cjk, is_chinese

__all__ = ["QueryPlan", "prepare_query", "caption_metadata", "Translates", "Captions"]


class Translates(Protocol):
    def translate(self, texts: list[str], to: str) -> list[str]: ...


class Captions(Protocol):
    def caption(self, images: Sequence[Image.Image]) -> list[str]: ...


@dataclass(frozen=True)
class QueryPlan:
    """What happens to a text query before the CLIP text encoder sees it."""
    original: str        # what the user typed
    text: str            # what is sent to the encoder
    translated: bool     # True when `text` is a machine translation of `original`
    note: str | None = None  # for the user (a Msg: English, and Chinese for the app): the English query used,
    #                          or why the query was not translated
    warning: bool = False    # True when results will likely be poor (Chinese sent to an English-only model)


def prepare_query(text: str, encoder, translator: Translates | None) -> QueryPlan:
    """Decide the text CLIP reads. Never raises for a missing translator: the English path
    keeps working and a Chinese query goes untranslated with a note saying so."""
    if getattr(encoder, "multilingual", False) or not has_cjk(text):
        return QueryPlan(text, text, False)
    if not is_chinese(text):
        return QueryPlan(text, text, False, Msg(
            "只翻译中文查询；这个模型最懂英文，所以日文或韩文查询多半匹配得不好。",
            "Only Chinese queries are translated; this model understands English best, so a Japanese or "
            "Korean query will likely match poorly."), warning=True)
    if translator is None:
        return _untranslated(text, Msg("没有配置翻译模型", "no translator is configured"))
    try:
        english = translator.translate([text], to="en")[0].strip()
    except ModelUnavailableError as e:
        return _untranslated(text, error_message(e))
    if not english:
        return _untranslated(text, Msg("翻译模型给出了空的译文", "the translator returned an empty translation"))
    return QueryPlan(text, english, True, Msg("英文查询：'{english}'", "English query: '{english}'", english=english))


def _untranslated(text: str, reason: str) -> QueryPlan:
    return QueryPlan(text, text, False, Msg(
        "中文查询未经翻译就送入了模型，结果多半不好：这个 CLIP 模型几乎不懂中文。请提供翻译模型、用英文输入查询，"
        "或选用懂中文的模型（ChineseCLIP、AltCLIP、多语言 OpenCLIP 如 xlm-roberta-clip、mini）。原因：{reason}",
        "Chinese query sent untranslated, so expect poor results: this CLIP model reads little Chinese. Supply "
        "the translator, type the query in English, or choose a Chinese-capable model (ChineseCLIP, AltCLIP, "
        "a multilingual OpenCLIP such as xlm-roberta-clip, mini). Why: {reason}", reason=reason), warning=True)


def caption_metadata(images: Sequence[Image.Image], captioner: Captions,
                     translator: Translates | None = None,
                     stage: Callable[[str], None] | None = None) -> list[dict]:
    """N images -> N dicts {"caption_en": str, "caption_zh": str | None}, for the library's
    per-image metadata. caption_zh is None without a translator; when the translator cannot
    be loaded the English captions are kept and each dict also holds "caption_zh_error"
    (the reason, for the UI). A missing captioner raises ModelUnavailableError.
    `stage`, if given, hears each step as it starts: "load" (the captioner is loaded first, only
    when it is not loaded yet: the slow first time), "caption", then "translate" (a front end's
    progress text)."""
    stage = stage or (lambda name: None)
    if images and not getattr(captioner, "loaded", True) and hasattr(captioner, "load"):
        stage("load")
        captioner.load()
    stage("caption")
    english = captioner.caption(images)
    out: list[dict] = [{"caption_en": c, "caption_zh": None} for c in english]
    if translator is None or not out:
        return out
    stage("translate")
    try:
        chinese = translator.translate(english, to="zh")
    except ModelUnavailableError as e:
        for d in out:
            d["caption_zh_error"] = error_message(e)   # a Msg: the app shows it in the user's language
        return out
    for d, zh in zip(out, chinese):
        d["caption_zh"] = zh
    return out

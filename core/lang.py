"""Which language a text is in, and what a query must become before CLIP reads it.

OpenAI CLIP was trained on English captions: on raw Chinese it is nearly useless
(XTD10 text->image R@1 1.1% vs 54% in English). So with an English-only encoder a
Chinese query is translated to English first, as the user's source system did
("英文查询: 'The Cat Who Flies'"); Chinese-capable encoders (ChineseCLIP, AltCLIP,
the project's mini model: `encoder.multilingual`) read it as it is.

Detection is by script, not by a language model: Han characters with no kana or
hangul mean Chinese; kana means Japanese, hangul Korean; letters with no CJK script
are taken as English (the only other language the translators handle).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from PIL import Image

from .encoders import ModelUnavailableError

if TYPE_CHECKING:  # only for annotations: core.translate imports this module
    from .caption import Captioner
    from .encoders import Encoder
    from .translate import Translator

__all__ = ["has_cjk", "is_chinese", "source_language", "QueryPlan", "prepare_query", "caption_metadata"]

# Letters only: CJK punctuation (，。「」、) and full-width digits say nothing about the language.
_HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef\U00030000-\U0003134f"
_KANA = "\u3041-\u3096\u30a1-\u30fa\u30fc-\u30ff\u31f0-\u31ff\uff66-\uff9d"
_HANGUL = "\u1100-\u11ff\u3131-\u318e\uac00-\ud7a3"
_HAN_RE, _KANA_RE, _HANGUL_RE = re.compile(f"[{_HAN}]"), re.compile(f"[{_KANA}]"), re.compile(f"[{_HANGUL}]")
_CJK_RE = re.compile(f"[{_HAN}{_KANA}{_HANGUL}]")


def has_cjk(text: str) -> bool:
    """True when `text` holds any Chinese, Japanese or Korean letter (punctuation alone does not count)."""
    return bool(_CJK_RE.search(text or ""))


def is_chinese(text: str) -> bool:
    """True for Chinese, including Chinese mixed with English ("一只 cat"); False for Japanese
    (kana) and Korean (hangul), whose Han characters are read as part of those languages."""
    text = text or ""
    return bool(_HAN_RE.search(text)) and not _KANA_RE.search(text) and not _HANGUL_RE.search(text)


def source_language(text: str) -> str | None:
    """"zh", "en", or None when there is nothing the zh<->en translators can translate
    (empty, digits or punctuation only, Japanese, Korean)."""
    if is_chinese(text):
        return "zh"
    if has_cjk(text) or not any(ch.isalpha() for ch in text or ""):
        return None
    return "en"


@dataclass(frozen=True)
class QueryPlan:
    """What happens to a text query before the CLIP text encoder sees it."""
    original: str        # what the user typed
    text: str            # what is sent to the encoder
    translated: bool     # True when `text` is a machine translation of `original`
    note: str | None = None  # for the user: the English query used, or why the query was not translated
    warning: bool = False    # True when results will likely be poor (Chinese sent to an English-only model)


def prepare_query(text: str, encoder: "Encoder", translator: "Translator | None") -> QueryPlan:
    """Decide the text CLIP reads. Never raises for a missing translator: the English path
    keeps working and a Chinese query goes untranslated with a note saying so."""
    if getattr(encoder, "multilingual", False) or not has_cjk(text):
        return QueryPlan(text, text, False)
    if not is_chinese(text):
        return QueryPlan(text, text, False, "Only Chinese queries are translated; this model understands "
                         "English best, so a Japanese or Korean query will likely match poorly.", warning=True)
    if translator is None:
        return _untranslated(text, "no translator is configured")
    try:
        english = translator.translate([text], to="en")[0].strip()
    except ModelUnavailableError as e:
        return _untranslated(text, str(e))
    if not english:
        return _untranslated(text, "the translator returned an empty translation")
    return QueryPlan(text, english, True, f"英文查询 (English query): '{english}'")


def _untranslated(text: str, reason: str) -> QueryPlan:
    return QueryPlan(text, text, False, (
        f"中文查询未翻译 (Chinese query sent untranslated): {reason}. This CLIP model reads little Chinese, "
        "so expect poor results; supply the translator, type the query in English, or choose a "
        "Chinese-capable model (ChineseCLIP, AltCLIP, mini)."), warning=True)


def caption_metadata(images: Sequence[Image.Image], captioner: "Captioner",
                     translator: "Translator | None" = None) -> list[dict]:
    """N images -> N dicts {"caption_en": str, "caption_zh": str | None}, for the library's
    per-image metadata. caption_zh is None without a translator; when the translator cannot
    be loaded the English captions are kept and each dict also holds "caption_zh_error"
    (the reason, for the UI). A missing captioner raises ModelUnavailableError."""
    english = captioner.caption(images)
    out: list[dict] = [{"caption_en": c, "caption_zh": None} for c in english]
    if translator is None or not out:
        return out
    try:
        chinese = translator.translate(english, to="zh")
    except ModelUnavailableError as e:
        for d in out:
            d["caption_zh_error"] = str(e)
        return out
    for d, zh in zip(out, chinese):
        d["caption_zh"] = zh
    return out

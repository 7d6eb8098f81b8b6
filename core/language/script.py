"""Which language a text is in (by script, no model).

Detection is by script, not by a language model: Han characters with no kana or
hangul mean Chinese; kana means Japanese, hangul Korean; letters with no CJK script
are taken as English (the only other language the translators handle).
"""
from __future__ import annotations

import re

__all__ = ["has_cjk", "is_chinese", "source_language"]

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

"""The editable lists the safety filter reads: unsafe concepts (with safe counter-prompts) and the
query blocklist. Both are plain UTF-8 text files, one entry per line, versioned in assets/safety/.

    concepts = load_concepts()                      # the built-in list, assets/safety/concepts.txt
    concepts = load_concepts("class_rules.txt")     # a teacher's own list (--safety-concepts)
    concepts.unsafe[0].variants                     # ("nudity", "裸体"): one concept, two languages
    blocked = load_blocklist().blocks("a sexy photo")   # "sexy" (the entry that matched) or None

Concept file lines (`#` starts a comment, blank lines are skipped):

    nudity / 裸体                 one unsafe concept; " / " separates its wordings in other languages
    blood and gore / 血腥 | 0.24  the same, counted only at image-text cosine >= 0.24 (its threshold)
    safe: an ordinary photo       a safe counter-prompt (may also have " / " wordings)
    version: 1                    the list's version (shown with the filter's name)

A user's file replaces the unsafe concepts; its `safe:` lines, when it has any, replace the
built-in safe prompts, which it otherwise keeps.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import SafetyError
from ..messages import Msg
from ..settings import ASSETS_DIR

__all__ = ["Concept", "ConceptList", "Blocklist", "load_concepts", "load_blocklist", "BUILTIN_CONCEPTS",
           "BUILTIN_BLOCKLIST"]

BUILTIN_CONCEPTS = ASSETS_DIR / "safety" / "concepts.txt"
BUILTIN_BLOCKLIST = ASSETS_DIR / "safety" / "blocklist.txt"
_SAFE_PREFIX = "safe:"
_VERSION_RE = re.compile(r"^#?\s*version\s*:\s*(\S+)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Concept:
    """One concept in one or more wordings (languages); `threshold` is the lowest image-text cosine
    at which it counts (None: the margin over the safe prompts alone decides)."""
    variants: tuple[str, ...]
    threshold: float | None = None

    @property
    def label(self) -> str:
        """How the concept is shown: its wordings joined, e.g. "nudity / 裸体"."""
        return " / ".join(self.variants)


@dataclass(frozen=True)
class ConceptList:
    unsafe: tuple[Concept, ...]
    safe: tuple[Concept, ...]
    source: str           # "built-in" or the file's name (never its full path: the page shows it)
    version: str | None   # the file's "version:" line
    digest: str           # sha256 of the text (first 12 hex digits): which list judged a row

    def describe(self) -> Msg:
        """e.g. "built-in list v1, 14 concepts" in both languages."""
        version, n = (f" v{self.version}" if self.version else ""), len(self.unsafe)
        count = Msg("{n} 个概念", "{n} concept", n=n) if n == 1 else Msg("{n} 个概念", "{n} concepts", n=n)
        if self.source == "built-in":
            return Msg("内置列表{v}，{count}", "built-in list{v}, {count}", v=version, count=count)
        return Msg("{file}{v}，{count}", "{file}{v}, {count}", file=self.source, v=version, count=count)


def _parse_line(line: str, where: str) -> Concept:
    """"a / b | 0.3" -> Concept(("a", "b"), 0.3); SafetyError naming the line when the number is not one."""
    text, _, number = line.partition("|")
    threshold = None
    if number.strip():
        try:
            threshold = float(number)
        except ValueError:
            raise SafetyError(Msg("{where}：“|” 之后应为 -1 到 1 之间的相似度，实际为 {got!r}",
                                  "{where}: after '|' a similarity between -1 and 1 is expected, got {got!r}",
                                  where=where, got=number.strip())) from None
        if not -1.0 <= threshold <= 1.0:
            raise SafetyError(Msg("{where}：相似度 {got} 不在 -1 到 1 之间", "{where}: similarity {got} is not between -1 and 1",
                                  where=where, got=threshold))
    variants = tuple(v.strip() for v in text.split(" / ") if v.strip())
    return Concept(variants, threshold)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise SafetyError(Msg("找不到文件 {path}", "File not found: {path}", path=str(path))) from None
    except (OSError, UnicodeDecodeError) as e:
        raise SafetyError(Msg("无法读取 {path}（应为 UTF-8 文本）：{why}", "Cannot read {path} (UTF-8 text expected): {why}",
                              path=str(path), why=str(e))) from None


def _parse(text: str, name: str) -> tuple[list[Concept], list[Concept], str | None]:
    unsafe, safe, version = [], [], None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        found = _VERSION_RE.match(line)
        if found:
            version = found.group(1)
            continue
        if not line or line.startswith("#"):
            continue
        where = f"{name}:{number}"
        if line.lower().startswith(_SAFE_PREFIX):
            safe.append(_parse_line(line[len(_SAFE_PREFIX):], where))
        else:
            unsafe.append(_parse_line(line, where))
    return [c for c in unsafe if c.variants], [c for c in safe if c.variants], version


def load_concepts(path: str | os.PathLike | None = None) -> ConceptList:
    """The built-in list, or the file at `path` (its unsafe concepts replace the built-in ones; its
    safe prompts, when it has any, replace the built-in ones too). SafetyError for a file that
    cannot be read or names no concept."""
    builtin_text = _read(BUILTIN_CONCEPTS)
    unsafe, safe, version = _parse(builtin_text, BUILTIN_CONCEPTS.name)
    if path is None:
        return ConceptList(tuple(unsafe), tuple(safe), "built-in", version, _digest(builtin_text))
    path = Path(path)
    text = _read(path)
    own_unsafe, own_safe, own_version = _parse(text, path.name)
    if not own_unsafe:
        raise SafetyError(Msg("{path} 中没有任何概念（每行一个不安全概念，中文或英文）",
                              "{path} names no concept (one unsafe concept per line, Chinese or English)", path=str(path)))
    return ConceptList(tuple(own_unsafe), tuple(own_safe or safe), path.name, own_version, _digest(text))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


@dataclass(frozen=True)
class Blocklist:
    """Words a query may not contain: English entries as whole words (any case), Chinese anywhere."""
    entries: tuple[str, ...]
    version: str | None = None

    def __post_init__(self):
        words = [re.escape(e.lower()) for e in self.entries if e.isascii()]
        pattern = r"(?<![a-z0-9])(" + "|".join(words) + r")(?![a-z0-9])" if words else None
        object.__setattr__(self, "_words", re.compile(pattern) if pattern else None)
        object.__setattr__(self, "_phrases", tuple(e for e in self.entries if not e.isascii()))

    def blocks(self, text: str) -> str | None:
        """The entry `text` contains (for the log, never shown to the one who typed it), or None."""
        lowered = (text or "").lower()
        found = self._words.search(lowered) if self._words else None
        if found:
            return found.group(1)
        return next((p for p in self._phrases if p in lowered), None)


def load_blocklist(path: str | os.PathLike | None = None) -> Blocklist:
    """The built-in blocklist (assets/safety/blocklist.txt), or the file at `path`."""
    path = Path(path) if path is not None else BUILTIN_BLOCKLIST
    text = _read(path)
    version = None
    entries = []
    for raw in text.splitlines():
        line = raw.strip()
        found = _VERSION_RE.match(line)
        if found:
            version = found.group(1)
        elif line and not line.startswith("#"):
            entries.append(" ".join(line.split()))
    return Blocklist(tuple(entries), version)

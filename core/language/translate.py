"""Chinese <-> English translation: NLLB-200 (the user's source system) or Marian, loaded lazily.

    tr = Translator("nllb", runtime)              # nothing is loaded yet
    tr.translate(["会飞的猫"], to="en")            # -> ["The Cat Who Flies"]
    tr.translate("a cat", to="en")                # -> ["a cat"]: already English, no model run

The source language is detected per text (core.lang.source_language); a text already
in the target language, or with nothing to translate (empty, digits, Japanese, Korean),
is returned unchanged. Translations are remembered in an LRU cache, so a repeated query
costs nothing. A name is a registry name (`TRANSLATORS`), a local save_pretrained()
directory, or a hub id; loading follows core.hf.load_pretrained (cache, HF_ENDPOINT,
HF_HUB_OFFLINE, ModelUnavailableError naming the model and how to supply it).

Local directories: an NLLB / M2M100 directory translates both ways. A Marian model
translates one way, read from its tokenizer_config.json (target_lang) or its name
("...zh-en"); a folder holding `opus-mt-zh-en/` and `opus-mt-en-zh/` gives both.
"""
from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Sequence

from ..models.hf import LazyLoad, is_hub_id, load_pretrained
from ..errors import ModelUnavailableError, UnknownModelError
from ..lru import LRU
from ..messages import Msg
from .script import source_language
from ..settings import Runtime, pick_runtime

if TYPE_CHECKING:   # imported where used: `python -m core --help` reads TRANSLATORS without torch
    import torch

__all__ = ["Translator", "TranslateSettings", "TRANSLATORS", "DEFAULT_TRANSLATOR", "NLLB_CODES"]

# name -> (loader kind, {target language: hub id}). NLLB is one model for both directions.
TRANSLATORS: dict[str, tuple[str, dict[str, str]]] = {
    "nllb": ("nllb", {"en": "facebook/nllb-200-distilled-600M", "zh": "facebook/nllb-200-distilled-600M"}),
    "marian": ("marian", {"en": "Helsinki-NLP/opus-mt-zh-en", "zh": "Helsinki-NLP/opus-mt-en-zh"}),  # ~300 MB each
}
DEFAULT_TRANSLATOR = "nllb"
NLLB_CODES = {"en": "eng_Latn", "zh": "zho_Hans"}  # FLORES-200 codes; NLLB forces the target's as first token
_LANGS = ("en", "zh")


@dataclass(frozen=True)
class TranslateSettings:
    num_beams: int = 4           # beam search width (1 = greedy, fastest)
    max_new_tokens: int = 128    # hard output cap; queries and captions are one short sentence
    length_ratio: float = 3.0    # and at most 3 x the longest input + 10 tokens: stops runaway repetition loops
    max_input_tokens: int = 256  # longer inputs are truncated (NLLB was trained on <= 512)
    batch_size: int = 16         # texts per generate() call
    cache_size: int = 4096       # translations remembered (LRU); 0 disables the cache


class _Parts(NamedTuple):
    kind: str  # "nllb" | "marian"
    model: torch.nn.Module
    tokenizer: Any


def _marian_target(path: Path) -> str | None:
    """"en" / "zh" for a Marian directory, from tokenizer_config.json or the folder name."""
    try:
        cfg = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8"))
        target = str(cfg.get("target_lang") or "")[:2].lower()
    except (OSError, ValueError):
        target = ""
    if target in _LANGS:
        return target
    m = re.search(r"(en|zh)[-_](en|zh)$", path.name.lower())
    return m.group(2) if m and m.group(1) != m.group(2) else None


def _resolve_dir(path: Path) -> tuple[str, dict[str, str]]:
    """A local directory -> (kind, {target: directory})."""
    config = path / "config.json"
    if config.is_file():
        try:
            kind = json.loads(config.read_text(encoding="utf-8")).get("model_type")
        except ValueError:
            raise ModelUnavailableError(Msg("{config} 不是有效的 JSON；请用 save_pretrained() 重新保存翻译模型",
                                            "{config} is not valid JSON; save the translator again "
                                            "with save_pretrained()", config=str(config))) from None
        if kind in ("m2m_100", "nllb-moe"):
            return "nllb", {lang: str(path) for lang in _LANGS}
        if kind == "marian":
            target = _marian_target(path)
            if target is None:
                raise UnknownModelError(Msg("看不出 {path} 中 Marian 模型的翻译方向：把文件夹命名为 ...zh-en 或 ...en-zh，"
                                            "或在它的 tokenizer_config.json 中设置 target_lang",
                                            "Cannot tell the direction of the Marian model in {path}: name the folder "
                                            "...zh-en or ...en-zh, or set target_lang in its tokenizer_config.json",
                                            path=str(path)))
            return "marian", {target: str(path)}
        raise UnknownModelError(Msg("{path} 中是 '{kind}' 模型；翻译模型须为 NLLB/M2M100 或 Marian",
                                    "{path} holds a '{kind}' model; translators are NLLB/M2M100 or Marian",
                                    path=str(path), kind=kind))
    found = {}
    for sub in sorted(p for p in path.iterdir() if (p / "config.json").is_file()):
        try:
            kind, sources = _resolve_dir(sub)
        except UnknownModelError:
            continue  # another kind of model stored alongside: not ours to use
        if kind == "marian":
            found.update(sources)
    if not found:
        raise UnknownModelError(Msg("{path} 中没有翻译模型：应为 save_pretrained() 保存的文件夹，或其中含有 "
                                    "opus-mt-zh-en/、opus-mt-en-zh/ 这样的 Marian 文件夹",
                                    "{path} holds no translator: expected a save_pretrained() directory, or "
                                    "Marian folders such as opus-mt-zh-en/ and opus-mt-en-zh/ inside it",
                                    path=str(path)))
    return "marian", found


def _resolve(name: str) -> tuple[str, dict[str, str]]:
    if name in TRANSLATORS:
        return TRANSLATORS[name]
    path = Path(name).expanduser()
    if path.is_dir():
        return _resolve_dir(path)
    if is_hub_id(name):
        if re.search(r"nllb|m2m100", name.lower()):
            return "nllb", {lang: name for lang in _LANGS}
        m = re.search(r"(en|zh)-(en|zh)$", name.lower())
        if m and m.group(1) != m.group(2):
            return "marian", {m.group(2): name}
    raise UnknownModelError(Msg("找不到翻译模型 '{name}'；可用的翻译模型 = {available}，或用 save_pretrained() 保存的"
                                "本地文件夹，或 hub 上 NLLB 或 opus-mt-zh-en/en-zh 模型的 id",
                                "Translator '{name}' not found; available translators = {available}, or a local "
                                "save_pretrained() directory, or a hub id of an NLLB or opus-mt-zh-en/en-zh model",
                                name=name, available=sorted(TRANSLATORS)))


class Translator:
    """zh <-> en translation of short texts. Thread-safe; each model loads on first use."""

    def __init__(self, model: str = DEFAULT_TRANSLATOR, runtime: Runtime | None = None,
                 settings: TranslateSettings = TranslateSettings(), cache: Path | None = None, offline: bool = False):
        self.name = str(model).strip()
        self.kind, self._sources = _resolve(self.name)
        self.runtime = runtime or pick_runtime()
        self.settings, self._cache_dir, self._offline = settings, cache, offline
        self._lazy = {src: LazyLoad(lambda src=src: self._load(src)) for src in set(self._sources.values())}
        self._memo = LRU(settings.cache_size)   # (target, text) -> translation
        self._run_lock = threading.Lock()  # NLLB's tokenizer holds src_lang as state; one generate() at a time

    def _load(self, source: str) -> _Parts:
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
        what = Msg("翻译模型 '{name}'（{source}）", "translator '{name}' ({source})", name=self.name, source=source)
        model, tok = load_pretrained(what, source,
                                     [AutoModelForSeq2SeqLM.from_pretrained, AutoTokenizer.from_pretrained],
                                     self._cache_dir, self._offline, "--translator")
        if self.kind == "nllb":
            missing = [c for c in NLLB_CODES.values() if c not in tok.get_vocab()]
            if missing:
                raise UnknownModelError(Msg("{source} 的分词器缺少 NLLB 语言代码 {missing}；它是 NLLB-200 模型吗？",
                                            "The tokenizer of {source} lacks the NLLB language codes {missing}; "
                                            "is it an NLLB-200 model?", source=source, missing=missing))
        model.to(self.runtime.device, self.runtime.dtype).eval()
        return _Parts(self.kind, model, tok)

    def _parts(self, to: str) -> _Parts:
        if to not in self._sources:
            raise ModelUnavailableError(Msg("翻译模型 {name} 没有译成 '{to}' 的模型；它只有 {has}。请添加缺少的 "
                                            "opus-mt 模型文件夹。",
                                            "Translator {name} has no model for translating to '{to}'; "
                                            "it has {has}. Add the missing opus-mt model folder.",
                                            name=self.name, to=to, has=sorted(self._sources)))
        return self._lazy[self._sources[to]].get()

    def load(self, to: str = "en") -> None:
        """Load the model for one direction now (e.g. at app start); raises ModelUnavailableError."""
        self._parts(to)

    def can_translate_to(self, to: str) -> bool:
        return to in self._sources

    def translate(self, texts: Sequence[str] | str, to: str) -> list[str]:
        """N texts -> N texts in `to` ("en" | "zh"), in order. Texts needing no translation come
        back unchanged without any model run; repeated texts come from the LRU cache."""
        if to not in _LANGS:
            raise ValueError(f"Cannot translate to {to!r}; choose one of {list(_LANGS)}")
        texts = [texts] if isinstance(texts, str) else list(texts)
        out = list(texts)
        todo: dict[str, list[int]] = {}  # distinct text -> positions, so duplicates run once
        for i, text in enumerate(texts):
            src = source_language(text)
            if src is None or src == to:
                continue
            hit = self._memo.get((to, text))
            if hit is not None:
                out[i] = hit
            else:
                todo.setdefault(text, []).append(i)
        if todo:
            for text, result in zip(todo, self._run(list(todo), to)):
                self._memo.put((to, text), result)
                for i in todo[text]:
                    out[i] = result
        return out

    def _run(self, texts: list[str], to: str) -> list[str]:
        """Translate in batches of similar length (less padding), returning the input order."""
        parts, step = self._parts(to), self.settings.batch_size
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        results: dict[int, str] = {}
        for k in range(0, len(order), step):
            idx = order[k:k + step]
            for i, text in zip(idx, self._generate(parts, [texts[i].strip() for i in idx], to)):
                results[i] = text
        return [results[i] for i in range(len(texts))]

    def _generate(self, parts: _Parts, texts: list[str], to: str) -> list[str]:
        s, tok, extra = self.settings, parts.tokenizer, {}
        import torch   # here, not at the top: `python -m core --help` does not need it
        with self._run_lock, torch.inference_mode():
            if parts.kind == "nllb":
                tok.src_lang = NLLB_CODES["zh" if to == "en" else "en"]  # prefixes the source language code
                extra["forced_bos_token_id"] = tok.convert_tokens_to_ids(NLLB_CODES[to])
            batch = tok(texts, return_tensors="pt", padding=True, truncation=True,
                        max_length=min(s.max_input_tokens, tok.model_max_length))
            batch = {k: v.to(self.runtime.device) for k, v in batch.items()}
            ids = parts.model.generate(**batch, num_beams=s.num_beams, max_new_tokens=self._output_cap(parts, batch),
                                       **extra)
        return [t.strip() for t in tok.batch_decode(ids.cpu(), skip_special_tokens=True)]

    def _output_cap(self, parts: _Parts, batch: dict) -> int:
        """max_new_tokens for this batch: the settings' caps, and never past the decoder's positions."""
        s, positions = self.settings, getattr(parts.model.config, "max_position_embeddings", None) or 10**6
        return max(1, min(s.max_new_tokens, int(s.length_ratio * batch["input_ids"].shape[1]) + 10, positions - 2))

    def __repr__(self) -> str:
        return f"Translator({self.name!r}, {self.kind}, to={sorted(self._sources)}, {self.runtime.describe()})"


# ---------------------------------------------------------------- command line (UI layer: prints)

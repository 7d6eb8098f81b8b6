"""Zero-shot classification: label sets, prompt templates, cached class embeddings.

    clf = ZeroShotClassifier(encoder)
    clf.classify(image, parse_labels("cat, dog, 小鸟"), load_templates("single"))
    # -> [("cat", 0.91), ("dog", 0.06), ("小鸟", 0.03)]

Built-in label sets (assets/zeroshot/classnames_{en,zh}.json): imagenet1k, cifar10,
cifar100, in English or Chinese. Template specs: "bare" ("{c}"), "single"
("a photo of a {c}."), "selected7" (OpenAI's 7 forward-selected ImageNet
templates), "ensemble80" (the CLIP paper's 80), "zh" (80 Chinese ImageNet
templates), "cifar" (CLIP's 18 CIFAR templates), or any custom string with "{c}".
A class embedding is the L2-normalised mean of its templates' embeddings.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import torch
import torch.nn.functional as F
from PIL import Image

from .errors import LabelError
from .language.script import has_cjk
from .lru import LRU
from .messages import Msg
from .settings import ASSETS_DIR

__all__ = ["ZeroShotClassifier", "PromptPlan", "plan_prompts", "cannot_judge", "parse_labels", "load_labelset", "load_templates",
           "class_matrix", "LABEL_SETS", "TEMPLATE_SPECS", "MAX_LABELS"]

LABEL_SETS = ("imagenet1k", "cifar10", "cifar100")
TEMPLATE_SPECS = ("bare", "single", "selected7", "ensemble80", "zh", "cifar")
MAX_LABELS = 2000       # a typed list longer than this is a paste accident, not a label set
MAX_LABEL_CHARS = 200   # CLIP reads 77 tokens at most; longer labels are surely not class names
_CACHE_SIZE = 16        # class matrices kept per classifier (ImageNet x 80 templates costs ~80k text encodes)
_ZS = ASSETS_DIR / "zeroshot"




@lru_cache(maxsize=None)
def _json(name: str) -> dict:
    return json.loads((_ZS / name).read_text(encoding="utf-8"))


def parse_labels(text: str) -> list[str]:
    """Split user-typed labels on commas (, or ，), semicolons and newlines; strip blanks.

    Raises LabelError for an empty list, duplicates (case-insensitive), labels that are too
    long, or too many labels."""
    labels = [s.strip() for s in re.split(r"[,，;；\n\r]+", text or "") if s.strip()]
    if not labels:
        raise LabelError(Msg("没有给出标签：请至少输入两个标签，用逗号分隔，例如“猫, 狗, 小鸟”",
                             "No labels given: type at least two labels separated by commas, e.g. 'cat, dog, 小鸟'"))
    if len(labels) == 1:
        # softmax over one class is always 100%: a meaningless answer, so ask for a second label
        raise LabelError(Msg("只给了一个标签（{label!r}）：零样本分类是在标签之间比较，请至少给出两个，例如“猫, 狗”",
                             "Only one label ({label!r}) given: zero-shot classification compares labels, "
                             "so give at least two, e.g. 'cat, dog'", label=labels[0]))
    if len(labels) > MAX_LABELS:
        raise LabelError(Msg("给出了 {n} 个标签，最多接受 {limit} 个", "{n} labels given; at most {limit} are accepted",
                             n=len(labels), limit=MAX_LABELS))
    seen, dups = set(), []
    for label in labels:
        if len(label) > MAX_LABEL_CHARS:
            raise LabelError(Msg("标签 {label!r}… 有 {n} 个字符，最多 {limit} 个", "Label {label!r}... is {n} characters; at most {limit}",
                                 label=label[:40], n=len(label), limit=MAX_LABEL_CHARS))
        key = label.casefold()
        if key in seen and label not in dups:
            dups.append(label)
        seen.add(key)
    if dups:
        raise LabelError(Msg("标签重复：{dups}；每个标签只能出现一次", "Duplicate labels: {dups}; each label must appear once",
                             dups=", ".join(dups)))
    return labels


def load_labelset(spec: str, lang: str = "en") -> list[str]:
    """A built-in set name (imagenet1k, cifar10, cifar100) in `lang` ("en" | "zh"), or typed labels."""
    key = (spec or "").strip().lower().replace("-", "")
    if key in LABEL_SETS:
        if lang not in ("en", "zh"):
            raise LabelError(Msg("未知的标签语言 {lang!r}；应为 en 或 zh", "Unknown label language {lang!r}; expected en or zh",
                                 lang=lang))
        return list(_json(f"classnames_{lang}.json")[key])
    return parse_labels(spec)


def load_templates(spec: str, lang: str = "en") -> list[str]:
    """Template spec -> list of strings with "{c}". See the module docstring for the names."""
    spec = (spec or "single").strip()
    key = spec.lower()
    if key == "bare":
        return ["{c}"]
    if key == "single":
        return ["{c}的照片。"] if lang == "zh" else ["a photo of a {c}."]
    if key == "selected7":
        return list(_json("templates_en.json")["imagenet1k_selected7"])
    if key == "ensemble80":
        return list(_json(f"templates_{'zh' if lang == 'zh' else 'en'}.json")["imagenet1k"])
    if key == "zh":
        return list(_json("templates_zh.json")["imagenet1k"])
    if key == "cifar":
        return list(_json("templates_en.json")["cifar100"])
    if "{c}" in spec:
        return [spec]
    raise LabelError(Msg("未知的模板 {spec!r}；请使用 {specs} 之一，或包含 {{c}} 的自定义模板，例如“{{c}}的照片。”",
                         "Unknown templates {spec!r}; use one of {specs} "
                         "or a custom template containing {{c}}, e.g. 'a photo of a {{c}}.'",
                         spec=spec, specs=", ".join(TEMPLATE_SPECS)))


@dataclass(frozen=True)
class PromptPlan:
    """Labels shown to the user, and what the text encoder reads for them."""
    labels: list[str]          # displayed, in the user's language
    prompt_labels: list[str]   # inserted into the templates (English for an English-only encoder)
    templates: list[str]
    note: str | None = None    # e.g. which translation was used, or why none was (a Msg: zh and en)


def plan_prompts(encoder, label_spec: str, template_spec: str, lang: str = "en",
                 translate: Callable[[list[str]], list[str] | None] | None = None) -> PromptPlan:
    """Resolve labels and templates for `encoder`. A Chinese-capable encoder reads them as they are.
    An English-only one (OpenAI CLIP reads little Chinese) gets the English names of a built-in set
    shown in Chinese, English templates, and typed Chinese labels translated by `translate` (which may return None)."""
    labels = load_labelset(label_spec, lang)
    if getattr(encoder, "multilingual", False) or not (lang == "zh" or any(map(has_cjk, labels))):
        # the templates' language follows the labels, not the page: the same labels and template spec
        # give the same numbers whichever language the page shows
        written = "zh" if labels and all(map(has_cjk, labels)) else "en"
        return PromptPlan(labels, labels, load_templates(template_spec, written))
    templates = load_templates("single" if template_spec.strip().lower() == "zh" else template_spec, "en")
    if any(map(has_cjk, templates)):
        return PromptPlan(labels, labels, templates, Msg("仅懂英文的模型配中文模板：准确率可能很低",
                                                         "Chinese templates with an English-only model: expect poor accuracy"))
    if label_spec.strip().lower().replace("-", "") in LABEL_SETS:
        return PromptPlan(labels, load_labelset(label_spec, "en"), templates)
    if not any(map(has_cjk, labels)):
        return PromptPlan(labels, labels, templates)
    english = translate(labels) if translate else None
    if not english or english == labels:
        return PromptPlan(labels, labels, templates, Msg(
            "中文标签未翻译（没有可用的翻译器）；这个仅懂英文的模型准确率可能很低，也可以直接输入英文标签",
            "Chinese labels sent untranslated (no translator available): expect poor accuracy with this "
            "English-only model, or type English labels"))
    pairs = ", ".join(f"{z} → {e}" for z, e in zip(labels, english) if z != e)
    return PromptPlan(labels, english, templates, Msg("已改用英文标签：{pairs}", "English labels used: {pairs}",
                                                      pairs=pairs))


@torch.inference_mode()
def class_matrix(encoder, labels: list[str], templates: list[str]) -> torch.Tensor:
    """[C, D] L2-normalised class embeddings: mean over templates of the encoded prompts."""
    prompts = [t.replace("{c}", label) for label in labels for t in templates]
    feats = encoder.encode_texts(prompts).view(len(labels), len(templates), -1)
    return F.normalize(feats.mean(dim=1), dim=-1)


def cannot_judge(encoder, labels: list[str]) -> Msg | None:
    """Why some labels' scores mean nothing (words the model never saw), so none wins silently."""
    words = encoder.unknown_words([label for label in labels if label])
    if not words:
        return None
    unjudged = [label for label in labels if label and encoder.unknown_words([label])]
    return Msg("模型从未见过这些词：{words}，无法判断含有它们的标签（{labels}），这些标签的概率只是猜测。",
               "The model has never seen these words: {words}; it cannot judge the labels with them ({labels}), "
               "whose probabilities are guesses.", words=", ".join(words), labels=", ".join(unjudged))


class ZeroShotClassifier:
    """Classifies images against label sets; class matrices are cached per (labels, templates)."""

    def __init__(self, encoder, cache_size: int = _CACHE_SIZE):
        self.encoder = encoder
        self._cache = LRU(cache_size)   # (model, labels, templates) -> class matrix [C, D]

    def classes(self, labels: list[str], templates: list[str]) -> torch.Tensor:
        key = (self.encoder.model_id, tuple(labels), tuple(templates))
        matrix = self._cache.get(key)
        if matrix is None:
            matrix = class_matrix(self.encoder, labels, templates)  # outside any lock: may take seconds
            self._cache.put(key, matrix)
        return matrix

    def probabilities(self, image_feats: torch.Tensor, labels: list[str], templates: list[str]) -> torch.Tensor:
        """image_feats [N, D] (normalised) -> softmax probabilities [N, C]."""
        if len(labels) < 1:
            raise LabelError(Msg("没有给出标签", "No labels given"))
        logits = self.encoder.logit_scale * image_feats @ self.classes(labels, templates).T
        return logits.softmax(dim=-1)

    def classify(self, image: Image.Image, labels: list[str], templates: list[str],
                 top_k: int = 5, prompt_labels: list[str] | None = None) -> list[tuple[str, float]]:
        """Top-k (label, probability) pairs for one RGB image, best first. `prompt_labels`, when
        given, are what the encoder reads for each of `labels` (e.g. their English names)."""
        probs = self.probabilities(self.encoder.encode_images([image]), prompt_labels or labels, templates)[0]
        values, idx = probs.topk(min(top_k, len(labels)))
        return [(labels[i], float(v)) for v, i in zip(values.tolist(), idx.tolist())]

"""Text→image, image→image and combined search over a library.

    searcher = Searcher(encoder, library, open_index(library, runtime, "auto"))
    result = searcher.search(SearchQuery(text="a cat on a sofa", minus=["people"], k=5))
    result.hits  # [Hit(score=0.31, name="cat.jpg", ...), ...]

What a query may be is decided once, in `check_query` (empty, too long, k, threshold, negative
terms split on commas); the front door (core/workbench.py) checks, plans the texts for the
encoder (a Chinese query translated for an English-only model: a `Planned`) and passes the
plan down, then marks the weak hits (`count_strong`) on the `SearchResult` every surface renders.

A query is a weighted sum of L2-normalised embeddings: each positive text and image
adds its embedding times its weight, each negative text subtracts its own; the sum is
normalised again (rclip's combined queries). Its `terms` (core/library/terms.py: texts, library
image ids, images, each with a weight; `parse_terms('"2:cat" + 3f2a9c0e11d4 - dog')` reads them
as rclip does) join the text, image and negative terms in the same sum. Scores are cosine similarities; when images
carry stored captions (core.lang.caption_metadata at ingest), a text query's best embedding
candidates are re-ranked with a small bonus for captions containing the query's words.

The index (core/library/index.py: exact, or FAISS above a size threshold) returns
permanent row ids; hits are named from the library by id, so a removal between scoring
and naming drops that hit instead of shifting every later one.
"""
from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import QueryError
from ..images import load_image
from ..lru import LRU
from ..messages import Msg
from .index import ExactIndex
from .store import Entry, Library
from .terms import MAX_TERMS, Term, check_terms, describe_terms, format_terms, parse_terms

__all__ = ["Searcher", "SearchQuery", "SearchResult", "Planned", "Hit", "Term", "check_query", "parse_terms",
           "split_terms", "count_strong", "MAX_QUERY_CHARS", "MAX_K", "MAX_TERMS", "WEAK_RATIO"]

MAX_QUERY_CHARS = 1000   # longer is a paste accident; CLIP reads at most 77 tokens (the rest is truncated)
MAX_K = 1000             # results per query
WEAK_RATIO = 0.9         # a hit under 90% of the best hit's score is "weak": relative, so it fits every model's
                         # score range (ViT-B/32 text->image ~0.2-0.35, the mini model's up to ~0.9)
CAPTION_WEIGHT = 0.1     # score bonus for a stored caption that contains the query's words (cosines span ~0.1-0.4)
_RERANK_POOL = 200       # embedding candidates re-scored with captions
_TEXT_CACHE = 1024       # query embeddings kept (classrooms repeat the same queries)


def split_terms(values: Sequence[str]) -> list[str]:
    """Negative terms as typed: each value split on commas (half- or full-width), blanks dropped."""
    return [t.strip() for v in values for t in re.split(r"[,，]", v or "") if t.strip()]


@dataclass
class SearchQuery:
    text: str = ""                                         # positive text (Chinese or English)
    image: Image.Image | None = None                       # positive image (image→image)
    minus: list[str] = field(default_factory=list)         # negative texts, subtracted; "a, b" is two terms
    text_weight: float = 1.0
    image_weight: float = 1.0
    minus_weight: float = 1.0
    k: int = 10
    threshold: float | None = None                         # drop hits with a lower cosine score
    use_captions: bool = True                              # also match the text against stored captions
    terms: list[Term] = field(default_factory=list)        # more weighted terms (texts, library image ids, images),
    #                                                        added to the above: parse_terms('"2:cat" + ID - dog')

    def all_terms(self) -> list[Term]:
        """Every term of the query, in order: the text (text_weight), the image (image_weight), each
        negative text (-minus_weight), then `terms`."""
        out = [Term(self.text_weight, text=self.text)] if (self.text or "").strip() else []
        out += [Term(self.image_weight, image=self.image)] if self.image is not None else []
        out += [Term(-self.minus_weight, text=m) for m in split_terms(self.minus)]
        return out + list(self.terms)


@dataclass(frozen=True)
class Hit:
    rowid: int                 # permanent row id in the library
    id: str                    # short id (first 12 hex digits of sha256), as `library list` shows
    sha256: str
    path: Path
    name: str
    score: float
    meta: dict


@dataclass
class SearchResult:
    hits: list[Hit]            # best first, at most k
    text_used: str = ""        # the text actually sent to the encoder (after translation); a query of several
    #                            terms written back in the query syntax ('"2:golden retriever" - fruit')
    note: str | None = None    # e.g. "translated from Chinese" or "translator unavailable"
    strong: int | None = None  # hits[:strong] are strong, the rest weak (WEAK_RATIO; the front door judges);
                               # None: not judged, every hit counts as strong

    plan: str | None = None    # a query of several (or weighted) terms: each term with its weight and, for a
    #                            translated text, what the encoder read (a Msg: describe_terms); None otherwise
    terms: tuple[Term, ...] = ()   # the query's terms as the encoder read them (Planned.terms)

    def __post_init__(self) -> None:
        if self.strong is None:
            self.strong = len(self.hits)

    @property
    def weak(self) -> int:
        """How many hits are weak (they come last)."""
        return len(self.hits) - self.strong


@dataclass(frozen=True)
class Planned:
    """What the encoder gets for a checked query: its terms with their texts as they are, or translated
    for an English-only model (a translated term keeps the typed text in `asked`; the note says so);
    image terms as PIL images or library image ids. `text` is the query's own text as planned."""
    text: str
    terms: tuple[Term, ...] = ()
    note: str | None = None


def count_strong(hits: Sequence[Hit], ratio: float = WEAK_RATIO) -> int:
    """How many of `hits` (best first) score at least `ratio` x the best score; all of them
    when the best score is not positive (no scale to be relative to)."""
    if not hits or hits[0].score <= 0:
        return len(hits)
    floor = ratio * hits[0].score
    return sum(1 for h in hits if h.score >= floor)


_QUERY, _NEGATIVE = Msg("查询", "Query"), Msg("排除词", "Negative term")


def check_query(q: SearchQuery) -> SearchQuery:
    """The query with its text stripped, its negative terms split on commas and its terms checked
    (core/library/terms.py: one kind each, finite weights, at most MAX_TERMS, something positive), or
    QueryError: empty, too long, k out of 1..MAX_K, a threshold that is not a number. The one place
    these are decided."""
    text = _check_text(q.text)
    minus = [_check_text(m, _NEGATIVE) for m in split_terms(q.minus)]
    terms = [replace(t, text=_check_text(t.text)) if t.text is not None else t for t in q.terms]
    if not text and q.image is None and not terms:
        raise QueryError(Msg("查询为空：请输入一些词（例如“沙发上的猫”或“a cat”），或给一张图片",
                             "Empty query: type some words (e.g. 'a cat on a sofa' or '一只猫') or give an image"))
    checked = replace(q, text=text, minus=minus, terms=terms)
    if any(t.text == "" for t in terms):
        raise QueryError(Msg("查询中有一个空的文字项", "A text term of the query is empty"))
    check_terms(checked.all_terms())
    _check_k(q.k)
    if q.threshold is not None and not math.isfinite(q.threshold):
        raise QueryError(Msg("相似度阈值必须是 -1 到 1 之间的数", "threshold must be a number between -1 and 1"))
    return checked


def _check_k(k: int) -> None:
    if not 1 <= k <= MAX_K:
        raise QueryError(Msg("k 必须在 1 到 {limit} 之间，收到的是 {k}", "k must be between 1 and {limit}, got {k}",
                             limit=MAX_K, k=k))


def _check_text(text: str, what: Msg = _QUERY) -> str:
    text = (text or "").strip()
    if len(text) > MAX_QUERY_CHARS:
        raise QueryError(Msg("{what}有 {n} 个字符，最多接受 {limit} 个（CLIP 反正只读前 77 个词元）",
                             "{what} is {n} characters long; at most {limit} are accepted "
                             "(CLIP reads only the first 77 tokens anyway)", what=what, n=len(text), limit=MAX_QUERY_CHARS))
    return text


def _compound(terms: Sequence[Term]) -> bool:
    """More than one term, or one with a weight other than 1: a query whose plan is worth showing."""
    return len(terms) > 1 or any(t.weight != 1 for t in terms)


def _used(q: SearchQuery, plan: Planned) -> str:
    """What the encoder read, for the user: the query's own text as planned (as it always was), or, for a
    query of weighted terms, all of them written back in the query syntax."""
    return format_terms(plan.terms) if q.terms else plan.text


def _caption_terms(text: str) -> list[str]:
    """Lower-case English words (3+ letters) and Chinese characters of a query, for caption matching."""
    text = (text or "").lower()
    return re.findall(r"[a-z]{3,}", text) + re.findall(r"[\u4e00-\u9fff]", text)


def _caption_match(meta: dict, terms: list[str]) -> float:
    """Fraction of the query's terms found in the image's stored captions (0 without captions)."""
    caption = f"{meta.get('caption_en') or ''} {meta.get('caption_zh') or ''}".lower()
    return sum(t in caption for t in terms) / len(terms) if caption.strip() else 0.0


class _CaptionTracker:
    """Whether any stored image has a caption, so a library without captions never pays for the
    re-rank pool. Each row is looked at once (the first call scans, later ones only rows added
    since); once a caption is seen the answer stays yes (a stale yes only costs the pool)."""

    def __init__(self, library: Library):
        self.library, self._lock = library, threading.Lock()
        self._seen, self._upto, self._version = False, -1, None

    def any(self) -> bool:
        with self._lock:
            if self._seen or self.library.version == self._version:
                return self._seen
            self._version = self.library.version
            ids = self.library.live_ids()
            for rowid in ids[ids > self._upto].tolist():
                try:
                    self._seen = "caption_en" in self.library.entry(rowid).meta
                except KeyError:   # removed meanwhile
                    continue
                if self._seen:
                    break
            self._upto = max(self._upto, int(ids.max()) if len(ids) else -1)
            return self._seen


class Searcher:
    """Runs queries against one library with one encoder and one index (anything with
    `search(queries [Q, D], k) -> (scores, row ids)`: core/library/index.py)."""

    def __init__(self, encoder, library: Library, index=None):
        self.encoder, self.library = encoder, library
        self.index = index or ExactIndex(library, encoder.runtime)
        self._cache = LRU(_TEXT_CACHE)   # text -> [D] embedding
        self._captions = _CaptionTracker(library)

    def embed_text(self, text: str) -> torch.Tensor:
        """[D] embedding of one text, from an LRU cache when asked before."""
        vec = self._cache.get(text)
        if vec is None:
            vec = self.encoder.encode_texts([text])[0]
            self._cache.put(text, vec)
        return vec

    @staticmethod
    def _checked(q: SearchQuery, plan: Planned | None) -> tuple[SearchQuery, Planned]:
        """A query with a plan was checked and planned by the caller (the front door); one without is
        checked here (check_query) and its texts are used as typed."""
        if plan is not None:
            return q, plan
        q = check_query(q)
        return q, Planned(q.text, tuple(q.all_terms()))

    def term_vectors(self, terms: Sequence[Term]) -> torch.Tensor:
        """[T, D] the L2-normalised embedding of each term: a text's (cached), an image's (all images in
        one encoder pass; a path or bytes through core's safe loader), a library image's stored one."""
        images = [t.image if isinstance(t.image, Image.Image) else load_image(t.image if t.path is None else t.path,
                                                                              t.name or None)
                  for t in terms if t.image is not None or t.path is not None]
        encoded = iter(self.encoder.encode_images(images)) if images else iter(())
        rows = []
        for t in terms:
            if t.text is not None:
                rows.append(self.embed_text(t.text))
            elif t.image_id is not None:
                rows.append(self.library.vector(t.image_id))
            else:
                rows.append(next(encoded))
        return torch.stack([r.float().cpu() for r in rows])

    def query_vector(self, q: SearchQuery, plan: Planned | None = None) -> tuple[torch.Tensor, str, str | None]:
        """The combined, normalised query embedding [D]: the weighted sum of its terms' unit embeddings (a
        negative weight subtracts), normalised again; the text the encoder read and the plan's note."""
        q, plan = self._checked(q, plan)
        weights = torch.tensor([t.weight for t in plan.terms], dtype=torch.float32)
        vec = (weights[:, None] * self.term_vectors(plan.terms)).sum(dim=0)
        if vec.norm() < 1e-6:
            raise QueryError(Msg("正向词和排除词相互抵消了；请调整权重或换些词",
                                 "The positive and negative terms cancel out; change the weights or the terms"))
        return F.normalize(vec, dim=-1), _used(q, plan), plan.note

    def search(self, q: SearchQuery, plan: Planned | None = None) -> SearchResult:
        """Hits for a query, best first (see _checked for `plan`); a query of several or weighted terms
        also says its plan (SearchResult.plan)."""
        q, plan = self._checked(q, plan)
        vec, used, note = self.query_vector(q, plan)
        typed = [t.asked or t.text for t in plan.terms if t.text is not None and t.weight > 0]
        subtracts = any(t.weight < 0 for t in plan.terms)
        words = _caption_terms(" ".join(typed)) if q.use_captions and not subtracts and self._captions.any() else []
        pool = self.nearest(vec, max(q.k, _RERANK_POOL) if words else q.k, None if words else q.threshold)
        described = describe_terms(plan.terms) if _compound(plan.terms) else None
        if not words or not any("caption_en" in h.meta for h in pool):
            kept = [h for h in pool if q.threshold is None or h.score >= q.threshold]
            return SearchResult(kept[:q.k], used, note, plan=described, terms=plan.terms)
        scored = sorted(((h.score + CAPTION_WEIGHT * _caption_match(h.meta, words), h) for h in pool),
                        key=lambda t: -t[0])
        hits = [Hit(h.rowid, h.id, h.sha256, h.path, h.name, s, h.meta) for s, h in scored
                if q.threshold is None or s >= q.threshold][:q.k]
        return SearchResult(hits, used, note, plan=described, terms=plan.terms)

    def nearest(self, vec: torch.Tensor, k: int, threshold: float | None = None) -> list[Hit]:
        """Top-k library entries for a normalised query vector [D]."""
        self.library.refresh()   # pick up images another process (the CLI, another app) added
        scores, rowids = self.index.search(vec[None], k)
        hits = []
        for score, rowid in zip(scores[0].tolist(), rowids[0].tolist()):
            if threshold is not None and score < threshold:
                break
            try:
                e = self.library.entry(rowid)
            except KeyError:   # removed since it was scored
                continue
            hits.append(Hit(e.rowid, e.id, e.sha256, e.path, e.name, score, e.meta))
        return hits

    def search_vector(self, vector: torch.Tensor, k: int = 10) -> list[Hit]:
        """Top-k for a raw embedding [D] (normalised here), e.g. one computed by an API client."""
        _check_k(k)
        if tuple(vector.shape) != (self.library.dim,) or not bool(torch.isfinite(vector).all()):
            raise QueryError(Msg("查询向量必须包含 {dim} 个有限数值（本图库的维度），收到的形状是 {shape}",
                                 "A query vector must hold {dim} finite numbers (this library's "
                                 "dimension), got shape {shape}", dim=self.library.dim, shape=tuple(vector.shape)))
        if float(vector.norm()) < 1e-6:
            raise QueryError(Msg("查询向量全为零", "The query vector is all zeros"))
        return self.nearest(F.normalize(vector.float(), dim=-1), k)

    def similar_to(self, entry_id: str, k: int = 10) -> list[Hit]:
        """Image→image search from an image already in the library (no re-encoding)."""
        return self.similar(entry_id, k)[1]

    def similar(self, entry_id: str, k: int = 10) -> tuple[Entry, list[Hit]]:
        """(the library image with this id, its nearest library images); k is checked first."""
        _check_k(k)
        entry = self.library.find(entry_id)
        return entry, self.nearest(self.library.vectors_of(np.array([entry.rowid]))[0], k)

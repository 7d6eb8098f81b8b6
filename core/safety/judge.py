"""Zero-shot judging of embeddings against the unsafe concepts, from the embedding already made.

    judge = ConceptJudge(encoder, load_concepts(), translate=None)
    judge.unjudged                   # concepts this model cannot read (e.g. the mini model: all of them)
    judge.judge(vectors)             # vectors [N, D] L2-normalised -> N Verdicts
    judge.nearest_unsafe(text_vec)   # the concept a query's text embedding is nearest, or None

The rule is clip-front's for violence, with a margin: an image is flagged for concept c when its
cosine similarity to c beats its similarity to every safe counter-prompt by at least `margin`,
and reaches c's own threshold when the list gives one. A concept's embedding is the mean over the
wordings the model can read and a few templates ("a photo of {c}."). A wording the model cannot
read (its tokenizer has no token for a word, or Chinese for an English-only model with no
translation) is not used; a concept with no readable wording is *unjudged*, and the filter says so
rather than guess.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ..language.script import has_cjk
from .concepts import Concept, ConceptList

__all__ = ["ConceptJudge", "Verdict", "DEFAULT_MARGIN", "QUERY_MIN_SIM", "TEMPLATES"]

DEFAULT_MARGIN = 0.02    # cosine points an unsafe concept must beat every safe prompt by (ViT-B/32's image-text
                         # cosines span ~0.15-0.35, so a right caption leads a wrong one by a few points)
QUERY_MIN_SIM = 0.85     # a query's text embedding counts as "about" a concept from this cosine on (text-text
                         # cosines run high: unrelated phrases meet at ~0.6-0.8 in CLIP's text space)
TEMPLATES = {"en": ("a photo of {c}.", "{c}"), "zh": ("{c}的照片", "{c}")}


@dataclass(frozen=True)
class Verdict:
    """What the filter says about one image."""
    flagged: bool
    concept: str | None   # the unsafe concept that scored best ("nudity / 裸体"), None when none is judged
    score: float          # zero-shot: cosine points the concept beats the best safe prompt by; a head: its probability


@dataclass(frozen=True)
class _Prompts:
    unsafe: list[Concept]      # the concepts judged, in the list's order
    unsafe_matrix: torch.Tensor  # [C, D]
    thresholds: torch.Tensor   # [C] (-inf: none)
    safe_matrix: torch.Tensor  # [K, D] (K may be 0)
    unjudged: list[str]        # labels of concepts the model cannot read


class ConceptJudge:
    """Image (and query) embeddings against one concept list, for one encoder. The text side is
    encoded once, on first use (thread-safe)."""

    def __init__(self, encoder, concepts: ConceptList, translate: Callable[[list[str]], list[str] | None] | None = None,
                 margin: float = DEFAULT_MARGIN, query_min: float = QUERY_MIN_SIM):
        self.encoder, self.concepts, self.translate = encoder, concepts, translate
        self.margin, self.query_min = margin, query_min
        self._prompts: _Prompts | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ what the model can read

    def _readable(self, text: str) -> bool:
        if has_cjk(text) and not getattr(self.encoder, "multilingual", False):
            return False
        return not self.encoder.unknown_words([text])

    def _wordings(self, concept: Concept) -> list[str]:
        """The wordings of `concept` this model can read; a Chinese-only concept translated for an
        English-only model when a translator is at hand."""
        readable = [v for v in concept.variants if self._readable(v)]
        if readable or self.translate is None:
            return readable
        chinese = [v for v in concept.variants if has_cjk(v)]
        english = self.translate(chinese) if chinese else None
        return [e for e in (english or []) if e and not has_cjk(e) and self._readable(e)]

    def _encode(self, wordings: list[str]) -> torch.Tensor:
        """[D]: the normalised mean over wordings x templates."""
        prompts = [t.replace("{c}", w) for w in wordings for t in TEMPLATES["zh" if has_cjk(w) else "en"]]
        return F.normalize(self.encoder.encode_texts(prompts).mean(dim=0), dim=-1)

    def _build(self) -> _Prompts:
        safe = [w for w in map(self._wordings, self.concepts.safe) if w]
        judged, rows, thresholds, unjudged = [], [], [], []
        for concept in self.concepts.unsafe:
            wordings = self._wordings(concept)
            if not wordings or (not safe and concept.threshold is None):   # nothing to beat and no floor: no rule
                unjudged.append(concept.label)
                continue
            judged.append(concept)
            rows.append(self._encode(wordings))
            thresholds.append(float("-inf") if concept.threshold is None else concept.threshold)
        dim = self.encoder.dim
        return _Prompts(judged, torch.stack(rows) if rows else torch.empty(0, dim), torch.tensor(thresholds),
                        torch.stack([self._encode(w) for w in safe]) if safe else torch.empty(0, dim), unjudged)

    @property
    def prompts(self) -> _Prompts:
        with self._lock:
            if self._prompts is None:
                self._prompts = self._build()
            return self._prompts

    @property
    def unjudged(self) -> list[str]:
        """Labels of the concepts this model cannot judge ([] = it reads them all)."""
        return self.prompts.unjudged

    @property
    def judged(self) -> int:
        return len(self.prompts.unsafe)

    # ------------------------------------------------------------------ judging

    def margins(self, vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """vectors [N, D] -> (margins [N, C]: similarity to each concept minus the best safe prompt's,
        passes [N, C]: whether the concept's threshold is reached)."""
        p = self.prompts
        vectors = vectors.float()
        sims = vectors @ p.unsafe_matrix.T
        best_safe = (vectors @ p.safe_matrix.T).amax(dim=1) if len(p.safe_matrix) else torch.zeros(len(vectors))
        return sims - best_safe[:, None], sims >= p.thresholds[None, :]

    def judge(self, vectors: torch.Tensor) -> list[Verdict]:
        """vectors [N, D], L2-normalised image embeddings -> one Verdict each (none flagged when no
        concept is judged)."""
        p = self.prompts
        if not len(p.unsafe) or not len(vectors):
            return [Verdict(False, None, 0.0) for _ in range(len(vectors))]
        margins, passes = self.margins(vectors)
        flagged = (margins >= self.margin) & passes
        ranked = torch.where(flagged, margins + 10.0, margins)   # a flagged concept outranks any unflagged one
        best = ranked.argmax(dim=1)
        return [Verdict(bool(flagged[i, c]), p.unsafe[c].label, float(margins[i, c]))
                for i, c in enumerate(best.tolist())]

    def nearest_unsafe(self, text_vector: torch.Tensor) -> str | None:
        """The unsafe concept a query's text embedding [D] is about (nearest of all prompts, by the
        margin, and at least `query_min` alike), or None."""
        p = self.prompts
        if not len(p.unsafe):
            return None
        vector = F.normalize(text_vector.float().reshape(1, -1), dim=-1)
        margins, _ = self.margins(vector)
        sims = (vector @ p.unsafe_matrix.T)[0]
        c = int(margins[0].argmax())
        if margins[0, c] >= self.margin and sims[c] >= self.query_min:
            return p.unsafe[c].label
        return None


"""Protecting a class: what the shared library shows and what a search may ask.

    policy.py    the modes (off | standard | strict) and the one policy the front door applies
    concepts.py  the editable lists: unsafe concepts with safe counter-prompts, the query blocklist
    judge.py     zero-shot scoring of stored embeddings against the concepts (no second model pass)
    head.py      an optional LAION-style classifier head over the embeddings, from the user's file
    review.py    the review queue: images waiting for the teacher, in a side file of the library
    screen.py    what each caller is shown: results and pages without what they may not see

Near-duplicates are the library's own business (core/library/duplicates.py).
"""
from .concepts import ConceptList, load_blocklist, load_concepts
from .head import load_head
from .judge import ConceptJudge, Verdict
from .policy import MODES, REFUSED, SafetyConfig, SafetyPolicy, default_mode, recorded
from .review import Held, ReviewBook

__all__ = ["SafetyConfig", "SafetyPolicy", "MODES", "REFUSED", "default_mode", "recorded", "ConceptList", "load_concepts",
           "load_blocklist", "ConceptJudge", "Verdict", "load_head", "Held", "ReviewBook"]

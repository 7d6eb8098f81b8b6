"""The class's safety policy, applied by the front door (core/workbench.py) for every surface.

    safety = SafetyPolicy(SafetyConfig(mode="standard", shared=True), encoder, library.root)
    safety.hold_for(caller, shas, vectors)    # {sha: Held} of a batch about to be stored
    safety.check_query("...", embed)          # QueryRefused (neutral message) or None
    safety.sees_held(caller)                  # the teacher sees held images, marked; students never
    safety.status(held=3)                     # {"mode": "standard", "filter": "...", "held": 3}

Modes: "off" (nothing is judged or held), "standard" (uploads the filter flags wait in the review
queue, hidden from students; queries about unsafe concepts are refused), "strict" (as standard,
and every upload of a student waits for the teacher's approval). The filter scores the embedding
the library computes anyway (no second model pass): zero-shot against the concept list
(core/safety/judge.py) and, when the user supplies one, a classifier head (core/safety/head.py).
A model that cannot judge the list (the bundled mini model knows only coloured shapes) does not
pretend: `cannot_judge()` says so and, on a shared link, every student's upload waits for review.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..errors import PermissionDenied, QueryRefused, SafetyError
from ..library.duplicates import NEAR_DUPLICATE
from ..library.journal import write_atomic
from ..messages import Msg, join
from .concepts import ConceptList, load_blocklist, load_concepts
from .head import HEAD_THRESHOLD, Head, load_head
from .judge import DEFAULT_MARGIN, ConceptJudge, Verdict
from .review import Held, ReviewBook

__all__ = ["SafetyConfig", "SafetyPolicy", "MODES", "default_mode", "recorded", "REFUSED", "POLICY_NAME"]

log = logging.getLogger(__name__)

MODES = ("off", "standard", "strict")
POLICY_NAME = "safety.json"   # beside the library: the policy the app last served it with (for the command line)
# What a refused query is told: neutral, naming no rule and repeating nothing typed
REFUSED = Msg("这个搜索在这里无法进行，请换一个。", "This search is not available here. Please try another one.")


def default_mode(shared: bool, env: dict | None = None) -> str:
    """CLIP_WB_SAFETY when set, else "standard" for an app others can reach, "off" for a private one."""
    value = (os.environ if env is None else env).get("CLIP_WB_SAFETY", "").strip().lower()
    if value and value not in MODES:
        raise SafetyError(Msg("CLIP_WB_SAFETY={value!r} 无效：应为 {modes} 之一", "CLIP_WB_SAFETY={value!r}: expected one of {modes}",
                              value=value, modes=", ".join(MODES)))
    return value or ("standard" if shared else "off")


@dataclass(frozen=True)
class SafetyConfig:
    mode: str = "off"                  # "off" | "standard" | "strict" (see default_mode)
    shared: bool = False               # others reach the app (--share, --auth, a Space): anonymous visitors
                                       # never review, and search collapses near-duplicates by default
    concepts: str | None = None        # --safety-concepts FILE (None: assets/safety/concepts.txt)
    blocklist: str | None = None       # a query blocklist file (None: assets/safety/blocklist.txt)
    head: str | None = None            # --safety-head FILE: a LAION-style classifier head (None: zero-shot only)
    head_threshold: float = HEAD_THRESHOLD   # the head's probability from which an image is flagged
    margin: float = DEFAULT_MARGIN     # cosine points an unsafe concept must beat every safe prompt by
    near_duplicate: float = NEAR_DUPLICATE   # cosine from which two images are near-duplicates
    collapse: bool | None = None       # search hides near-duplicates of better hits (None: when shared)

    def __post_init__(self):
        if self.mode not in MODES:
            raise SafetyError(Msg("安全模式 {mode!r} 无效：应为 {modes} 之一", "Safety mode {mode!r}: expected one of {modes}",
                                  mode=self.mode, modes=", ".join(MODES)))

    @property
    def collapses(self) -> bool:
        return self.shared if self.collapse is None else self.collapse


def recorded(root) -> SafetyConfig | None:
    """The policy the app last served the library in `root` with (SafetyPolicy.record), or None: the
    command line adds to a class's library under the class's rules."""
    path = Path(root) / POLICY_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return SafetyConfig(**{k: v for k, v in data.items() if k in _RECORDED})
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as e:
        log.warning("ignoring %s: %s", path, e)
        return None


_RECORDED = tuple(f.name for f in fields(SafetyConfig))


class SafetyPolicy:
    """One app's safety policy over one encoder and one library folder."""

    def __init__(self, config: SafetyConfig, encoder, root, translate: Callable[[list[str]], list[str] | None] | None = None):
        self.config, self.encoder = config, encoder
        self.review = ReviewBook(root)
        self.concepts: ConceptList = load_concepts(config.concepts)
        self.blocklist = load_blocklist(config.blocklist)
        self.judge = ConceptJudge(encoder, self.concepts, translate, margin=config.margin)
        self.head: Head | None = load_head(config.head, encoder) if config.head else None

    @property
    def mode(self) -> str:
        return self.config.mode

    def record(self) -> None:
        """Write this policy beside the library (safety.json), so `python -m core index` into the same
        library applies it too (see `recorded`). Files are named by absolute path."""
        data = {k: getattr(self.config, k) for k in _RECORDED}
        data.update({k: str(Path(data[k]).resolve()) for k in ("concepts", "blocklist", "head") if data[k]})
        body = json.dumps(data, ensure_ascii=False, indent=1).encode("utf-8")
        write_atomic(self.review.path.with_name(POLICY_NAME), lambda f: f.write(body))

    @property
    def on(self) -> bool:
        return self.config.mode != "off"

    # ------------------------------------------------------------------ what the filter is

    def cannot_judge(self) -> Msg | None:
        """Why this model cannot judge (some of) the concepts, or None when it reads them all or a
        classifier head judges instead."""
        if self.head is not None or not self.judge.unjudged:
            return None
        missing = self.judge.unjudged
        shown = ", ".join(missing[:5]) + (" …" if len(missing) > 5 else "")
        return Msg("模型 {model} 读不懂 {n} 个不安全概念（{concepts}），无法判断图片是否合适：共享链接上学生的上传都会先等老师查看。"
                   "真正的过滤需要真实的 CLIP 权重，或用 --safety-concepts 给出这个模型认识的概念。",
                   "The model {model} cannot read {n} of the unsafe concepts ({concepts}), so it cannot judge whether "
                   "an image is fit for class: on a shared link every student's upload waits for the teacher. Real "
                   "filtering needs real CLIP weights, or a --safety-concepts list in words this model knows.",
                   model=self.encoder.model_id, n=len(missing), concepts=shown)

    def describe(self) -> Msg:
        """Which filter is active and for which model, in both languages."""
        if not self.on:
            return Msg("关闭", "off")
        parts = []
        if self.judge.judged and not self.judge.unjudged:
            parts.append(Msg("零样本（{list}）", "zero-shot ({list})", list=self.concepts.describe()))
        if self.head is not None:
            parts.append(Msg("分类头 {file}", "classifier head {file}", file=os.path.basename(self.config.head)))
        if not parts:
            return Msg("无：模型 {model} 无法判断这些概念，上传等待老师查看", "none: the model {model} cannot judge the "
                       "concepts, uploads wait for the teacher", model=self.encoder.model_id)
        return Msg("{what}，模型 {model}", "{what} on {model}", what=join(parts, " + "), model=self.encoder.model_id)

    def status(self, held: int) -> dict:
        """What /api/stats and the page say: {"mode", "filter", "held"}."""
        return {"mode": self.mode, "filter": str(self.describe()), "held": held}

    # ------------------------------------------------------------------ who sees and who waits

    def sees_held(self, caller) -> bool:
        """The teacher (an admin who logged in, or anyone on a private app, the command line) sees
        held images, marked; a student or an anonymous visitor of a shared link never does."""
        return caller is None or (caller.admin and (caller.named or not self.config.shared))

    def require_reviewer(self, caller) -> None:
        """PermissionDenied unless the caller sees held images (see sees_held): the teacher, logged in."""
        if not self.sees_held(caller):
            raise PermissionDenied(Msg("只有登录的教师（--admin 账号）可以查看等待审核的图片。",
                                       "Only the teacher, logged in (an --admin login), may see the images waiting "
                                       "for review."))

    def waiting(self, stored: Callable[[str], bool]) -> dict[str, Held]:
        """{sha256: Held} of the stored images waiting for review (`stored(sha)`: whether the library holds it).
        Images held while the policy was on stay held when it is turned off, until the teacher decides."""
        return {sha: h for sha, h in self.review.held().items() if stored(sha)}

    def hidden(self, caller, stored: Callable[[str], bool]) -> set[str]:
        """The hashes this caller may not see: every image waiting, for whoever does not review."""
        return set() if self.sees_held(caller) else set(self.waiting(stored))

    def verdicts(self, vectors: torch.Tensor) -> list[Verdict]:
        """The filter's verdict on each image embedding [N, D]: the head's when it flags, else zero-shot's."""
        verdicts = self.judge.judge(vectors)
        if self.head is None:
            return verdicts
        probs = self.head.probability(vectors).tolist()
        return [Verdict(True, Msg("分类头", "classifier head"), p) if p >= self.config.head_threshold else v
                for v, p in zip(verdicts, probs)]

    def hold_for(self, caller, shas: Sequence[str], vectors: torch.Tensor) -> dict[str, Held]:
        """Which images of a batch about to be stored wait for review, and why: flagged ones for
        anyone; in strict mode, or when the model cannot judge, every one of a caller who does not
        review."""
        if not self.on or not len(shas):
            return {}
        who = getattr(caller, "key", "local") if caller is not None else "local"
        trusted = self.sees_held(caller)
        held = {}
        for sha, verdict in zip(shas, self.verdicts(vectors)):
            if verdict.flagged:
                held[sha] = Held("flagged", str(verdict.concept), who)
            elif not trusted and self.mode == "strict":
                held[sha] = Held("strict", None, who)
            elif not trusted and self.cannot_judge() is not None:
                held[sha] = Held("unjudged", None, who)
        return held

    # ------------------------------------------------------------------ queries

    def check_query(self, typed: str, planned: str | None = None,
                    embed: Callable[[str], torch.Tensor] | None = None) -> None:
        """QueryRefused (the neutral REFUSED message) for a query whose typed or planned text (what the
        encoder reads: a Chinese query translated for an English-only model) has a blocked word, or
        whose planned text's embedding (`embed(text)` -> [D]) is nearest an unsafe concept; None otherwise."""
        if not self.on:
            return
        planned = planned or typed
        word = self.blocklist.blocks(typed) or self.blocklist.blocks(planned)
        concept = None
        if not word and planned and embed is not None and self.judge.judged:
            concept = self.judge.nearest_unsafe(embed(planned))
        if word or concept:
            log.info("query refused (%s)", f"blocked word {word!r}" if word else f"near {concept!r}")
            raise QueryRefused(REFUSED)

"""Published numbers to show beside measured ones. Data, not code: add a row per result.

A row is comparable to a run when model, task and dataset match; the `setting` says the
rest (templates, split) so a reader sees at once whether the comparison is like for like.
"""
from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Reference", "REFERENCES", "references_for"]


@dataclass(frozen=True)
class Reference:
    model: str                   # model id as core.encoders gives it (OpenAI names: "ViT-B/32")
    task: str                    # "zeroshot" | "retrieval"
    dataset: str                 # "imagenet1k" | "flickr30k" | "coco"
    setting: str                 # what else defines the number (templates, split)
    source: str                  # where the number is published
    metrics: dict = field(default_factory=dict)  # same keys as the measured report ("top1", "t2i_R@1", "s_per_image")

    def label(self) -> str:
        return f"{self.model}, {self.setting} ({self.source})"


_OC = "open_clip results"
_REPORT = "CLIP report in the user's sources"
_IN80 = "ImageNet val, 80-template ensemble"
_IN1 = "ImageNet val, one prompt"

REFERENCES: tuple[Reference, ...] = (
    Reference("RN50", "zeroshot", "imagenet1k", _IN80, _OC, {"top1": 59.8}),
    Reference("ViT-B/32", "zeroshot", "imagenet1k", _IN80, _OC, {"top1": 63.3}),
    Reference("ViT-B/16", "zeroshot", "imagenet1k", _IN80, _OC, {"top1": 68.3}),
    Reference("ViT-L/14", "zeroshot", "imagenet1k", _IN80, _OC, {"top1": 75.5}),
    # s_per_image was measured on the report's own hardware: compare the order of magnitude only
    Reference("ViT-B/32", "zeroshot", "imagenet1k", _IN1, _REPORT, {"top1": 55.7, "top5": 82.7, "s_per_image": 0.20}),
    Reference("RN50x64", "zeroshot", "imagenet1k", _IN1, _REPORT, {"top1": 66.0, "top5": 88.5, "s_per_image": 0.57}),
    Reference("ViT-B/32", "retrieval", "flickr30k", "Flickr30k 1k test (Karpathy)", _OC,
              {"t2i_R@1": 58.8, "t2i_R@5": 83.6, "t2i_R@10": 90.0}),
    Reference("ViT-B/32", "retrieval", "coco", "COCO 5k test (Karpathy)", _OC,
              {"t2i_R@1": 30.4, "t2i_R@5": 55.9, "t2i_R@10": 66.9}),
)


def references_for(model_id: str, task: str, dataset: str | None) -> list[Reference]:
    """Rows for this model, task and dataset (dataset None: no row can be comparable)."""
    return [r for r in REFERENCES if r.model == model_id and r.task == task and r.dataset == dataset]

"""What a new user is offered first (example images, default labels, a default search), per model.

    s = starters(wb.encoder.domain)     # "shapes" for the bundled mini model, None for an open-world CLIP
    s.images, s.labels, s.query

A narrow model (the bundled mini-CLIP knows only coloured shapes) gets examples it can answer;
showing it a cat photo and the label "cat" only produces a confident guess.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .settings import ASSETS_DIR

__all__ = ["Starters", "starters"]

MAX_EXAMPLES = 12   # one page of examples in the classify tab


@dataclass(frozen=True)
class Starters:
    images: list[Path]   # example images (served by the app: assets/samples, assets/shapes)
    labels: str          # default zero-shot labels, comma separated, English and Chinese
    query: str           # default text search ("" = none)


def starters(domain: str | None) -> Starters:
    """The starter set for a model trained on `domain` (None or unknown: everyday photos)."""
    if domain == "shapes":
        return Starters(_images(ASSETS_DIR / "shapes", "*.png"),
                        "red circle, blue star, green square, yellow triangle, 红色圆形, 蓝色五角星", "blue star")
    return Starters(_images(ASSETS_DIR / "samples", "*.jpg"), "cat, dog, bird, car, 猫, 汽车", "")


def _images(folder: Path, pattern: str) -> list[Path]:
    return sorted(folder.glob(pattern))[:MAX_EXAMPLES]

"""Image-caption pairs from a CSV file: one `path,caption` per row (the user's own photos).

    data = read_caption_csv(Path("pairs.csv"))    # -> CaptionSet, split "all"

Rules: an optional header row (`path,caption` or `image,caption`); paths relative to the
CSV's folder; an image may have several rows (several captions); captions in any language.
Blank lines and lines starting with `#` are skipped.
"""
from __future__ import annotations

import csv
from pathlib import Path

from ..errors import DatasetError
from .datasets import CaptionSet

__all__ = ["read_caption_csv"]

_HEADERS = {("path", "caption"), ("image", "caption"), ("file", "caption"), ("filename", "caption")}


def read_caption_csv(path: Path) -> CaptionSet:
    """A `path,caption` CSV -> CaptionSet (images in first-seen order). DatasetError when the file
    is unreadable, a row is malformed, an image is missing, or nothing is left."""
    path = Path(path)
    try:
        rows = list(csv.reader(path.read_text(encoding="utf-8-sig").splitlines()))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DatasetError(f"Cannot read the caption CSV {path}: {e}") from None
    images: list[Path] = []
    index: dict[Path, int] = {}
    captions, t2i = [], []
    for n, row in enumerate(rows, 1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        if n == 1 and tuple(c.strip().lower() for c in row[:2]) in _HEADERS:
            continue
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise DatasetError(f"{path}, line {n}: expected `path,caption`, got {','.join(row)[:80]!r}")
        image = (path.parent / row[0].strip()).resolve()
        if not image.is_file():
            raise DatasetError(f"{path}, line {n}: image {row[0].strip()!r} not found (paths are relative to the CSV)")
        if image not in index:
            index[image] = len(images)
            images.append(image)
        captions.append(",".join(row[1:]).strip())
        t2i.append(index[image])
    if len(images) < 3:
        raise DatasetError(f"{path} has {len(images)} images; at least 3 are needed (train / validation / test)")
    return CaptionSet(images, captions, t2i, "csv", "all")

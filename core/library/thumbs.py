"""Gallery thumbnails: derived data beside the stored images, made at ingest and again on demand.

    thumbs/ab/<sha256>.jpg   at most THUMB_SIZE px on the long side, JPEG

Safe to lose: `thumb_for` writes a missing one from the stored image.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

from PIL import Image

from ..errors import ImageError
from ..images import load_image

__all__ = ["THUMB_SIZE", "thumbnail", "thumb_path", "write_thumbnail", "thumb_for"]

THUMB_SIZE = 256   # px; a gallery cell on a classroom projector, ~15 KB each


def thumbnail(img: Image.Image, size: int = THUMB_SIZE) -> Image.Image:
    """A copy no larger than size x size."""
    img = img.copy()
    img.thumbnail((size, size), Image.Resampling.BICUBIC)
    return img


def thumb_path(root: Path, sha256: str) -> Path:
    return Path(root) / "thumbs" / sha256[:2] / f"{sha256}.jpg"


def write_thumbnail(root: Path, sha256: str, image: Image.Image) -> Path:
    """Write (atomically) the thumbnail of a stored image."""
    path = thumb_path(root, sha256)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")   # unique per thread
    try:
        thumbnail(image).save(tmp, "JPEG", quality=85)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def thumb_for(root: Path, sha256: str, image_path: Path, name: str) -> Path:
    """The thumbnail of a stored image, written from the image when missing; the image itself
    when it cannot be decoded (the gallery then shows it, or its broken icon)."""
    path = thumb_path(root, sha256)
    if path.is_file():
        return path
    try:
        return write_thumbnail(root, sha256, load_image(image_path, name))
    except (ImageError, OSError):
        return image_path

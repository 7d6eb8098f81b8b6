"""Shared fixtures for the core tests: a tiny CLIP loaded through the real loader, sample images."""
from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from core.models import load_encoder
from core.settings import ASSETS_DIR, pick_runtime
from tiny_models import make_tiny_clip_file

SAMPLES = ASSETS_DIR / "samples"


@pytest.fixture(scope="session")
def tiny_clip_path(tmp_path_factory) -> Path:
    return make_tiny_clip_file(tmp_path_factory.mktemp("models") / "tiny_clip.pt")


@pytest.fixture(scope="session")
def encoder(tiny_clip_path):
    return load_encoder(str(tiny_clip_path), pick_runtime("cpu"))


def png_bytes(color=(255, 0, 0), size=(40, 30), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, "PNG")
    return buf.getvalue()


def distinct_pngs(n: int, seed: int = 0) -> list[bytes]:
    """n different small PNGs (different colours), deterministic."""
    out = []
    for i in range(n):
        j = i + seed * 1000
        out.append(png_bytes(((j * 37) % 256, (j * 91) % 256, (j * 53 + j // 256) % 256), size=(16 + j % 7, 16)))
    return out

"""The encoder interface every backend implements (see core/models/registry.py for the backends).

    enc.encode_images([pil, ...])     # -> float32 [N, D], L2-normalised, on the CPU
    enc.encode_texts(["a cat", ...])  # -> float32 [N, D], L2-normalised, on the CPU
    enc.encode_pixels(pixels)         # preprocessed [B, 3, H, W] -> float32 [B, D]
    enc.pixel_recipe                  # PixelRecipe: preprocess as tensor ops (core/models/pixels.py), or None

`runtime.engine` says what runs the towers: eager torch, or ONNX Runtime (core/models/onnx_runtime.py)
behind the same interface.
"""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from ..messages import error_message
from ..settings import Runtime
from .pixels import PixelRecipe

__all__ = ["Encoder", "error_message"]   # error_message lives in core.messages; re-exported for the encoders

_PREPROCESS_WORKERS = min(8, os.cpu_count() or 1)


class Encoder(ABC):
    """A dual encoder. Subclasses set the attributes and implement the three hooks."""
    model_id: str        # canonical id, recorded in every feature file made with it
    dim: int             # embedding dimension D
    runtime: Runtime
    logit_scale: float = 100.0  # cosine similarity -> logits, as the model was trained
    multilingual: bool = False  # True when the text tower reads Chinese natively
    batch_size: int = 64
    runtime_note: str | None = None  # why the runtime asked for is not the one used (shown to the user)
    source_note: str | None = None   # where the weights came from when not the usual place (shown to the user)
    image_size: int | None = None    # square input side of the image tower, when known (JPEG draft decoding)
    domain: str | None = None        # what a narrow model was trained on ("shapes"); None = open-world
    pixel_recipe: PixelRecipe | None = None  # `preprocess` as tensor ops, for decoding JPEGs on the device; None = PIL only

    def unknown_words(self, texts: Sequence[str]) -> list[str]:
        """Words in `texts` the text tower has no token for, in first-seen order ([] = none, or
        unknown: subword tokenizers read every word). A narrow model's guess for them is noise."""
        return []

    @abstractmethod
    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """RGB PIL image -> float tensor [3, H, W] ready for the image tower."""

    @abstractmethod
    def _image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels [B, 3, H, W] on device/dtype -> unnormalised features [B, D]."""

    @abstractmethod
    def _text_features(self, texts: list[str]) -> torch.Tensor:
        """texts -> unnormalised features [B, D]."""

    @torch.inference_mode()
    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Preprocessed pixels [B, 3, H, W] -> normalised float32 [B, D] on the CPU."""
        pixels = pixels.to(self.runtime.device, self.runtime.dtype, non_blocking=True)
        return F.normalize(self._image_features(pixels).float(), dim=-1).cpu()

    def encode_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """RGB PIL images -> normalised float32 [N, D] on the CPU. Preprocessing runs in threads
        so the next batch is prepared while the current one is encoded."""
        if not images:
            return torch.empty(0, self.dim)
        chunks = [images[i:i + self.batch_size] for i in range(0, len(images), self.batch_size)]
        with ThreadPoolExecutor(_PREPROCESS_WORKERS) as pool:
            batches = (torch.stack(list(pool.map(self.preprocess, chunk))) for chunk in chunks)
            return torch.cat([self.encode_pixels(b) for b in batches])

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Strings -> normalised float32 [N, D] on the CPU."""
        if not texts:
            return torch.empty(0, self.dim)
        out = [self._text_features(list(texts[i:i + self.batch_size])) for i in range(0, len(texts), self.batch_size)]
        return F.normalize(torch.cat(out).float(), dim=-1).cpu()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model_id!r}, dim={self.dim}, {self.runtime.describe()})"

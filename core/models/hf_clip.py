"""Hugging Face dual encoders (CLIP, ChineseCLIP, AltCLIP, SigLIP) behind the `Encoder` interface;
loading goes through core/models/hf.py (cache, HF_ENDPOINT, HF_HUB_OFFLINE, clear errors)."""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import UnknownModelError
from ..messages import Msg
from ..settings import Runtime
from .base import Encoder
from .hf import load_pretrained

__all__ = ["HFEncoder", "load_hf"]


class HFEncoder(Encoder):
    """A transformers dual encoder with get_image_features / get_text_features."""

    def __init__(self, model, processor, model_id: str, runtime: Runtime):
        self.model = model.to(runtime.device, runtime.dtype).eval()
        self.processor, self.model_id, self.runtime = processor, model_id, runtime
        cfg = model.config
        self.dim = int(getattr(cfg, "projection_dim", None) or cfg.text_config.hidden_size)
        scale = getattr(model, "logit_scale", None)
        self.logit_scale = float(scale.detach().exp()) if scale is not None else 100.0
        kind = cfg.model_type
        self.multilingual = kind in ("chinese_clip", "altclip") or "multilingual" in model_id.lower()
        self._pad = "max_length" if kind.startswith("siglip") else True  # SigLIP was trained on max-length padding
        self._max_len = _text_max_len(processor.tokenizer, cfg)
        self.dim = int(self._text_features(["probe"]).shape[-1])

    def preprocess(self, image):
        return self.processor.image_processor(images=image, return_tensors="pt")["pixel_values"][0]

    def _image_features(self, pixels):
        return _as_tensor(self.model.get_image_features(pixel_values=pixels))

    def _text_features(self, texts):
        batch = self.processor.tokenizer(texts, padding=self._pad, truncation=True,
                                         max_length=self._max_len, return_tensors="pt")
        batch = {k: v.to(self.runtime.device) for k, v in batch.items()}
        return _as_tensor(self.model.get_text_features(**batch))


def _text_max_len(tokenizer, config) -> int:
    """Longest token sequence the text tower accepts: the tokenizer's model_max_length when it
    is set (transformers puts a huge sentinel, int(1e30), there when a tokenizer_config.json
    has none), the text model's max_position_embeddings when known, and never over 512."""
    caps = [512]
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and 0 < tok_max < 1_000_000:
        caps.append(tok_max)
    positions = getattr(getattr(config, "text_config", None), "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        caps.append(positions)
    return min(caps)


def _as_tensor(out) -> torch.Tensor:
    """transformers 5 may return a ModelOutput where 4.x returned the projected tensor."""
    if isinstance(out, torch.Tensor):
        return out
    return out.pooler_output


def load_hf(name: str, runtime: Runtime, cache: Path, offline: bool) -> HFEncoder:
    from transformers import AutoModel, AutoProcessor

    model, processor = load_pretrained(f"CLIP-style model {name!r}", name,
                                       [AutoModel.from_pretrained, AutoProcessor.from_pretrained], cache, offline)
    if not hasattr(model, "get_image_features"):
        raise UnknownModelError(Msg("{name} 是 {kind}，不是 CLIP 式的双塔编码器",
                                    "{name} is a {kind}, not a CLIP-style dual encoder",
                                    name=name, kind=type(model).__name__))
    model_id = f"hf-local:{Path(name).name}" if Path(name).is_dir() else f"hf:{name}"
    return HFEncoder(model, processor, model_id, runtime)

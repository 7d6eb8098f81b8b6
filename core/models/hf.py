"""Loading Hugging Face models: one place for the cache, HF_ENDPOINT / HF_HUB_OFFLINE, and the
error that says where we looked and what to do. Used by the CLIP encoders, the captioner and
the translator.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..errors import ModelUnavailableError, UnknownModelError
from ..settings import Runtime, default_paths
from .base import Encoder

__all__ = ["hub_kwargs", "load_pretrained", "model_type", "is_hub_id", "LazyLoad", "HFEncoder", "load_hf"]


def hub_kwargs(source: str, cache: Path | None, offline: bool) -> dict[str, Any]:
    """from_pretrained keyword arguments: project cache for hub ids, no network when offline."""
    kwargs: dict[str, Any] = {}
    if not Path(source).is_dir():
        kwargs["cache_dir"] = str(Path(cache or default_paths().cache) / "hf")
    if offline or os.environ.get("HF_HUB_OFFLINE") == "1":
        kwargs["local_files_only"] = True
    return kwargs


def load_pretrained(what: str, source: str, loaders: Sequence[Callable[..., Any]],
                    cache: Path | None, offline: bool) -> list[Any]:
    """Call each `loader(source, **hub_kwargs)` (from_pretrained-like); any failure to find the
    files becomes a ModelUnavailableError that says where we looked and what to do.
    `what` names the model for that message, e.g. "captioner 'vit-gpt2' (nlpconnect/...)"."""
    kwargs = hub_kwargs(source, cache, offline)
    try:
        return [load(source, **kwargs) for load in loaders]
    except (OSError, ValueError, KeyError) as e:  # missing/corrupt files, no network, no cache entry
        if Path(source).is_dir():
            where = f"the local directory {source}"
        else:
            endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
            where = f"the Hugging Face hub ({endpoint}) and the cache {kwargs['cache_dir']}"
            if "local_files_only" in kwargs:
                where += " (offline mode: cache only)"
        first = (str(e).strip().splitlines() or [type(e).__name__])[0].rstrip(".")
        raise ModelUnavailableError(
            f"Could not load the {what} from {where}: {first}. To supply it: pass a local "
            "directory saved with save_pretrained(), set HF_ENDPOINT to a mirror (e.g. "
            "https://hf-mirror.com), or run once online to fill the cache.") from None


def model_type(source: str, cache: Path | None, offline: bool, what: str) -> str:
    """config.json's model_type of a local directory or hub id, e.g. "blip", "m2m_100"."""
    from transformers import AutoConfig
    return load_pretrained(what, source, [AutoConfig.from_pretrained], cache, offline)[0].model_type


def is_hub_id(name: str) -> bool:
    return name.count("/") == 1 and not name.startswith((".", "/", "~")) and not Path(name).exists()


class LazyLoad:
    """A value built once on first use, under a lock; a failure is remembered and re-raised
    (an unreachable hub costs ~50 s of retries, which must not be paid on every request)."""

    def __init__(self, build: Callable[[], Any]):
        self._build, self._lock = build, threading.Lock()
        self._value: Any = None
        self._error: ModelUnavailableError | UnknownModelError | None = None

    def get(self) -> Any:
        if self._value is None:
            with self._lock:
                if self._value is None and self._error is None:
                    try:
                        self._value = self._build()
                    except (ModelUnavailableError, UnknownModelError) as e:   # both final: never retried
                        self._error = e
                if self._error is not None:
                    raise self._error
        return self._value

    @property
    def loaded(self) -> bool:
        return self._value is not None


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
        raise UnknownModelError(f"{name} is a {type(model).__name__}, not a CLIP-style dual encoder")
    model_id = f"hf-local:{Path(name).name}" if Path(name).is_dir() else f"hf:{name}"
    return HFEncoder(model, processor, model_id, runtime)

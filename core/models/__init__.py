"""Encoders: one interface (`Encoder`), a registry of backends (OpenAI clip, Hugging Face, mini)."""
from .base import Encoder
from .registry import BUNDLED_MINI, MODELS, available_models, load_encoder, load_encoder_with_fallback, resolve

__all__ = ["Encoder", "load_encoder", "load_encoder_with_fallback", "available_models", "resolve", "MODELS",
           "BUNDLED_MINI"]

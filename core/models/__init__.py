"""Encoders: one interface (`Encoder`), a registry of backends (OpenAI clip, Hugging Face, OpenCLIP, mini),
runtimes (torch, ONNX Runtime: core/models/onnx_runtime.py)."""
from ..lazy import lazy_attributes

__all__ = ["Encoder", "load_encoder", "load_encoder_with_fallback", "available_models", "resolve", "MODELS",
           "BUNDLED_MINI"]

_LAZY = {"Encoder": ".base", **{n: ".registry" for n in __all__ if n != "Encoder"}}

__getattr__ = lazy_attributes(__name__, _LAZY)

"""Encoders: one interface (`Encoder`), a registry of backends (OpenAI clip, Hugging Face, mini),
runtimes (torch, ONNX Runtime: core/models/onnx_runtime.py)."""
from importlib import import_module

__all__ = ["Encoder", "load_encoder", "load_encoder_with_fallback", "available_models", "resolve", "MODELS",
           "BUNDLED_MINI"]

_LAZY = {"Encoder": ".base", **{n: ".registry" for n in __all__ if n != "Encoder"}}


def __getattr__(name: str):
    """Public names import their module on first use (PEP 562): importing this package for one
    light module (e.g. from `python -m core --help`) does not pull in torch."""
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Paths, environment variables, and the one place where device and dtype are chosen.

Every other module receives a `Runtime` instead of deciding for itself; no other
module in the project names a CUDA device.

Environment variables (all optional):

    CLIP_WB_LIBRARY      default library directory        (./library)
    CLIP_WB_CACHE        model weights cache              (~/.cache/clip-workbench)
    CLIP_WB_DEVICE       "auto" | "cpu" | "cuda" | "cuda:N" (auto)
    CLIP_WB_MODEL        default model name               (ViT-B/32)
    HF_ENDPOINT          Hugging Face mirror, read by huggingface_hub itself
    HF_HUB_OFFLINE       "1" to never touch the network for Hugging Face models
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["Runtime", "pick_runtime", "Paths", "default_paths", "DEFAULT_MODEL", "PROJECT_ROOT", "ASSETS_DIR"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ASSETS_DIR = PROJECT_ROOT / "assets"
DEFAULT_MODEL = os.environ.get("CLIP_WB_MODEL", "ViT-B/32")


@dataclass(frozen=True)
class Runtime:
    """Where tensors live and in which precision models run."""
    device: torch.device  # torch.device("cpu") or a CUDA device
    dtype: torch.dtype    # float16 on CUDA (CLIP's own choice, ~10x faster), float32 on CPU (fp16 on CPU is slow)

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def describe(self) -> str:
        if self.is_cuda:
            return f"{torch.cuda.get_device_name(self.device)} ({self.device}, {str(self.dtype).replace('torch.', '')})"
        return f"CPU ({torch.get_num_threads()} threads, float32)"


def pick_runtime(device: str | None = None) -> Runtime:
    """Choose device and dtype once. `device` is "auto" (default), "cpu", "cuda" or "cuda:N"."""
    device = (device or os.environ.get("CLIP_WB_DEVICE") or "auto").strip().lower()
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"Device {device!r} requested but CUDA is not available; use --device cpu or auto")
        return Runtime(torch.device(device), torch.float16)
    if device != "cpu":
        raise ValueError(f"Unknown device {device!r}; expected auto, cpu, cuda or cuda:N")
    return Runtime(torch.device("cpu"), torch.float32)


@dataclass(frozen=True)
class Paths:
    library: Path  # the growing image library (images + features_library.pth)
    cache: Path    # downloaded model weights


def default_paths() -> Paths:
    library = Path(os.environ.get("CLIP_WB_LIBRARY", PROJECT_ROOT / "library"))
    cache = Path(os.environ.get("CLIP_WB_CACHE", Path.home() / ".cache" / "clip-workbench"))
    return Paths(library=library, cache=cache)

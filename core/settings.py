"""Paths, environment variables, and the one place where device and dtype are chosen.

Every other module receives a `Runtime` instead of deciding for itself; no other
module in the project names a CUDA device.

Environment variables (all optional):

    CLIP_WB_LIBRARY      default library directory        (./library; /data/library on a Space with a persistent disk)
    CLIP_WB_CACHE        model weights cache              (~/.cache/clip-workbench; /data/cache on such a Space)
    CLIP_WB_PERSISTENT_ROOT  where a Hugging Face Space mounts its persistent disk (/data); used when SPACE_ID
                         is set and it is a writable directory (tests point it at a temporary folder)
    CLIP_WB_DEVICE       "auto" | "cpu" | "cuda" | "cuda:N" (auto)
    CLIP_WB_RUNTIME      "auto" | "torch" | "onnx" | "onnx-int8": what runs the towers in the
                         app and the CLI (auto); the Python API's default is torch
    CLIP_WB_MODEL        default model name               (ViT-B/32)
    SPACES_ZERO_GPU      set by a Hugging Face ZeroGPU Space (see Runtime.zero_gpu, core/hosting/zerogpu.py)
    HF_ENDPOINT          Hugging Face mirror, read by huggingface_hub itself
    HF_HUB_OFFLINE       "1" to never touch the network for Hugging Face models
"""
from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .messages import Msg

if TYPE_CHECKING:   # torch is imported where a Runtime is made: `python -m core --help` never pays for it
    import torch

__all__ = ["Runtime", "pick_runtime", "no_cuda", "onnx_not_on_cuda", "on_zero_gpu", "ZERO_GPU_ENV", "Paths", "default_paths", "DEFAULT_MODEL", "DEFAULT_RUNTIME", "ENGINES",
           "RUNTIME_CHOICES", "PROJECT_ROOT", "ASSETS_DIR"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ASSETS_DIR = PROJECT_ROOT / "assets"
DEFAULT_MODEL = os.environ.get("CLIP_WB_MODEL", "ViT-B/32")
ENGINES = ("torch", "onnx", "onnx-int8")          # what runs the encoder towers (see Runtime.engine)
RUNTIME_CHOICES = ("auto",) + ENGINES             # --runtime on demo.py and every encoding CLI command
DEFAULT_RUNTIME = os.environ.get("CLIP_WB_RUNTIME", "auto")   # the app's and the CLI's default
ZERO_GPU_ENV = "SPACES_ZERO_GPU"                  # set (not 0/false) on a ZeroGPU Space


@dataclass(frozen=True)
class Runtime:
    """Where tensors live and in which precision models run."""
    device: torch.device  # torch.device("cpu") or a CUDA device
    dtype: torch.dtype    # float16 on CUDA (CLIP's own choice, ~10x faster), float32 on CPU (fp16 on CPU is slow)
    engine: str = "torch"  # "torch" (eager), "onnx" (ONNX Runtime fp32, CPU: text 2.5x, images ~1.05x eager's speed),
                           # "onnx-int8" (opt-in, checked against fp32 on the user's library before use)
    engine_auto: bool = False  # the engine was picked by "auto" (a backend without ONNX then falls back quietly)
    zero_gpu: bool = False     # a ZeroGPU Space: CUDA exists only inside model calls (core/hosting/zerogpu.py), so
                               # work outside them (an exact scan, live training) runs on the CPU in float32

    @property
    def resident(self) -> bool:
        """True when tensors may live on the CUDA device between model calls (CUDA, not ZeroGPU)."""
        return self.is_cuda and not self.zero_gpu

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def describe(self) -> Msg:
        """e.g. "CPU (2 threads, float32, ONNX Runtime)"; a Msg, so the app says it in Chinese too."""
        import torch
        if self.is_cuda:
            return Msg("{gpu}（{device}，{dtype} 精度）", "{gpu} ({device}, {dtype})",
                       gpu=torch.cuda.get_device_name(self.device), device=str(self.device),
                       dtype=str(self.dtype).replace("torch.", ""))
        threads = torch.get_num_threads()
        if self.engine == "torch":
            return Msg("CPU（{threads} 线程，float32）", "CPU ({threads} threads, float32)", threads=threads)
        return Msg("CPU（{threads} 线程，float32，{engine}）", "CPU ({threads} threads, float32, {engine})",
                   threads=threads, engine="ONNX Runtime int8" if self.engine == "onnx-int8" else "ONNX Runtime")


def pick_runtime(device: str | None = None, runtime: str | None = None) -> Runtime:
    """Choose device, dtype and engine once. `device` is "auto" (default), "cpu", "cuda" or "cuda:N";
    `runtime` is "torch" (default), "onnx", "onnx-int8" or "auto": ONNX Runtime fp32 on the CPU
    (faster there: benchmarks/bench_runtimes.py), torch + fp16 on CUDA."""
    import torch
    device = (device or os.environ.get("CLIP_WB_DEVICE") or "auto").strip().lower()
    engine = (runtime or "torch").strip().lower()
    if engine not in RUNTIME_CHOICES:
        raise ValueError(Msg("未知的运行时 {runtime!r}；可选值：{choices}",
                             "Unknown runtime {runtime!r}; expected one of {choices}",
                             runtime=runtime, choices=", ".join(RUNTIME_CHOICES)))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(no_cuda(device))
        if engine.startswith("onnx"):
            raise ValueError(onnx_not_on_cuda(engine))
        return Runtime(torch.device(device), torch.float16, zero_gpu=on_zero_gpu())
    if device != "cpu":
        raise ValueError(Msg("未知设备 {device!r}；可选 auto、cpu、cuda 或 cuda:N",
                             "Unknown device {device!r}; expected auto, cpu, cuda or cuda:N", device=device))
    auto = engine == "auto"
    if auto:
        engine = "onnx" if importlib.util.find_spec("onnxruntime") else "torch"
    return Runtime(torch.device("cpu"), torch.float32, engine, auto)


def no_cuda(device: str) -> Msg:
    """Why `device` cannot be had: CUDA is not there (here, or on a Ray cluster: core/scale/ray_job.py)."""
    return Msg("请求了设备 {device!r}，但 CUDA 不可用；请改用 --device cpu 或 auto",
               "Device {device!r} requested but CUDA is not available; use --device cpu or auto", device=device)


def onnx_not_on_cuda(engine: str) -> Msg:
    return Msg("--runtime {engine} 只在 CPU 上运行；在 CUDA 上请用 --runtime torch 或 auto（fp16）",
               "--runtime {engine} runs on the CPU; on CUDA use --runtime torch or auto (fp16)", engine=engine)


def on_zero_gpu() -> bool:
    """On a ZeroGPU Space: SPACES_ZERO_GPU set (not 0/false) and `spaces` importable. There torch shows a
    CUDA device once core/hosting/zerogpu.py's install() imported `spaces`, but it is real only inside
    model calls."""
    flag = os.environ.get(ZERO_GPU_ENV, "").strip().lower()
    if flag in ("", "0", "false", "no"):
        return False
    try:
        return importlib.util.find_spec("spaces") is not None
    except ValueError:   # imported already, without a spec (e.g. made in memory)
        return "spaces" in sys.modules


@dataclass(frozen=True)
class Paths:
    library: Path  # the growing image library (images + features_library.pth)
    cache: Path    # downloaded model weights


def persistent_root() -> Path | None:
    """The persistent disk of a Hugging Face Space (SPACE_ID set): CLIP_WB_PERSISTENT_ROOT (default /data)
    when it is a writable directory; None elsewhere, or on a Space without one (its disk is ephemeral)."""
    if not os.environ.get("SPACE_ID"):
        return None
    root = Path(os.environ.get("CLIP_WB_PERSISTENT_ROOT") or "/data")
    return root if root.is_dir() and os.access(root, os.W_OK | os.X_OK) else None


def default_paths() -> Paths:
    """CLIP_WB_LIBRARY / CLIP_WB_CACHE when set; else, on a Space with a persistent disk, /data/library and
    /data/cache (a restart keeps the class's images and the downloaded weights); else ./library and
    ~/.cache/clip-workbench."""
    disk = persistent_root()
    library = Path(os.environ.get("CLIP_WB_LIBRARY") or (disk / "library" if disk else PROJECT_ROOT / "library"))
    cache = Path(os.environ.get("CLIP_WB_CACHE")
                 or (disk / "cache" if disk else Path.home() / ".cache" / "clip-workbench"))
    return Paths(library=library, cache=cache)

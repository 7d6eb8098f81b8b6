"""Model names -> ready encoders, through a registry of backends.

    enc = load_encoder("ViT-B/32")                 # OpenAI CLIP, downloaded once into the cache
    enc = load_encoder("chinese-clip", "cuda")     # a named Hugging Face model
    enc = load_encoder("hf:OFA-Sys/chinese-clip-vit-base-patch16")
    enc = load_encoder("/models/my-finetune.pt")   # a local checkpoint file or save_pretrained folder
    enc = load_encoder("open_clip:ViT-B-32/laion2b_s34b_b79k")   # OpenCLIP: ARCH/TAG, ARCH/FILE, hf-hub:ORG/NAME
    enc = load_encoder("ViT-B/32", runtime="onnx") # towers run by ONNX Runtime (CPU; exported once, cached)

A model spec is one of, tried in this order:

    BACKEND:SOURCE    explicit: "clip:PATH", "hf:ORG/NAME" or "hf:DIR", "mini:PATH", "open_clip:ARCH/TAG"
                      (see core/models/openclip.py for open_clip's forms)
    a name in MODELS  e.g. "ViT-B/32", "RN50", "chinese-clip", "xlm-roberta-clip", "mini"
    a local file      a mini-CLIP checkpoint, else an OpenAI CLIP checkpoint
    a local folder    saved with save_pretrained() (Hugging Face), or an OpenCLIP folder (open_clip_config.json)
    ORG/NAME          a Hugging Face hub id

Each backend (`BACKENDS`) is one entry: adding a runtime or a hub family is one more entry,
not another `if`. Runtimes (`runtime=`): "torch"; "onnx" and "onnx-int8" (ONNX Runtime on the
CPU) for the OpenAI CLIP and OpenCLIP backends — the Hugging Face and mini backends run on torch and say so
in `encoder.runtime_note` when ONNX was asked for explicitly; "auto" = ONNX fp32 on a CPU, torch
+ fp16 on CUDA (core.settings.pick_runtime). Weights download once into the cache with progress; every failure names the
model, where it looked, and what to do.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from ..errors import ModelUnavailableError, UnknownModelError
from ..messages import Msg
from ..settings import ASSETS_DIR, Runtime, default_paths, pick_runtime
from .base import Encoder, error_message

__all__ = ["load_encoder", "load_encoder_with_fallback", "available_models", "resolve", "MODELS", "BACKENDS",
           "BUNDLED_MINI"]

BUNDLED_MINI = ASSETS_DIR / "mini" / "mini_clip_shapes.pt"

# The same OpenAI weights published on the Hugging Face hub: tried when OpenAI's own URL cannot be
# reached (many users reach the hub through a mirror, HF_ENDPOINT, but not openaipublic.azureedge.net).
HUB_COPIES: dict[str, str] = {
    "ViT-B/32": "openai/clip-vit-base-patch32",
    "ViT-B/16": "openai/clip-vit-base-patch16",
    "ViT-L/14": "openai/clip-vit-large-patch14",
    "ViT-L/14@336px": "openai/clip-vit-large-patch14-336",
}

# (backend, source, what it is). The OpenAI names come from the clip package itself (see _named).
MODELS: dict[str, tuple[str, str, str]] = {
    "mini": ("mini", str(BUNDLED_MINI), "the bundled offline model (coloured shapes, en + zh)"),
    "chinese-clip": ("hf", "OFA-Sys/chinese-clip-vit-base-patch16", "Chinese-CLIP ViT-B/16 (reads Chinese)"),
    "altclip": ("hf", "BAAI/AltCLIP", "AltCLIP (Chinese and English)"),
    "siglip": ("hf", "google/siglip-base-patch16-224", "SigLIP base (English)"),
    "xlm-roberta-clip": ("open_clip", "xlm-roberta-base-ViT-B-32/laion5b_s13b_b90k",
                         "OpenCLIP XLM-RoBERTa ViT-B/32, LAION-5B (reads Chinese)"),
    "nllb-clip": ("open_clip", "nllb-clip-base/v1", "OpenCLIP NLLB-CLIP base (reads Chinese, 200 languages)"),
}


@dataclass(frozen=True)
class Backend:
    """How one family of models is loaded: load(source, runtime, cache, offline) -> Encoder."""
    load: Callable[[str, Runtime, Path, bool], Encoder]
    help: str
    onnx: bool = False   # the loader honours runtime.engine "onnx" / "onnx-int8"; else torch runs it


def _load_clip(source: str, runtime: Runtime, cache: Path, offline: bool) -> Encoder:
    from .openai_clip import clip_names, load_clip_file, load_clip_named
    if source in clip_names():
        try:
            return load_clip_named(source, runtime, cache, offline)
        except ModelUnavailableError as openai_error:
            if source not in HUB_COPIES:
                raise
            return _load_hub_copy(source, runtime, cache, offline, openai_error)
    path = Path(source).expanduser()
    if not path.is_file():
        raise UnknownModelError(Msg("找不到 OpenAI CLIP 检查点 {path}", "OpenAI CLIP checkpoint {path} not found", path=path))
    return load_clip_file(path, runtime, cache=cache)


def _load_hub_copy(name: str, runtime: Runtime, cache: Path, offline: bool,
                   openai_error: ModelUnavailableError) -> Encoder:
    """OpenAI's download failed: the same weights from the Hugging Face hub (HF_ENDPOINT honoured),
    through the transformers backend (torch). The encoder's source_note says where they came from."""
    from .hf import hub_endpoint
    repo = HUB_COPIES[name]
    try:
        encoder = _load_hf(repo, replace(runtime, engine="torch"), cache, offline)
    except ModelUnavailableError as hub_error:
        raise ModelUnavailableError(Msg("{openai_error} Hugging Face hub 上的同一份权重（{repo}）也无法获取：{hub_error}",
                                        "{openai_error} The same weights on the Hugging Face hub ({repo}) "
                                        "could not be had either: {hub_error}",
                                        openai_error=error_message(openai_error), repo=repo,
                                        hub_error=error_message(hub_error))) from None
    # OpenAI's own weights, converted: features from either source are the same model's (cosine > 0.999), so
    # the library keeps one id and a library made from OpenAI's file is reused, not "made by another model"
    encoder.model_id = name
    encoder.source_note = Msg("{name} 是从 Hugging Face hub（`{endpoint}`，{repo}）加载的：无法连接 OpenAI 的下载地址。",
                              "{name} was loaded from the Hugging Face hub ({endpoint}, {repo}): "
                              "OpenAI's download was not reachable.", name=name, endpoint=hub_endpoint(), repo=repo)
    if runtime.engine != "torch" and not runtime.engine_auto:
        encoder.runtime_note = Msg("{name} 的 hub 副本不支持 --runtime {engine}，改在 torch 上运行。",
                                   "--runtime {engine} is not available for the hub copy of {name}; it runs on torch.",
                                   engine=runtime.engine, name=name)
    return encoder


def _load_hf(source: str, runtime: Runtime, cache: Path, offline: bool) -> Encoder:
    from .hf_clip import load_hf
    path = Path(source).expanduser()
    if path.is_dir() and not (path / "config.json").is_file():
        raise UnknownModelError(Msg("{path} 是没有 config.json 的文件夹；需要 save_pretrained() 保存的文件夹",
                                    "{path} is a directory without config.json; expected a save_pretrained() folder",
                                    path=path))
    return load_hf(str(path) if path.is_dir() else source, runtime, cache, offline)


def _load_open_clip(source: str, runtime: Runtime, cache: Path, offline: bool) -> Encoder:
    from .openclip import load_open_clip
    return load_open_clip(source, runtime, cache, offline)


def _load_mini(source: str, runtime: Runtime, cache: Path, offline: bool) -> Encoder:
    from .mini import load_mini_encoder
    path = Path(source).expanduser()
    if not path.is_file():
        raise ModelUnavailableError(Msg("找不到 mini 模型检查点 {path}；请用 `python -m core.train` 训练一个",
                                        "Mini model checkpoint {path} not found; train one with `python -m core.train`",
                                        path=path))
    return load_mini_encoder(path, runtime)


BACKENDS: dict[str, Backend] = {
    "clip": Backend(_load_clip, "OpenAI CLIP: a name (ViT-B/32, RN50, ...) or a checkpoint file", onnx=True),
    "hf": Backend(_load_hf, "Hugging Face CLIP / ChineseCLIP / AltCLIP / SigLIP: hub id or save_pretrained folder"),
    "mini": Backend(_load_mini, "the project's mini-CLIP: a checkpoint from `python -m core.train`"),
    "open_clip": Backend(_load_open_clip, "OpenCLIP: ARCH/TAG (ViT-B-32/laion2b_s34b_b79k), ARCH/CHECKPOINT_FILE, "
                                          "hf-hub:ORG/NAME, or a folder with open_clip_config.json", onnx=True),
}


def _named() -> dict[str, tuple[str, str, str]]:
    from .openai_clip import clip_names
    return {**{n: ("clip", n, "OpenAI CLIP") for n in clip_names()}, **MODELS}


def available_models() -> list[str]:
    """Names accepted by load_encoder besides paths and Hugging Face ids."""
    return list(_named()) + [f"{b}:SOURCE" for b in BACKENDS]


def resolve(spec: str) -> tuple[str, str]:
    """A model spec -> (backend name, source) without loading anything (see the module docstring)."""
    spec = spec.strip()
    prefix, _, rest = spec.partition(":")
    if prefix in BACKENDS and rest:
        return prefix, rest
    named = _named()
    if spec in named:
        return named[spec][:2]
    path = Path(spec).expanduser()
    if path.is_file():
        return ("mini" if _is_mini_checkpoint(path) else "clip"), spec
    if path.is_dir():
        return ("open_clip" if _is_open_clip_folder(path) else "hf"), spec
    if _looks_like_hub_id(spec):
        return "hf", spec
    raise UnknownModelError(Msg("找不到模型 {spec}；可用的模型有 {models}，也可以用本地检查点文件、"
                                "Hugging Face id 或 save_pretrained 文件夹",
                                "Model {spec} not found; available models = {models}, "
                                "or a local checkpoint file, or a Hugging Face id / save_pretrained directory",
                                spec=spec, models=available_models()))


def _is_open_clip_folder(path: Path) -> bool:
    """An OpenCLIP repo's layout (open_clip_config.json) and no transformers config.json beside it."""
    return (path / "open_clip_config.json").is_file() and not (path / "config.json").is_file()


def _looks_like_hub_id(spec: str) -> bool:
    """ORG/NAME, but not a mistyped OpenAI name ("ViT-B/99") nor a missing file path."""
    return (spec.count("/") == 1 and not spec.startswith(("ViT-", "RN", ".", "/", "~"))
            and not spec.endswith((".pt", ".pth")))


def load_encoder(name: str, device: str | Runtime | None = "cpu", runtime: str | None = None, *,
                 cache: Path | None = None, offline: bool = False) -> Encoder:
    """Resolve a model name, path or hub id to a ready Encoder (weights loaded once, eval mode).
    `device` is "cpu", "cuda", "cuda:N", "auto" or a Runtime (core.settings.pick_runtime);
    `runtime` is "torch" | "onnx" | "onnx-int8" | "auto" (default: the Runtime's engine, else torch).
    int8 is opt-in: the app checks its agreement with fp32 on the library before using it."""
    if isinstance(device, Runtime):
        rt = device if runtime is None else replace(pick_runtime(str(device.device), runtime), dtype=device.dtype)
    else:
        rt = pick_runtime(device, runtime)
    backend, source = resolve(name)
    entry = BACKENDS[backend]
    if rt.engine != "torch" and not entry.onnx:
        encoder = entry.load(source, replace(rt, engine="torch"), Path(cache or default_paths().cache), offline)
        if not rt.engine_auto:
            encoder.runtime_note = Msg("--runtime {engine} 仅适用于 OpenAI CLIP 和 OpenCLIP 模型；{name}（{backend} 后端）"
                                       "在 torch 上运行。",
                                       "--runtime {engine} is available for OpenAI CLIP and OpenCLIP models; {name} "
                                       "({backend} backend) runs on torch.", engine=rt.engine, name=name, backend=backend)
        return encoder
    return entry.load(source, rt, Path(cache or default_paths().cache), offline)


def _is_mini_checkpoint(path: Path) -> bool:
    if path.suffix not in (".pt", ".pth") or path.stat().st_size > 200 * 2**20:
        return False
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, ValueError, EOFError, pickle.UnpicklingError):
        return False  # TorchScript archives and other formats land here
    return isinstance(obj, dict) and obj.get("kind") == "mini-clip"


def load_encoder_with_fallback(name: str, runtime: Runtime, cache: Path | None = None,
                               offline: bool = False) -> tuple[Encoder, str | None]:
    """load_encoder, falling back to the bundled mini model when the weights cannot be had.

    Returns (encoder, notice); notice is None when `name` itself loaded, else it says why
    the fallback happened (shown to the user)."""
    try:
        return load_encoder(name, runtime, cache=cache, offline=offline), None
    except ModelUnavailableError as e:
        if not BUNDLED_MINI.is_file() or name == "mini":
            raise
        return load_encoder("mini", runtime), Msg("{error} 改用内置的离线 mini 模型。",
                                                  "{error} Using the bundled offline mini model instead.",
                                                  error=error_message(e))

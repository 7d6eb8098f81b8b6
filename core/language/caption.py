"""English image captions: ViT-GPT2 (the user's source system) or BLIP, loaded lazily.

    cap = Captioner("vit-gpt2", runtime)          # nothing is loaded yet
    cap.caption([pil, pil])                       # -> ["a cat sitting on a couch", ...]

A captioner name is a registry name (`CAPTIONERS`), a local directory saved with
`save_pretrained`, or a Hugging Face hub id. Hub downloads go to the project cache
(`CLIP_WB_CACHE`/hf), honour HF_ENDPOINT (mirrors) and HF_HUB_OFFLINE, and every
failure raises `ModelUnavailableError` saying which model, where it looked, and how
to supply it. A cached model loads without touching the network; an unreachable hub fails
within seconds (core/models/hf.py). A failed load is remembered, so it is not tried again on
every request. Build a new Captioner to retry.

The loading rules (cache, mirrors, offline, errors) are core/models/hf.py's, shared by every HF model.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Sequence

from PIL import Image

from ..errors import ModelUnavailableError, UnknownModelError
from ..messages import Msg
from ..models.hf import LazyLoad, hub_kwargs, hub_unreachable, is_hub_id, load_pretrained, model_type
from ..settings import Runtime, pick_runtime

if TYPE_CHECKING:   # imported where used: `python -m core --help` reads CAPTIONERS without torch
    import torch

__all__ = ["Captioner", "CaptionSettings", "CAPTIONERS", "DEFAULT_CAPTIONER"]

# name -> (loader kind, hub id). The kind picks the transformers classes (see _LOADERS).
CAPTIONERS: dict[str, tuple[str, str]] = {
    "vit-gpt2": ("vision-encoder-decoder", "nlpconnect/vit-gpt2-image-captioning"),  # the user's source system
    "blip": ("blip", "Salesforce/blip-image-captioning-base"),  # better captions, ~2x the weights (990 MB)
}
DEFAULT_CAPTIONER = "vit-gpt2"


@dataclass(frozen=True)
class CaptionSettings:
    num_beams: int = 4        # beam search width; nlpconnect's model card uses 4 (1 = greedy, fastest)
    max_new_tokens: int = 16  # caption length cap in tokens; the model card's max_length is 16
    batch_size: int = 8       # images per generate() call; beams multiply the memory per image


# ---------------------------------------------------------------- captioning models

class _Parts(NamedTuple):
    model: torch.nn.Module
    pixels: Callable[[list[Image.Image]], torch.Tensor]  # RGB images -> pixel_values [B, 3, H, W]
    decode: Callable[[torch.Tensor], list[str]]          # token ids [B, T] -> texts
    generate_kwargs: dict[str, Any]


def _load_vit_gpt2(what: str, source: str, cache: Path | None, offline: bool) -> _Parts:
    from transformers import AutoTokenizer, ViTImageProcessor, VisionEncoderDecoderModel
    loaders = [VisionEncoderDecoderModel.from_pretrained, ViTImageProcessor.from_pretrained,
               AutoTokenizer.from_pretrained]
    model, proc, tok = load_pretrained(what, source, loaders, cache, offline, "--captioner")
    # GPT-2 has no pad token; nlpconnect's config pads with <|endoftext|>, as beam search needs one
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else tok.eos_token_id
    return _Parts(model, lambda ims: proc(images=ims, return_tensors="pt")["pixel_values"],
                  lambda ids: tok.batch_decode(ids, skip_special_tokens=True), {"pad_token_id": pad})


def _load_blip(what: str, source: str, cache: Path | None, offline: bool) -> _Parts:
    from transformers import BlipForConditionalGeneration, BlipProcessor
    model, proc = load_pretrained(what, source, [BlipForConditionalGeneration.from_pretrained,
                                  BlipProcessor.from_pretrained], cache, offline, "--captioner")
    return _Parts(model, lambda ims: proc(images=ims, return_tensors="pt")["pixel_values"],
                  lambda ids: proc.batch_decode(ids, skip_special_tokens=True), {})


_LOADERS = {"vision-encoder-decoder": _load_vit_gpt2, "blip": _load_blip}


class Captioner:
    """English captions for RGB PIL images. Thread-safe; the model loads on first use."""

    def __init__(self, model: str = DEFAULT_CAPTIONER, runtime: Runtime | None = None,
                 settings: CaptionSettings = CaptionSettings(), cache: Path | None = None, offline: bool = False):
        name, path = str(model).strip(), Path(str(model).strip()).expanduser()
        self.kind: str | None = None  # None: read from config.json at load time
        if name in CAPTIONERS:
            (self.kind, self.source), self.model_id = CAPTIONERS[name], name
        elif path.is_dir():
            self.source, self.model_id = str(path), f"hf-local:{path.name}"
        elif is_hub_id(name):
            self.source, self.model_id = name, f"hf:{name}"
        else:
            raise UnknownModelError(Msg("找不到描述模型 '{name}'；可用的描述模型 = {available}，或用 save_pretrained() "
                                        "保存的本地文件夹，或 Hugging Face 上的 id ORG/NAME",
                                        "Captioner '{name}' not found; available captioners = {available}, "
                                        "or a local save_pretrained() directory, or a Hugging Face id ORG/NAME",
                                        name=name, available=sorted(CAPTIONERS)))
        self.runtime = runtime or pick_runtime()
        self.settings, self._cache, self._offline = settings, cache, offline
        self._parts = LazyLoad(self._load)
        self._run_lock = threading.Lock()  # one generate() at a time: no gain from interleaving on one device

    def _load(self) -> _Parts:
        what = Msg("描述模型 '{model}'（{source}）", "captioner '{model}' ({source})",
                   model=self.model_id, source=self.source)
        kind = self.kind or model_type(self.source, self._cache, self._offline, what)
        if kind not in _LOADERS:
            raise UnknownModelError(Msg("{source} 是 '{kind}' 模型；描述模型必须是 {kinds} 之一",
                                        "{source} is a '{kind}' model; captioners must be one of {kinds}",
                                        source=self.source, kind=kind, kinds=sorted(_LOADERS)))
        parts = _LOADERS[kind](what, self.source, self._cache, self._offline)
        parts.model.to(self.runtime.device, self.runtime.dtype).eval()
        return parts

    def load(self) -> None:
        """Load now (e.g. at app start) instead of on the first caption; raises ModelUnavailableError."""
        self._parts.get()

    @property
    def loaded(self) -> bool:
        return self._parts.loaded

    def on_this_machine(self) -> bool:
        """True when the weights need no download: a local folder, or the hub id already in the cache."""
        if Path(self.source).is_dir():
            return True
        from huggingface_hub import try_to_load_from_cache
        folder = hub_kwargs(self.source, self._cache, self._offline).get("cache_dir")
        return isinstance(try_to_load_from_cache(self.source, "config.json", cache_dir=folder), str)

    def unavailable(self) -> Msg | None:
        """Why no caption can be made here before anyone tries (the weights are not on this machine and
        cannot be downloaded: offline, or the hub does not answer); None when they are, or may come."""
        if self.loaded or self.on_this_machine():
            return None
        why = Msg("离线模式", "offline mode") if self._offline else hub_unreachable()
        if why is None:
            return None
        return Msg("这台机器上没有描述模型 {model}，现在也无法下载（{why}）。要生成描述：联网运行一次（可设置镜像 "
                   "`HF_ENDPOINT=https://hf-mirror.com`），或用 `--captioner` 指定 save_pretrained() 保存的本地文件夹。",
                   "The captioner {model} is not on this machine and cannot be downloaded now ({why}). To caption: run "
                   "once online (`HF_ENDPOINT` may name a mirror, e.g. `https://hf-mirror.com`), or pass `--captioner` with "
                   "a local folder saved with save_pretrained().", model=self.model_id, why=why)

    def caption(self, images: Sequence[Image.Image]) -> list[str]:
        """N PIL images -> N English captions (stripped), in order, batched by settings.batch_size."""
        if not images:
            return []
        parts, s = self._parts.get(), self.settings
        out: list[str] = []
        for i in range(0, len(images), s.batch_size):
            chunk = [im if im.mode == "RGB" else im.convert("RGB") for im in images[i:i + s.batch_size]]
            pixels = parts.pixels(chunk).to(self.runtime.device, self.runtime.dtype)
            import torch   # here, not at the top: `python -m core --help` does not need it
            with self._run_lock, torch.inference_mode():
                ids = parts.model.generate(pixel_values=pixels, num_beams=s.num_beams,
                                           max_new_tokens=s.max_new_tokens, **parts.generate_kwargs)
            out += [t.strip() for t in parts.decode(ids.cpu())]
        return out

    def __repr__(self) -> str:
        return f"Captioner({self.model_id!r}, {self.runtime.describe()}, loaded={self.loaded})"

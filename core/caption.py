"""English image captions: ViT-GPT2 (the user's source system) or BLIP, loaded lazily.

    cap = Captioner("vit-gpt2", runtime)          # nothing is loaded yet
    cap.caption([pil, pil])                       # -> ["a cat sitting on a couch", ...]

A captioner name is a registry name (`CAPTIONERS`), a local directory saved with
`save_pretrained`, or a Hugging Face hub id. Hub downloads go to the project cache
(`CLIP_WB_CACHE`/hf), honour HF_ENDPOINT (mirrors) and HF_HUB_OFFLINE, and every
failure raises `ModelUnavailableError` saying which model, where it looked, and how
to supply it. A failed load is remembered: an unreachable hub costs ~50 s of retries,
which must not be paid again on every request. Build a new Captioner to retry.

The loading rules (cache, mirrors, offline, errors) are core/hf.py's, shared by every HF model.
"""
from __future__ import annotations

import argparse
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import torch
from PIL import Image

from .encoders import ModelUnavailableError, UnknownModelError
from .hf import LazyLoad, is_hub_id, load_pretrained, model_type
from .settings import Runtime, pick_runtime

__all__ = ["Captioner", "CaptionSettings", "CAPTIONERS", "DEFAULT_CAPTIONER", "add_commands"]

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
    model, proc, tok = load_pretrained(what, source, loaders, cache, offline)
    # GPT-2 has no pad token; nlpconnect's config pads with <|endoftext|>, as beam search needs one
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else tok.eos_token_id
    return _Parts(model, lambda ims: proc(images=ims, return_tensors="pt")["pixel_values"],
                  lambda ids: tok.batch_decode(ids, skip_special_tokens=True), {"pad_token_id": pad})


def _load_blip(what: str, source: str, cache: Path | None, offline: bool) -> _Parts:
    from transformers import BlipForConditionalGeneration, BlipProcessor
    model, proc = load_pretrained(what, source, [BlipForConditionalGeneration.from_pretrained,
                                  BlipProcessor.from_pretrained], cache, offline)
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
            raise UnknownModelError(f"Captioner {name!r} not found; available captioners = {sorted(CAPTIONERS)}, "
                                    "or a local save_pretrained() directory, or a Hugging Face id ORG/NAME")
        self.runtime = runtime or pick_runtime()
        self.settings, self._cache, self._offline = settings, cache, offline
        self._parts = LazyLoad(self._load)
        self._run_lock = threading.Lock()  # one generate() at a time: no gain from interleaving on one device

    def _load(self) -> _Parts:
        what = f"captioner {self.model_id!r} ({self.source})"
        kind = self.kind or model_type(self.source, self._cache, self._offline, what)
        if kind not in _LOADERS:
            raise UnknownModelError(f"{self.source} is a {kind!r} model; captioners must be one of {sorted(_LOADERS)}")
        parts = _LOADERS[kind](what, self.source, self._cache, self._offline)
        parts.model.to(self.runtime.device, self.runtime.dtype).eval()
        return parts

    def load(self) -> None:
        """Load now (e.g. at app start) instead of on the first caption; raises ModelUnavailableError."""
        self._parts.get()

    @property
    def loaded(self) -> bool:
        return self._parts.loaded

    def caption(self, images: Sequence[Image.Image]) -> list[str]:
        """N PIL images -> N English captions (stripped), in order, batched by settings.batch_size."""
        if not images:
            return []
        parts, s = self._parts.get(), self.settings
        out: list[str] = []
        for i in range(0, len(images), s.batch_size):
            chunk = [im if im.mode == "RGB" else im.convert("RGB") for im in images[i:i + s.batch_size]]
            pixels = parts.pixels(chunk).to(self.runtime.device, self.runtime.dtype)
            with self._run_lock, torch.inference_mode():
                ids = parts.model.generate(pixel_values=pixels, num_beams=s.num_beams,
                                           max_new_tokens=s.max_new_tokens, **parts.generate_kwargs)
            out += [t.strip() for t in parts.decode(ids.cpu())]
        return out

    def __repr__(self) -> str:
        return f"Captioner({self.model_id!r}, {self.runtime.describe()}, loaded={self.loaded})"


# ---------------------------------------------------------------- command line (UI layer: prints)

def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """`python -m core caption IMG... [--captioner NAME|PATH] [--translator NAME|PATH|none]`"""
    p = subparsers.add_parser("caption", help="caption images in English and Chinese")
    p.add_argument("images", nargs="+", help="image files or folders")
    p.add_argument("--captioner", default=DEFAULT_CAPTIONER,
                   help=f"{' | '.join(CAPTIONERS)} | a save_pretrained() directory (default {DEFAULT_CAPTIONER})")
    p.add_argument("--translator", default="nllb", help="nllb | marian | PATH | none (English only)")
    p.add_argument("--beams", type=int, default=CaptionSettings.num_beams, help="beam search width")
    p.add_argument("--max-tokens", type=int, default=CaptionSettings.max_new_tokens, help="caption length cap")
    p.set_defaults(func=_cmd_caption)


def _cmd_caption(args: argparse.Namespace) -> int:
    from .translate import Translator
    runtime, offline = pick_runtime(getattr(args, "device", None)), getattr(args, "offline", False)
    settings = CaptionSettings(num_beams=args.beams, max_new_tokens=args.max_tokens)
    try:
        captioner = Captioner(args.captioner, runtime, settings, offline=offline)
        translator = None if args.translator == "none" else Translator(args.translator, runtime, offline=offline)
        return _print_captions(args.images, captioner, translator)
    except (UnknownModelError, ModelUnavailableError, ValueError) as e:  # ValueError: a bad --device
        print(f"error: {e}", file=sys.stderr)
        return 2


def _print_captions(paths: list[str], captioner: Captioner, translator) -> int:
    """Decode every file (a bad one is reported and skipped), then caption the rest in batches."""
    from .images import ImageError, iter_image_files, load_image
    from .lang import caption_metadata
    good, status, zh_error = [], 0, None
    for path in iter_image_files(paths):
        try:
            good.append((path, load_image(path)))
        except ImageError as e:
            print(f"skipped {e}", file=sys.stderr)
            status = 1
    step = captioner.settings.batch_size * 4
    for i in range(0, len(good), step):
        chunk = good[i:i + step]
        for (path, _), meta in zip(chunk, caption_metadata([im for _, im in chunk], captioner, translator)):
            print(f"{path}\n  en: {meta['caption_en']}\n  zh: {meta['caption_zh'] or '-'}")
            zh_error = zh_error or meta.get("caption_zh_error")
    if zh_error:
        print(f"note: no Chinese captions: {zh_error}", file=sys.stderr)
        status = 1
    return status

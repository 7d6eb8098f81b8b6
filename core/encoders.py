"""One interface over CLIP-style dual encoders.

    enc = load_encoder("ViT-B/32", pick_runtime())
    enc.encode_images([pil, ...])   # -> float32 [N, D], L2-normalised, on the CPU
    enc.encode_texts(["a cat", ...])  # -> float32 [N, D], L2-normalised, on the CPU

Backends: the OpenAI `clip` package (names from `clip.available_models()` or a
local checkpoint file, TorchScript archive or state dict), Hugging Face
`transformers` dual encoders (CLIPModel, ChineseCLIPModel, AltCLIPModel, SigLIP;
hub id or local directory), and the project's mini model (`mini:PATH`, see
core/mini.py). Model names resolve through `resolve()`; the weights are
downloaded once into the cache with a progress bar, and every failure names the
model, where it looked, and what to do.

Texts longer than the model's context (77 tokens for CLIP) are truncated to it.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import warnings
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from .settings import ASSETS_DIR, Runtime, default_paths

__all__ = ["Encoder", "load_encoder", "load_encoder_with_fallback", "available_models",
           "ModelUnavailableError", "UnknownModelError", "BUNDLED_MINI"]

BUNDLED_MINI = ASSETS_DIR / "mini" / "mini_clip_shapes.pt"
_PREPROCESS_WORKERS = min(8, os.cpu_count() or 1)


class ModelUnavailableError(RuntimeError):
    """The model exists in principle but its weights could not be obtained here."""


class UnknownModelError(ValueError):
    """The name matches no known model, file or directory."""


class Encoder(ABC):
    """A dual encoder. Subclasses set the attributes and implement the three hooks."""
    model_id: str        # canonical id, recorded in every feature file made with it
    dim: int             # embedding dimension D
    runtime: Runtime
    logit_scale: float = 100.0  # cosine similarity -> logits, as the model was trained
    multilingual: bool = False  # True when the text tower reads Chinese natively
    batch_size: int = 64

    @abstractmethod
    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """RGB PIL image -> float tensor [3, H, W] ready for the image tower."""

    @abstractmethod
    def _image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels [B, 3, H, W] on device/dtype -> unnormalised features [B, D]."""

    @abstractmethod
    def _text_features(self, texts: list[str]) -> torch.Tensor:
        """texts -> unnormalised features [B, D]."""

    @torch.inference_mode()
    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Preprocessed pixels [B, 3, H, W] -> normalised float32 [B, D] on the CPU."""
        pixels = pixels.to(self.runtime.device, self.runtime.dtype, non_blocking=True)
        return F.normalize(self._image_features(pixels).float(), dim=-1).cpu()

    def encode_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """RGB PIL images -> normalised float32 [N, D] on the CPU. Preprocessing runs in threads
        so the next batch is prepared while the current one is encoded."""
        if not images:
            return torch.empty(0, self.dim)
        chunks = [images[i:i + self.batch_size] for i in range(0, len(images), self.batch_size)]
        with ThreadPoolExecutor(_PREPROCESS_WORKERS) as pool:
            batches = (torch.stack(list(pool.map(self.preprocess, chunk))) for chunk in chunks)
            return torch.cat([self.encode_pixels(b) for b in batches])

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Strings -> normalised float32 [N, D] on the CPU."""
        if not texts:
            return torch.empty(0, self.dim)
        out = [self._text_features(list(texts[i:i + self.batch_size])) for i in range(0, len(texts), self.batch_size)]
        return F.normalize(torch.cat(out).float(), dim=-1).cpu()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model_id!r}, dim={self.dim}, {self.runtime.describe()})"


# ---------------------------------------------------------------- OpenAI clip package

class ClipEncoder(Encoder):
    """An OpenAI `clip.model.CLIP`."""

    def __init__(self, model: torch.nn.Module, model_id: str, runtime: Runtime):
        import clip
        model = model.to(runtime.device).float()
        if runtime.dtype == torch.float16:
            clip.model.convert_weights(model)   # CLIP's own fp16 recipe: LayerNorm stays fp32 (it casts its input)
        self.model = model.eval()
        self.model_id, self.runtime = model_id, runtime
        self.dim = int(model.text_projection.shape[1])
        self.logit_scale = float(model.logit_scale.detach().exp())
        self.context_length = int(model.context_length)
        self._transform = clip.clip._transform(model.visual.input_resolution)
        self._tokenize = clip.tokenize
        mask = model.build_attention_mask()
        self._mask = mask.to(runtime.device, runtime.dtype)

    def preprocess(self, image):
        return self._transform(image)

    def _image_features(self, pixels):
        return self.model.encode_image(pixels)

    def _text_features(self, texts):
        tokens = self._tokenize(texts, context_length=self.context_length, truncate=True).to(self.runtime.device)
        return clip_encode_text_trimmed(self.model, tokens, self._mask)


def clip_encode_text_trimmed(model, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """CLIP's encode_text on tokens cut to the batch's longest real length.

    The text transformer is causal and reads the EOT position, so the padding after the
    longest sequence never influences the output: cutting it gives identical features
    at a fraction of the attention cost (benchmarks/bench_text_trim.py measures it).
    tokens [B, 77] -> features [B, D]
    """
    length = int((tokens != 0).sum(dim=1).max())
    tokens = tokens[:, :max(length, 1)]
    n = tokens.shape[1]
    x = model.token_embedding(tokens).type(model.dtype) + model.positional_embedding[:n].type(model.dtype)
    x = x.permute(1, 0, 2)  # NLD -> LND
    m = mask[:n, :n]
    for block in model.transformer.resblocks:
        y = block.ln_1(x)
        x = x + block.attn(y, y, y, need_weights=False, attn_mask=m)[0]
        x = x + block.mlp(block.ln_2(x))
    x = model.ln_final(x.permute(1, 0, 2)).type(model.dtype)  # [B, n, width]
    return x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)] @ model.text_projection


def _fingerprint(path: Path) -> str:
    """Short content id of a weights file: the SHA-256 of all of it, so two fine-tunes of one
    architecture never share a model id (their features must never mix). ~1 s per GB, once per load."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()[:10]


def _load_clip_file(path: Path, runtime: Runtime, model_id: str | None = None) -> ClipEncoder:
    """A TorchScript archive (OpenAI's .pt files) or a plain state dict."""
    import clip
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated": OpenAI ships TorchScript
            state_dict = torch.jit.load(str(path), map_location="cpu").state_dict()
    except RuntimeError:  # not a TorchScript archive: a state dict saved with torch.save
        try:
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, EOFError, ValueError, RuntimeError) as e:
            raise UnknownModelError(f"{path} is not a readable checkpoint ({type(e).__name__}: "
                                    f"{str(e).splitlines()[0] if str(e) else 'truncated?'})") from None
        if isinstance(state_dict, dict) and "state_dict" in state_dict:
            state_dict = state_dict["state_dict"]
    try:
        model = clip.model.build_model(dict(state_dict)).float()
    except (KeyError, RuntimeError, AttributeError) as e:
        raise UnknownModelError(f"{path} is not an OpenAI CLIP checkpoint ({type(e).__name__}: {e})") from None
    return ClipEncoder(model, model_id or f"clip-file:{path.stem}-{_fingerprint(path)}", runtime)


def _load_clip_named(name: str, runtime: Runtime, cache: Path, offline: bool) -> ClipEncoder:
    import clip
    url = clip.clip._MODELS[name]
    target = cache / "clip" / os.path.basename(url)
    if not target.is_file():
        if offline:
            raise ModelUnavailableError(
                f"Model {name} is not in the cache ({target}) and offline mode is on. "
                f"Copy the checkpoint there, pass --model /path/to/{os.path.basename(url)}, or go online once.")
        try:
            clip.clip._download(url, str(cache / "clip"))  # tqdm progress bar + SHA256 check
        except (OSError, RuntimeError) as e:
            raise ModelUnavailableError(
                f"Could not download model {name} from {url} into {target} ({e}). "
                f"Download {os.path.basename(url)} elsewhere and pass --model /path/to/it, "
                f"or put it in {target.parent}.") from None
    return _load_clip_file(target, runtime, model_id=name)


# ---------------------------------------------------------------- Hugging Face transformers

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
        tok = processor.tokenizer
        self._max_len = min(int(getattr(tok, "model_max_length", 77) or 77), 512)
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


def _as_tensor(out) -> torch.Tensor:
    """transformers 5 may return a ModelOutput where 4.x returned the projected tensor."""
    if isinstance(out, torch.Tensor):
        return out
    return out.pooler_output


def _load_hf(name: str, runtime: Runtime, cache: Path, offline: bool) -> HFEncoder:
    from transformers import AutoModel, AutoProcessor

    from .hf import load_pretrained   # imported here: core.hf builds on this module's errors
    model, processor = load_pretrained(f"CLIP-style model {name!r}", name,
                                       [AutoModel.from_pretrained, AutoProcessor.from_pretrained], cache, offline)
    if not hasattr(model, "get_image_features"):
        raise UnknownModelError(f"{name} is a {type(model).__name__}, not a CLIP-style dual encoder")
    model_id = f"hf-local:{Path(name).name}" if Path(name).is_dir() else f"hf:{name}"
    return HFEncoder(model, processor, model_id, runtime)


# ---------------------------------------------------------------- resolution

def available_models() -> list[str]:
    """Names accepted by load_encoder besides paths and Hugging Face ids."""
    import clip
    return list(clip.available_models()) + ["mini (the bundled offline model)", "mini:PATH", "hf:ORG/NAME"]


def load_encoder(name: str, runtime: Runtime, cache: Path | None = None, offline: bool = False) -> Encoder:
    """Resolve a model name, path or hub id to a ready Encoder (weights loaded once, eval mode)."""
    import clip
    cache = Path(cache or default_paths().cache)
    name = name.strip()
    if name == "mini" or name.startswith("mini:"):
        from .mini import load_mini_encoder
        path = Path(name[5:]) if name.startswith("mini:") else BUNDLED_MINI
        if not path.is_file():
            raise ModelUnavailableError(f"Mini model checkpoint {path} not found; train one with `python -m core.train`")
        return load_mini_encoder(path, runtime)
    if name in clip.available_models():
        return _load_clip_named(name, runtime, cache, offline)
    path = Path(name).expanduser()
    if path.is_file():
        if _is_mini_checkpoint(path):
            from .mini import load_mini_encoder
            return load_mini_encoder(path, runtime)
        return _load_clip_file(path, runtime)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UnknownModelError(f"{path} is a directory without config.json; expected a save_pretrained() folder")
        return _load_hf(str(path), runtime, cache, offline)
    if name.startswith("hf:"):
        return _load_hf(name[3:], runtime, cache, offline)
    if name.count("/") == 1 and not name.startswith(("ViT-", "RN")) and not name.startswith((".", "/")) and not name.endswith((".pt", ".pth")):
        return _load_hf(name, runtime, cache, offline)
    raise UnknownModelError(f"Model {name} not found; available models = {available_models()}, "
                            "or a local checkpoint file, or a Hugging Face id / save_pretrained directory")


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
        return load_encoder(name, runtime, cache, offline), None
    except ModelUnavailableError as e:
        if not BUNDLED_MINI.is_file() or name == "mini":
            raise
        return load_encoder("mini", runtime), f"{e} Using the bundled offline mini model instead."

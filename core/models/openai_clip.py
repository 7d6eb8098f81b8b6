"""The OpenAI `clip` package backend: named models (downloaded once, SHA-checked) and local
checkpoint files (TorchScript archives as OpenAI ships them, or plain state dicts).

Texts longer than the model's context (77 tokens) are truncated to it.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import warnings
from pathlib import Path

import torch

from ..errors import ModelUnavailableError, UnknownModelError
from ..settings import Runtime
from .base import Encoder

__all__ = ["ClipEncoder", "clip_encode_text_trimmed", "load_clip_file", "load_clip_named", "clip_names"]


def clip_names() -> list[str]:
    """The model names the `clip` package can download (ViT-B/32, RN50, ...)."""
    import clip
    return list(clip.available_models())


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
    """CLIP's encode_text on tokens cut just after the batch's last end-of-text (EOT) token.

    The text transformer is causal and reads the EOT position, so the padding after the
    last EOT never influences the output: cutting it gives identical features at a
    fraction of the attention cost (benchmarks/bench_text_trim.py measures it).
    The cut is found the way CLIP finds EOT, `tokens.argmax(dim=-1)` (EOT is the highest id
    in the vocabulary), not by counting non-zero ids: id 0 is a real BPE token ("!", e.g. in
    "wow!😀"), so a count would cut the EOT off a text that contains it.
    tokens [B, 77] -> features [B, D]
    """
    length = int(tokens.argmax(dim=-1).max()) + 1   # through the batch's last EOT position
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


def load_clip_file(path: Path, runtime: Runtime, model_id: str | None = None) -> ClipEncoder:
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


def load_clip_named(name: str, runtime: Runtime, cache: Path, offline: bool) -> ClipEncoder:
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
    return load_clip_file(target, runtime, model_id=name)

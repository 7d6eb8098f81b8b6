"""The project's own mini-CLIP: ResNet18 image tower + small Transformer or LSTM text
tower, trained from scratch (core/train.py) and bundled for offline use.

    enc = load_mini_encoder(Path("assets/mini/mini_clip_shapes.pt"), pick_runtime("cpu"))
    enc.encode_texts(["红色圆形", "a red circle"])   # -> float32 [2, D], L2-normalised

Checkpoint format (format_version 1): a plain dict, `torch.load(path, weights_only=True)`:

    kind            "mini-clip"
    format_version  1
    name            short human name, e.g. "shapes"
    config          MiniConfig as a dict of primitives (asdict)
    vocab           list[str], token id = list index; the first four are SPECIALS
    state_dict      {param name: tensor}  float32 or float16 tensors
    quantized       {param name: {"bits", "shape", "group", "q", "scale"}}  weights stored
                    compactly (see _quantize); dequantised to float on load. Empty = none.
    meta            training metadata: data, epochs, seed, metrics, command, ... (primitives)
    (training checkpoints add "optimizer", "scheduler", "epoch", "log" for --resume)

Tokenizer: lowercased English words and digits, one token per CJK character,
everything else (punctuation, spaces) dropped; [BOS] text [EOS], padded with [PAD].
"""
from __future__ import annotations

import hashlib
import math
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch import nn

from .base import Encoder
from .pixels import PixelRecipe
from ..messages import Msg
from ..settings import Runtime

__all__ = ["MiniConfig", "Tokenizer", "MiniCLIP", "MiniEncoder", "load_mini_encoder", "save_checkpoint",
           "load_checkpoint", "image_to_uint8", "normalize_pixels", "CHECKPOINT_KIND", "FORMAT_VERSION", "SPECIALS"]

CHECKPOINT_KIND = "mini-clip"
FORMAT_VERSION = 1
SPECIALS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")
PAD, UNK, BOS, EOS = range(4)
_TOKEN_RE = re.compile(r"[a-z0-9]+|[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_QUANT_MIN_NUMEL = 4096  # smaller tensors (norms, biases, the stem) stay fp16: they are a rounding error in size


@dataclass
class MiniConfig:
    image_size: int = 64                  # input side in pixels (ResNet18 works from 32 up; Shapes are made at 64)
    embed_dim: int = 256                  # shared embedding dimension D
    text_encoder: str = "transformer"     # "transformer" or "lstm"
    text_width: int = 256                 # token embedding / hidden size of the text tower
    text_layers: int = 2                  # Transformer blocks or LSTM layers
    text_heads: int = 4                   # attention heads (transformer only)
    context_length: int = 32              # tokens incl. [BOS]/[EOS]; longer texts are truncated
    vocab_size: int = 0                   # set from the tokenizer
    init_temperature: float = 0.07        # CLIP's initial softmax temperature
    pixel_mean: tuple = (0.5, 0.5, 0.5)   # normalisation of [0, 1] pixels
    pixel_std: tuple = (0.25, 0.25, 0.25)

    @classmethod
    def from_dict(cls, d: dict) -> "MiniConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in known})


class Tokenizer:
    """Word-level English + character-level Chinese, built from a corpus."""

    def __init__(self, vocab: Sequence[str]):
        if tuple(vocab[:4]) != SPECIALS:
            raise ValueError(Msg("词表必须以 {specials} 开头；实际为 {got}", "vocab must start with {specials}; got {got}",
                                 specials=SPECIALS, got=list(vocab[:4])))
        self.vocab = list(vocab)
        self._ids = {t: i for i, t in enumerate(self.vocab)}

    @staticmethod
    def split(text: str) -> list[str]:
        return _TOKEN_RE.findall(text.lower())

    @classmethod
    def build(cls, texts: Iterable[str], min_count: int = 1) -> "Tokenizer":
        """Vocabulary of every token seen at least min_count times, most frequent first."""
        counts: dict[str, int] = {}
        for text in texts:
            for tok in cls.split(text):
                counts[tok] = counts.get(tok, 0) + 1
        kept = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))
        return cls(list(SPECIALS) + kept)

    def __len__(self) -> int:
        return len(self.vocab)

    def unknown(self, texts: Iterable[str]) -> list[str]:
        """Tokens of `texts` outside the vocabulary (each once, first-seen order)."""
        seen = dict.fromkeys(t for text in texts for t in self.split(text) if t not in self._ids)
        return list(seen)

    def encode(self, texts: Sequence[str], context_length: int) -> torch.Tensor:
        """texts -> long [B, context_length]: [BOS] tokens [EOS] [PAD]...; truncation keeps [EOS]."""
        out = torch.full((len(texts), context_length), PAD, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self._ids.get(t, UNK) for t in self.split(text)][:context_length - 2]
            out[row, :len(ids) + 2] = torch.tensor([BOS] + ids + [EOS])
        return out


class _TransformerText(nn.Module):
    """tokens [B, L] -> features [B, width], read at the [EOS] position."""

    def __init__(self, cfg: MiniConfig):
        super().__init__()
        self.token = nn.Embedding(cfg.vocab_size, cfg.text_width)
        self.position = nn.Parameter(torch.randn(cfg.context_length, cfg.text_width) * 0.01)
        layer = nn.TransformerEncoderLayer(cfg.text_width, cfg.text_heads, 4 * cfg.text_width, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, cfg.text_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.text_width)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        n = int((tokens != PAD).sum(dim=1).max())  # cut the batch to its longest text: padding is masked anyway
        tokens = tokens[:, :n]
        x = self.token(tokens) + self.position[:n]
        x = self.norm(self.blocks(x, src_key_padding_mask=tokens == PAD))
        return x[torch.arange(x.shape[0]), (tokens == EOS).int().argmax(dim=1)]


class _LSTMText(nn.Module):
    """tokens [B, L] -> features [B, 2*width // 2]: mean of a bidirectional LSTM over real tokens."""

    def __init__(self, cfg: MiniConfig):
        super().__init__()
        self.token = nn.Embedding(cfg.vocab_size, cfg.text_width, padding_idx=PAD)
        self.lstm = nn.LSTM(cfg.text_width, cfg.text_width // 2, cfg.text_layers, batch_first=True, bidirectional=True)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        lengths = (tokens != PAD).sum(dim=1).clamp(min=1)
        packed = nn.utils.rnn.pack_padded_sequence(self.token(tokens), lengths.cpu(), batch_first=True,
                                                   enforce_sorted=False)
        out, _ = nn.utils.rnn.pad_packed_sequence(self.lstm(packed)[0], batch_first=True)  # [B, n, width]
        return out.sum(dim=1) / lengths[:, None].to(out.dtype)


class MiniCLIP(nn.Module):
    """ResNet18 (torchvision, random init) + text tower, both projected to embed_dim."""

    def __init__(self, cfg: MiniConfig):
        super().__init__()
        if cfg.text_encoder not in ("transformer", "lstm"):
            raise ValueError(Msg("text_encoder 必须是 'transformer' 或 'lstm'，实际为 {got!r}",
                                 "text_encoder must be 'transformer' or 'lstm', got {got!r}", got=cfg.text_encoder))
        if cfg.vocab_size <= len(SPECIALS):
            raise ValueError(Msg("未设置 MiniConfig.vocab_size；请先建一个 Tokenizer，再传入 len(tokenizer)",
                                 "MiniConfig.vocab_size is unset; build a Tokenizer and pass len(tokenizer)"))
        self.config = cfg
        self.visual = torchvision.models.resnet18(weights=None)
        self.visual.fc = nn.Identity()  # 512-d pooled features; the projection below replaces the classifier
        self.text = _TransformerText(cfg) if cfg.text_encoder == "transformer" else _LSTMText(cfg)
        self.image_proj = nn.Linear(512, cfg.embed_dim, bias=False)
        self.text_proj = nn.Linear(cfg.text_width, cfg.embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / cfg.init_temperature)))

    def load_resnet_weights(self, path: Path) -> None:
        """Start the image tower from a local torchvision ResNet18 state dict (e.g. ImageNet)."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        missing, unexpected = self.visual.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(Msg("{path} 不是 torchvision ResNet18 的 state dict（缺少 {missing}，多出 {unexpected}）",
                                 "{path} is not a torchvision ResNet18 state dict "
                                 "(missing {missing}, unexpected {unexpected})",
                                 path=path, missing=missing[:3], unexpected=unexpected[:3]))

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels [B, 3, H, W] normalised -> unnormalised [B, D]"""
        return self.image_proj(self.visual(pixels))

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, L] -> unnormalised [B, D]"""
        return self.text_proj(self.text(tokens))

    def forward(self, pixels: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """-> logits [B_img, B_txt] = scale * cosine similarity"""
        img = F.normalize(self.encode_image(pixels), dim=-1)
        txt = F.normalize(self.encode_text(tokens), dim=-1)
        return self.logit_scale.clamp(max=math.log(100)).exp() * img @ txt.T


def image_to_uint8(image: Image.Image, size: int) -> torch.Tensor:
    """RGB PIL image -> uint8 [3, size, size]: shorter side resized to size, centre crop."""
    w, h = image.size
    scale = size / min(w, h)
    image = image.convert("RGB").resize((max(size, round(w * scale)), max(size, round(h * scale))),
                                        Image.BICUBIC)
    left, top = (image.width - size) // 2, (image.height - size) // 2
    image = image.crop((left, top, left + size, top + size))
    return torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(size, size, 3).permute(2, 0, 1)


def normalize_pixels(pixels: torch.Tensor, cfg: MiniConfig) -> torch.Tensor:
    """uint8 [..., 3, H, W] -> float normalised with the config's mean/std"""
    mean = torch.tensor(cfg.pixel_mean, device=pixels.device).view(3, 1, 1)
    std = torch.tensor(cfg.pixel_std, device=pixels.device).view(3, 1, 1)
    return (pixels.float() / 255 - mean) / std


# ---------------------------------------------------------------- checkpoints

def save_checkpoint(path: Path, model: MiniCLIP, tokenizer: Tokenizer, name: str, meta: dict,
                    bits: int | None = None, extra: dict | None = None) -> Path:
    """Write the checkpoint dict (module docstring). bits=8 or 4 stores every large weight matrix
    quantised (per-row groups of 32 with an fp16 scale); None keeps float32."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    quantized = {}
    if bits is not None:
        for key in [k for k, v in state.items() if v.is_floating_point() and v.ndim >= 2 and v.numel() >= _QUANT_MIN_NUMEL]:
            quantized[key] = _quantize(state.pop(key).float(), bits)
        state = {k: v.half() if v.is_floating_point() and k != "logit_scale" else v for k, v in state.items()}
    ckpt = {"kind": CHECKPOINT_KIND, "format_version": FORMAT_VERSION, "name": name,
            "config": asdict(model.config), "vocab": list(tokenizer.vocab), "state_dict": state,
            "quantized": quantized, "meta": meta, **(extra or {})}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(ckpt, tmp)
    tmp.replace(path)  # a crash mid-save never leaves a truncated checkpoint behind
    return path


def load_checkpoint(path: Path) -> tuple[MiniCLIP, Tokenizer, dict]:
    """-> (model in float32 on the CPU, eval mode; tokenizer; the raw checkpoint dict)"""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("kind") != CHECKPOINT_KIND:
        raise ValueError(Msg("{path} 不是 mini-CLIP 检查点（没有 kind={kind!r}）；请用 `python -m core.train` 训练一个",
                             "{path} is not a mini-CLIP checkpoint (no kind={kind!r}); "
                             "train one with `python -m core.train`", path=path, kind=CHECKPOINT_KIND))
    if ckpt.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(Msg("{path} 的 format_version 为 {version}，比当前代码（{supported}）新；请更新 workbench",
                             "{path} has format_version {version}, newer than this code "
                             "({supported}); update the workbench",
                             path=path, version=ckpt["format_version"], supported=FORMAT_VERSION))
    tokenizer = Tokenizer(ckpt["vocab"])
    model = MiniCLIP(MiniConfig.from_dict(ckpt["config"]))
    state = {k: v.float() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
    state.update({k: _dequantize(q) for k, q in ckpt.get("quantized", {}).items()})
    model.load_state_dict(state)
    return model.eval(), tokenizer, ckpt


def _quantize(w: torch.Tensor, bits: int, group: int = 32) -> dict:
    """Symmetric round-to-nearest per group of `group` weights along each row (like llama.cpp Q4_0/Q8_0).
    4-bit codes are packed two per byte."""
    if bits not in (4, 8):
        raise ValueError(Msg("量化位数必须是 4 或 8，实际为 {bits}", "quantisation bits must be 4 or 8, got {bits}", bits=bits))
    rows = w.reshape(w.shape[0], -1)
    pad = (-rows.shape[1]) % group
    g = F.pad(rows, (0, pad)).reshape(rows.shape[0], -1, group)  # [rows, groups, group]
    qmax = 2 ** (bits - 1) - 1
    scale = (g.abs().amax(dim=-1, keepdim=True) / qmax).clamp(min=1e-8).half()
    q = (g / scale.float()).round().clamp(-qmax, qmax).to(torch.int8).flatten()
    if bits == 4:
        u = (q + 8).to(torch.uint8)
        q = u[0::2] | (u[1::2] << 4)
    return {"bits": bits, "shape": list(w.shape), "group": group, "q": q, "scale": scale.squeeze(-1)}


def _dequantize(d: dict) -> torch.Tensor:
    q = d["q"]
    if d["bits"] == 4:
        q = torch.stack([(q & 15).to(torch.int8) - 8, (q >> 4).to(torch.int8) - 8], dim=1).flatten()
    scale = d["scale"].float()  # [rows, groups]
    w = q.float().reshape(scale.shape[0], scale.shape[1], d["group"]) * scale[..., None]
    numel = math.prod(d["shape"][1:])
    return w.reshape(scale.shape[0], -1)[:, :numel].reshape(d["shape"])


# ---------------------------------------------------------------- the Encoder backend

class MiniEncoder(Encoder):
    """A trained MiniCLIP behind the project's Encoder interface."""
    multilingual = True

    def __init__(self, model: MiniCLIP, tokenizer: Tokenizer, model_id: str, runtime: Runtime,
                 domain: str | None = None):
        self.model = model.to(runtime.device, runtime.dtype).eval()
        self.tokenizer, self.model_id, self.runtime = tokenizer, model_id, runtime
        self.domain = domain   # the training data's name, e.g. "shapes" (the checkpoint's meta["data"])
        self.config = model.config
        self.dim = model.config.embed_dim
        self.logit_scale = float(model.logit_scale.detach().float().clamp(max=math.log(100)).exp())
        # image_to_uint8 rounds the long side and floors the crop offset: at most a pixel from the recipe's
        self.pixel_recipe = PixelRecipe(self.config.image_size, tuple(self.config.pixel_mean), tuple(self.config.pixel_std))

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return normalize_pixels(image_to_uint8(image, self.config.image_size), self.config)

    def _image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)

    def unknown_words(self, texts: Sequence[str]) -> list[str]:
        return self.tokenizer.unknown(texts)

    def _text_features(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer.encode(texts, self.config.context_length).to(self.runtime.device)
        return self.model.encode_text(tokens)


def load_mini_encoder(path: Path, runtime: Runtime) -> MiniEncoder:
    """A mini-CLIP checkpoint file -> ready MiniEncoder with model_id "mini:<name>-<hash>"."""
    path = Path(path)
    model, tokenizer, ckpt = load_checkpoint(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
    return MiniEncoder(model, tokenizer, f"mini:{ckpt.get('name') or path.stem}-{digest}", runtime,
                       domain=(ckpt.get("meta") or {}).get("data"))

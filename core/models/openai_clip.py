"""The OpenAI `clip` package backend: named models (downloaded once, SHA-checked) and local
checkpoint files (TorchScript archives as OpenAI ships them, or plain state dicts).

Texts longer than the model's context (77 tokens) are truncated to it.

With `runtime.engine` "onnx" / "onnx-int8" the towers are exported once per checkpoint (keyed by
its fingerprint) and run by ONNX Runtime (core/models/onnx_runtime.py); once exported, a start
loads only the ONNX graphs, not the torch weights. ViT models export; a model whose export does
not reproduce torch (checked at export) runs on torch and says so in `encoder.runtime_note`.
"""
from __future__ import annotations

import ast
import functools
import importlib.util
import os
import pickle
import warnings
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import ModelUnavailableError, UnknownModelError
from ..messages import Msg
from ..settings import Runtime, default_paths
from .base import Encoder, error_message
from .fingerprint import file_fingerprint
from .onnx_runtime import OnnxEncoder, OnnxTowers, export_folder, export_towers, read_meta
from .pixels import PixelRecipe

__all__ = ["ClipEncoder", "clip_encode_text_trimmed", "clip_tokens", "clip_onnx_towers", "clip_to_onnx",
           "load_clip_file", "load_clip_named", "clip_names"]


def clip_names() -> list[str]:
    """The model names the `clip` package can download (ViT-B/32, RN50, ...)."""
    return list(_model_urls())


def _clip_source_dir() -> Path:
    package = importlib.util.find_spec("clip")   # finds the package without importing it
    if package is None or not package.submodule_search_locations:
        raise ModelUnavailableError(Msg("未安装 `clip` 包：pip install -r requirements.txt",
                                        "The `clip` package is not installed: pip install -r requirements.txt"))
    return Path(package.submodule_search_locations[0])


@functools.lru_cache(maxsize=1)
def _model_urls() -> dict[str, str]:
    """clip's `_MODELS` (name -> download URL), read from its source rather than imported: the
    import (pkg_resources, torchvision) costs 1-3 s, which a warm start must not pay."""
    tree = ast.parse((_clip_source_dir() / "clip.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_MODELS" for t in node.targets):
            return ast.literal_eval(node.value)
    import clip   # a future clip release laid out differently: pay for the import
    return dict(clip.clip._MODELS)


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
        self.image_size = int(model.visual.input_resolution)
        self._transform = clip.clip._transform(self.image_size)
        norm = self._transform.transforms[-1]   # Resize(S, bicubic), CenterCrop(S), RGB, ToTensor, Normalize
        self.pixel_recipe = PixelRecipe(self.image_size, tuple(norm.mean), tuple(norm.std))
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


@functools.lru_cache(maxsize=1)
def _bpe():
    """The clip package's own BPE tokenizer (same file, same tokens), loaded without running
    `clip/__init__`, whose pkg_resources and torchvision imports cost 1-3 s at every start."""
    spec = importlib.util.spec_from_file_location("_clip_simple_tokenizer", _clip_source_dir() / "simple_tokenizer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SimpleTokenizer()


def clip_tokens(texts: list[str], context_length: int = 77) -> torch.Tensor:
    """texts -> int64 token ids [B, L] as clip.tokenize(truncate=True) makes them, cut just after
    the batch's last end-of-text token (L = the longest row; see clip_encode_text_trimmed)."""
    bpe = _bpe()
    sot, eot = bpe.encoder["<|startoftext|>"], bpe.encoder["<|endoftext|>"]
    rows = [[sot] + bpe.encode(text) + [eot] for text in texts]
    rows = [r[:context_length - 1] + [eot] if len(r) > context_length else r for r in rows]
    out = torch.zeros(len(rows), max(map(len, rows)), dtype=torch.int64)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.tensor(r)
    return out


class _LazyTransform:
    """CLIP's image preprocessing, built on first use: a text-only start never imports torchvision."""

    def __init__(self, size: int):
        self.size, self._transform = size, None

    def __call__(self, image):
        if self._transform is None:
            import clip
            self._transform = clip.clip._transform(self.size)
        return self._transform(image)


def _attend(block, x: torch.Tensor, mask: torch.Tensor | None, b: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """One ResidualAttentionBlock on x [B * n, W] (rows of B sequences of n tokens), attention
    written out so that the exported graph keeps B and n dynamic (nn.MultiheadAttention's trace
    freezes them). Rows stay 2-D outside attention, so every projection exports as one Gemm (bias
    included) and no reshape reads a shape; B and n are read once per tower. At a short query's
    ~10 tokens ONNX Runtime's per-node cost is a visible part of the call (625 nodes -> 262)."""
    attn = block.attn
    heads, width = attn.num_heads, attn.embed_dim
    qkv = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias)
    q, k, v = qkv.reshape(b, n, 3 * heads, width // heads).transpose(1, 2).split(heads, dim=1)   # [B, heads, n, d]
    w = (q @ k.transpose(-2, -1)) * ((width // heads) ** -0.5)
    if mask is not None:
        w = w + mask
    x = x + attn.out_proj((w.softmax(dim=-1) @ v).transpose(1, 2).reshape(-1, width))
    return x + block.mlp(block.ln_2(x))


class _TextTower(torch.nn.Module):
    """tokens [B, L] (L <= context) -> features [B, D]; reads the EOT (highest id) position."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.register_buffer("mask", model.build_attention_mask(), persistent=False)

    def forward(self, tokens):
        m, (b, n) = self.model, tokens.shape
        width = m.positional_embedding.shape[1]
        x = (m.token_embedding(tokens) + m.positional_embedding[:n]).reshape(-1, width)   # [B * n, W]
        mask = self.mask[:n, :n]   # once for every layer
        for block in m.transformer.resblocks:
            x = _attend(block, x, mask, b, n)
        eot = torch.arange(b) * n + tokens.argmax(dim=-1)   # each row's end-of-text position
        return m.ln_final(x[eot]) @ m.text_projection


class _VitTower(torch.nn.Module):
    """pixels [B, 3, H, W] -> features [B, D], as clip.model.VisionTransformer.forward."""

    def __init__(self, visual):
        super().__init__()
        self.visual = visual

    def forward(self, pixels):
        v = self.visual
        x = v.conv1(pixels).flatten(2).transpose(1, 2)                  # [B, grid*grid, width]
        x = torch.cat([v.class_embedding + torch.zeros_like(x[:, :1]), x], dim=1) + v.positional_embedding
        b, n, width = x.shape
        x = v.ln_pre(x).reshape(-1, width)   # [B * n, W]
        for block in v.transformer.resblocks:
            x = _attend(block, x, None, b, n)
        return v.ln_post(x.reshape(b, n, width)[:, 0]) @ v.proj


def clip_onnx_towers(model) -> OnnxTowers:
    """The towers of a fp32 clip.model.CLIP in export form (ResNet models export as they are and
    are checked like the rest; a frozen shape there makes them run on torch)."""
    import clip
    model = model.float().cpu().eval()
    res, context = int(model.visual.input_resolution), int(model.context_length)
    image = _VitTower(model.visual) if isinstance(model.visual, clip.model.VisionTransformer) else model.visual
    meta = {"backend": "clip", "dim": int(model.text_projection.shape[1]),
            "logit_scale": float(model.logit_scale.detach().exp()), "multilingual": False,
            "input_resolution": res, "context_length": context}

    def tokens(batch: int, length: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(length)
        ids = torch.randint(1, model.vocab_size - 1, (batch, length), generator=g)
        ids[torch.arange(batch), torch.arange(batch) % length] = model.vocab_size - 1   # an EOT per row
        return ids
    return OnnxTowers(image.eval(), _TextTower(model).eval(), lambda b: torch.randn(b, 3, res, res), tokens, meta)


def _onnx_clip(folder: Path, meta: dict, model_id: str, runtime: Runtime) -> OnnxEncoder:
    context = int(meta["context_length"])
    return OnnxEncoder(folder, meta, _LazyTransform(int(meta["input_resolution"])),
                       lambda texts: clip_tokens(texts, context), model_id, runtime)


def clip_to_onnx(encoder: ClipEncoder, folder: Path, runtime: Runtime) -> Encoder:
    """Export (once) and return the ONNX Runtime encoder; the torch encoder with a note when the
    export does not reproduce torch."""
    meta = read_meta(folder)
    if meta is None:
        try:
            meta = export_towers(clip_onnx_towers(encoder.model), folder)
        except ModelUnavailableError as e:
            encoder.runtime_note = Msg("ONNX Runtime 无法运行 {model}（{error}），改在 torch 上运行。",
                                       "ONNX Runtime cannot run {model} ({error}); it runs on torch instead.",
                                       model=encoder.model_id, error=error_message(e))
            return encoder
    return _onnx_clip(folder, meta, encoder.model_id, runtime)


def load_clip_file(path: Path, runtime: Runtime, model_id: str | None = None, cache: Path | None = None) -> Encoder:
    """A TorchScript archive (OpenAI's .pt files) or a plain state dict. With an ONNX engine and
    the towers already exported, the torch weights are not loaded at all."""
    cache = Path(cache or default_paths().cache)
    fingerprint = file_fingerprint(path, cache) if runtime.engine != "torch" or model_id is None else None
    model_id = model_id or f"clip-file:{path.stem}-{fingerprint}"
    if runtime.engine != "torch":
        folder = export_folder(cache, fingerprint)
        meta = read_meta(folder)
        if meta is not None:
            return _onnx_clip(folder, meta, model_id, runtime)
        return clip_to_onnx(ClipEncoder(_build(path), model_id, replace(runtime, engine="torch")), folder, runtime)
    return ClipEncoder(_build(path), model_id, runtime)


def _build(path: Path):
    """The fp32 clip.model.CLIP in a checkpoint file."""
    import clip
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated": OpenAI ships TorchScript
            state_dict = torch.jit.load(str(path), map_location="cpu").state_dict()
    except RuntimeError:  # not a TorchScript archive: a state dict saved with torch.save
        try:
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, EOFError, ValueError, RuntimeError) as e:
            raise UnknownModelError(Msg("{path} 不是可读取的检查点（{kind}: {error}）",
                                        "{path} is not a readable checkpoint ({kind}: {error})", path=path,
                                        kind=type(e).__name__,
                                        error=str(e).splitlines()[0] if str(e) else "truncated?")) from None
        if isinstance(state_dict, dict) and "state_dict" in state_dict:
            state_dict = state_dict["state_dict"]
    try:
        model = clip.model.build_model(dict(state_dict)).float()
    except (KeyError, RuntimeError, AttributeError) as e:
        raise UnknownModelError(Msg("{path} 不是 OpenAI CLIP 检查点（{kind}: {error}）",
                                    "{path} is not an OpenAI CLIP checkpoint ({kind}: {error})",
                                    path=path, kind=type(e).__name__, error=str(e))) from None
    return model


def load_clip_named(name: str, runtime: Runtime, cache: Path, offline: bool) -> Encoder:
    url = _model_urls()[name]
    target = cache / "clip" / os.path.basename(url)
    if not target.is_file():
        if offline:
            raise ModelUnavailableError(Msg(
                "模型 {name} 不在缓存中（{target}），且已开启离线模式。"
                "请把检查点复制到那里，或传入 --model /path/to/{file}，或联网一次。",
                "Model {name} is not in the cache ({target}) and offline mode is on. "
                "Copy the checkpoint there, pass --model /path/to/{file}, or go online once.",
                name=name, target=target, file=os.path.basename(url)))
        reason = openai_unreachable(url)
        if reason is not None:   # at once: a blocked host otherwise hangs the start for minutes
            raise ModelUnavailableError(Msg(
                "无法连接 OpenAI 的下载地址 `{host}`（{reason}），模型 {name} 不在缓存 {folder} 中。"
                "请在别处下载 {file} 后传入 --model /path/to/it，或把它放进 {folder}。",
                "Cannot reach OpenAI's download host {host} ({reason}), and model {name} is not in the cache "
                "{folder}. Download {file} elsewhere and pass --model /path/to/it, or put it in {folder}.",
                host=_origin(url), reason=reason, name=name, file=os.path.basename(url), folder=target.parent))
        import clip
        try:
            clip.clip._download(url, str(cache / "clip"))  # tqdm progress bar + SHA256 check
        except (OSError, RuntimeError) as e:
            raise ModelUnavailableError(Msg(
                "无法把模型 {name} 从 {url} 下载到 {target}（{error}）。"
                "请在别处下载 {file} 后传入 --model /path/to/it，或把它放进 {folder}。",
                "Could not download model {name} from {url} into {target} ({error}). "
                "Download {file} elsewhere and pass --model /path/to/it, "
                "or put it in {folder}.", name=name, url=url, target=target, error=str(e),
                file=os.path.basename(url), folder=target.parent)) from None
    return load_clip_file(target, runtime, model_id=name, cache=cache)




def _origin(url: str) -> str:
    from urllib.parse import urlsplit
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def openai_unreachable(url: str) -> str | None:
    """None when OpenAI's download host answers (any HTTP status); else why not, within a few seconds.
    Asked with urllib, as clip downloads (the same proxy settings), in a thread that bounds a hanging
    DNS lookup."""
    import urllib.error
    import urllib.request

    from .hf import bounded_probe

    def ask(timeout: float) -> str | None:
        try:
            urllib.request.urlopen(urllib.request.Request(_origin(url) + "/", method="HEAD"), timeout=timeout).close()
        except urllib.error.HTTPError:   # an answer, even an error: the host is there
            pass
        except (OSError, ValueError) as e:   # URLError, timeouts, refused, unknown name, bad URL
            return str(getattr(e, "reason", None) or e) or type(e).__name__
        return None

    return bounded_probe(ask, "openai-probe")

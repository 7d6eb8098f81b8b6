"""OpenCLIP models (the `open_clip` package: LAION, DataComp, multilingual XLM-RoBERTa / NLLB-CLIP, SigLIP)
behind the `Encoder` interface, through the registry's "open_clip:" backend:

    open_clip:ARCH/TAG          a pretrained tag of an architecture, e.g. open_clip:ViT-B-32/laion2b_s34b_b79k
    open_clip:ARCH/FILE         a local checkpoint of that architecture, e.g. open_clip:ViT-B-32/runs/ft.pt
                                (an absolute path after the slash: open_clip:ViT-B-32//models/ft.pt)
    open_clip:hf-hub:ORG/NAME   a hub repo with open_clip_config.json, e.g. open_clip:hf-hub:timm/ViT-B-16-SigLIP2
    open_clip:DIR               a local folder holding open_clip_config.json and its weights (also local-dir:DIR)

ARCH is a name of `open_clip.list_models()`; TAG one of `open_clip.list_pretrained_tags_by_model(ARCH)`.

Every file comes through core/models/hf.py's rules, as the Hugging Face models do: read from the cache
first without any network; only what is missing is downloaded (HF_ENDPOINT honoured, huggingface_hub's
progress bars), and only after a quick probe says the hub answers; --offline or HF_HUB_OFFLINE=1 download
nothing. That includes what a Hugging Face text tower needs besides the CLIP weights (the config and
tokenizer of e.g. xlm-roberta-base), which open_clip would otherwise fetch itself, outside those rules:
open_clip is handed local files only.

Languages: a model whose text tower reads Chinese (READS_CHINESE) takes Chinese queries as they are, like
Chinese-CLIP (`encoder.multilingual`); NLLB tokenizers are told each text's language.
Runtimes: torch, or ONNX Runtime (towers exported once per checkpoint and checked against torch; a model
whose export does not reproduce torch runs on torch and says so in `encoder.runtime_note`).
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from ..errors import ModelUnavailableError, UnknownModelError
from ..messages import Msg
from ..settings import Runtime
from .base import Encoder, error_message
from .fingerprint import file_fingerprint
from .hf import hub_kwargs, load_pretrained
from .onnx_runtime import OnnxEncoder, OnnxTowers, export_folder, export_towers, read_meta
from .pixels import PixelRecipe

__all__ = ["OpenClipEncoder", "load_open_clip", "READS_CHINESE", "CHINESE_MODELS"]

CONFIG_NAME = "open_clip_config.json"
WEIGHT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")   # a hub repo's, preferred first

# What reads Chinese as it is (no translation): the Hugging Face model types of multilingual text
# towers (XLM-RoBERTa; NLLB's M2M-100 encoder; mT5), and names that mark a multilingual tokenizer
# (SigLIP i18n: mC4's vocabulary; SigLIP 2: Gemma's), looked for in the model's and tokenizer's names.
READS_CHINESE = {"model_types": frozenset({"xlm-roberta", "m2m_100", "mt5"}),
                 "name_marks": ("xlm-roberta", "nllb", "mt5", "i18n", "siglip2", "multilingual")}

# OpenCLIP models suggested for Chinese (README); each is open_clip:ARCH/TAG.
CHINESE_MODELS = ("xlm-roberta-base-ViT-B-32/laion5b_s13b_b90k", "xlm-roberta-large-ViT-H-14/frozen_laion5b_s13b_b90k",
                  "nllb-clip-base/v1", "nllb-clip-large/v1", "nllb-clip-base-siglip/v1",
                  "ViT-B-16-SigLIP-i18n-256/webli")

_NLLB_LANG = {"zh": "zho_Hans", "en": "eng_Latn"}   # NLLB's code for a text with Han characters / any other
_HAN = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def _open_clip():
    try:
        import open_clip
    except ImportError:
        raise ModelUnavailableError(Msg("未安装 `open_clip_torch` 包：pip install -r requirements.txt",
                                        "The `open_clip_torch` package is not installed: "
                                        "pip install -r requirements.txt")) from None
    return open_clip


@dataclass
class _Plan:
    """Everything needed to build one model, all of it local (fetched first); no torch weights loaded."""
    model_id: str      # recorded in every feature file made with it
    name: str          # what open_clip.create_model gets: an architecture or "local-dir:FOLDER"
    checkpoint: Path   # the CLIP weights
    model_cfg: dict    # embed_dim, vision_cfg, text_cfg
    create_kwargs: dict   # force_quick_gelu / force_preprocess_cfg from a pretrained tag; text_cfg pointed at
                          # local folders when the text tower is a Hugging Face model
    tokens: "_Tokens"
    multilingual: bool

    def export_key(self, cache: Path) -> str:
        """The ONNX export folder's key: the weights' fingerprint with the architecture they are built into."""
        text = json.dumps([self.name if not self.name.startswith("local-dir:") else "local-dir",
                           self.create_kwargs.get("force_quick_gelu", False), file_fingerprint(self.checkpoint, cache)])
        return "openclip-" + hashlib.sha256(text.encode()).hexdigest()[:12]


class _Tokens:
    """texts -> int64 ids [B, context_length] with open_clip's tokenizer for the model. An NLLB tokenizer
    starts each text with a language code: zho_Hans for a text with Han characters, else eng_Latn."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._hf = getattr(tokenizer, "tokenizer", None)   # open_clip's HFTokenizer wraps a transformers tokenizer
        self._nllb = type(self._hf).__name__.startswith("Nllb") and hasattr(self._hf, "src_lang")
        # a fast tokenizer's padding/truncation settings and NLLB's language are state shared by every thread
        # (concurrent calls fail with "Already borrowed")
        self._lock = threading.Lock()

    def __call__(self, texts: list[str]) -> torch.Tensor:
        with self._lock:
            if not self._nllb:
                return self.tokenizer(list(texts)).long()
            rows = []
            for text in texts:   # (open_clip's set_language no longer reaches transformers 5's prefix; src_lang does)
                self._hf.src_lang = _NLLB_LANG["zh" if _HAN.search(text) else "en"]
                rows.append(self.tokenizer([text]))
            return torch.cat(rows).long()


# ---------------------------------------------------------------- model spec -> local files

def _plan(source: str, cache: Path, offline: bool) -> _Plan:
    source = source.strip()
    if source.startswith("hf-hub:"):
        return _plan_hub(source[len("hf-hub:"):], cache, offline)
    folder = Path(source[len("local-dir:"):] if source.startswith("local-dir:") else source).expanduser()
    if source.startswith("local-dir:") or folder.is_dir():
        return _plan_dir(folder, cache, offline)
    return _plan_arch(source, cache, offline)


def _plan_arch(source: str, cache: Path, offline: bool) -> _Plan:
    """ARCH/TAG or ARCH/FILE."""
    oc = _open_clip()
    arch, _, pretrained = source.partition("/")
    model_cfg = oc.get_model_config(arch)
    if model_cfg is None:
        raise UnknownModelError(Msg(
            "OpenCLIP 没有架构 {arch}；有预训练权重的架构：{archs}（写法：open_clip:架构/标签）",
            "OpenCLIP has no architecture {arch}; architectures with pretrained weights: {archs} "
            "(written open_clip:ARCH/TAG)", arch=arch, archs=", ".join(_pretrained_archs())))
    if oc.is_pretrained_cfg(arch, pretrained):
        return _plan_tag(arch, pretrained.lower().replace("-", "_"), model_cfg, cache, offline)   # open_clip's spelling
    path = Path(pretrained).expanduser()
    if not pretrained or not path.is_file():
        raise UnknownModelError(Msg(
            "{arch} 之后需要一个预训练标签或本地检查点文件，{given} 两者都不是；{arch} 的标签：{tags}",
            "{arch} needs a pretrained tag or a local checkpoint file after the slash, and {given} is neither; "
            "tags of {arch}: {tags}", arch=arch, given=repr(pretrained),
            tags=", ".join(oc.list_pretrained_tags_by_model(arch)) or "none"))
    text_kwargs, tokens, kind = _text_tower(model_cfg["text_cfg"], None, cache, offline)
    model_id = f"open_clip-file:{arch}/{path.stem}-{file_fingerprint(path, cache)}"
    return _Plan(model_id, arch, path, model_cfg, text_kwargs, tokens, _reads_chinese(arch, model_cfg, kind))


def _plan_tag(arch: str, tag: str, model_cfg: dict, cache: Path, offline: bool) -> _Plan:
    pretrained = _open_clip().get_pretrained_cfg(arch, tag)
    repo, filename = os.path.split(pretrained.get("hf_hub", ""))   # "ORG/NAME/" or "ORG/NAME/FILE", as open_clip reads it
    if not repo:
        raise ModelUnavailableError(Msg("{arch}/{tag} 的权重不在 Hugging Face hub 上：请下载后用 open_clip:{arch}/文件路径 加载",
                                        "The weights of {arch}/{tag} are not on the Hugging Face hub: download "
                                        "them and load them as open_clip:{arch}/PATH", arch=arch, tag=tag))
    names = _with_safetensors(filename) if filename else WEIGHT_NAMES
    what = Msg("OpenCLIP 模型 {arch}/{tag}（hub 上的 {repo}）", "OpenCLIP model {arch}/{tag} ({repo} on the hub)",
               arch=arch, tag=tag, repo=repo)
    checkpoint = _hub_file(repo, names, what, cache, offline)
    kwargs = {"force_quick_gelu": bool(pretrained.get("quick_gelu", False)),
              "force_preprocess_cfg": {k: pretrained[k] for k in ("mean", "std", "interpolation", "resize_mode")
                                       if k in pretrained}}
    text_kwargs, tokens, kind = _text_tower(model_cfg["text_cfg"], None, cache, offline)
    return _Plan(f"open_clip:{arch}/{tag}", arch, checkpoint, model_cfg, {**kwargs, **text_kwargs}, tokens,
                 _reads_chinese(arch, model_cfg, kind))


def _plan_hub(repo: str, cache: Path, offline: bool) -> _Plan:
    what = Msg("OpenCLIP 模型 hf-hub:{repo}", "OpenCLIP model hf-hub:{repo}", repo=repo)
    config = _hub_file(repo, (CONFIG_NAME,), what, cache, offline)
    _hub_file(repo, WEIGHT_NAMES, what, cache, offline)   # beside the config, in the same snapshot folder
    return _plan_dir(config.parent, cache, offline, model_id=f"open_clip:hf-hub:{repo}")


def _plan_dir(folder: Path, cache: Path, offline: bool, model_id: str | None = None) -> _Plan:
    """A folder laid out as an OpenCLIP hub repo: open_clip_config.json ({"model_cfg", "preprocess_cfg"}) and
    the weights (and the tokenizer's files, for a Hugging Face tokenizer)."""
    try:
        model_cfg = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))["model_cfg"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UnknownModelError(Msg("{folder} 不是 OpenCLIP 模型文件夹：需要含 model_cfg 的 {config}（{error}）",
                                    "{folder} is not an OpenCLIP model folder: it needs {config} with a model_cfg "
                                    "({error})", folder=folder, config=CONFIG_NAME, error=str(e))) from None
    found = [folder / n for n in WEIGHT_NAMES if (folder / n).is_file()]
    if not found:
        raise ModelUnavailableError(Msg("{folder} 中没有 OpenCLIP 权重（{names}）", "{folder} holds no OpenCLIP "
                                        "weights ({names})", folder=folder, names=", ".join(WEIGHT_NAMES)))
    local_tok = folder if (folder / "tokenizer_config.json").is_file() else None
    text_kwargs, tokens, kind = _text_tower(model_cfg["text_cfg"], local_tok, cache, offline)
    model_id = model_id or f"open_clip-local:{folder.name}-{file_fingerprint(found[0], cache)}"
    return _Plan(model_id, f"local-dir:{folder}", found[0], model_cfg, text_kwargs, tokens,
                 _reads_chinese(model_id, model_cfg, kind))


def _with_safetensors(filename: str) -> tuple[str, ...]:
    """open_clip's own preference: a .safetensors twin of a .bin/.pth weights file first, when there is one."""
    if filename.endswith((".bin", ".pth")):
        return (("open_clip_model.safetensors" if filename == WEIGHT_NAMES[1] else filename[:-4] + ".safetensors"),
                filename)
    return (filename,)


def _hub_file(repo: str, names: tuple[str, ...], what: str, cache: Path, offline: bool) -> Path:
    """The first of `names` that hub repo `repo` holds, as a local file (see core.models.hf.load_pretrained)."""
    def fetch(repo_id: str, cache_dir: str | None = None, local_files_only: bool = False) -> str:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError
        for name in names[:-1]:
            try:
                return hf_hub_download(repo_id, name, cache_dir=cache_dir, local_files_only=local_files_only)
            except EntryNotFoundError:   # not in the repo (or not in the cache): the next name
                pass
        return hf_hub_download(repo_id, names[-1], cache_dir=cache_dir, local_files_only=local_files_only)
    return Path(load_pretrained(what, repo, [fetch], cache, offline)[0])


def _text_tower(text_cfg: dict, local_tokenizer: Path | None, cache: Path,
                offline: bool) -> tuple[dict, _Tokens, str | None]:
    """(create_model keyword arguments, tokenizer, the Hugging Face text tower's model type or None).
    A Hugging Face text tower's config and tokenizer are fetched by the rules above, and open_clip is
    pointed at their local folders."""
    oc = _open_clip()
    context = int(text_cfg.get("context_length", 77))
    tok_kwargs = dict(text_cfg.get("tokenizer_kwargs", {}))
    hf_model, hf_tok = text_cfg.get("hf_model_name"), text_cfg.get("hf_tokenizer_name")
    kwargs, kind = {}, None
    if hf_model:
        from transformers import AutoConfig
        config = load_pretrained(Msg("文本塔 {name} 的配置", "config of the text tower {name}", name=hf_model),
                                 hf_model, [AutoConfig.from_pretrained], cache, offline)[0]
        kind = config.model_type
        kwargs["text_cfg"] = {**text_cfg, "hf_model_name": _local_folder(hf_model, "config.json", cache),
                              "hf_model_pretrained": False}   # the CLIP checkpoint holds the text weights
    if not hf_tok:
        return kwargs, _Tokens(oc.SimpleTokenizer(context_length=context, **tok_kwargs)), kind
    from open_clip.tokenizer import HFTokenizer
    source = str(local_tokenizer or hf_tok)

    def build(name: str, **hub) -> HFTokenizer:
        return HFTokenizer(name, context_length=context, tokenizer_mode=text_cfg.get("tokenizer_mode"),
                           **tok_kwargs, **hub)
    tokenizer = load_pretrained(Msg("分词器 {name}", "tokenizer {name}", name=source), source, [build], cache, offline)[0]
    return kwargs, _Tokens(tokenizer), kind


def _local_folder(source: str, filename: str, cache: Path) -> str:
    """A local folder, or the cached snapshot folder of a hub repo whose `filename` was just fetched."""
    if Path(source).is_dir():
        return source
    from huggingface_hub import try_to_load_from_cache
    found = try_to_load_from_cache(source, filename, cache_dir=hub_kwargs(source, cache, True)["cache_dir"])
    return str(Path(found).parent)


def _reads_chinese(name: str, model_cfg: dict, text_model_type: str | None) -> bool:
    names = " ".join([name, str(model_cfg["text_cfg"].get("hf_tokenizer_name", ""))]).lower()
    return (text_model_type in READS_CHINESE["model_types"]
            or any(mark in names for mark in READS_CHINESE["name_marks"]))


def _pretrained_archs() -> list[str]:
    return sorted({arch for arch, _ in _open_clip().list_pretrained()})


# ---------------------------------------------------------------- the encoder

class OpenClipEncoder(Encoder):
    """An open_clip CLIP / CustomTextCLIP (SigLIP included) with its own preprocess and tokenizer."""

    def __init__(self, model: torch.nn.Module, plan: _Plan, runtime: Runtime):
        from open_clip.transform import PreprocessCfg, image_transform_v2
        self.model, self.plan, self.runtime = model.eval(), plan, runtime
        self.model_id, self.multilingual = plan.model_id, plan.multilingual
        self.dim = int(plan.model_cfg["embed_dim"])
        self.logit_scale = float(model.logit_scale.detach().float().exp())
        self.preprocess_cfg = dict(model.visual.preprocess_cfg)
        self.image_size = _square(self.preprocess_cfg["size"])
        self._transform = image_transform_v2(PreprocessCfg(**self.preprocess_cfg), is_train=False)
        self.pixel_recipe = _recipe(self.preprocess_cfg, self.image_size)

    def preprocess(self, image):
        return self._transform(image)

    def _image_features(self, pixels):
        return self.model.encode_image(pixels)

    def _text_features(self, texts):
        return self.model.encode_text(self.plan.tokens(texts).to(self.runtime.device))


def _recipe(cfg: dict, size: int | None) -> PixelRecipe | None:
    """The tensor form of a "shortest side, bicubic, centre crop" preprocess; None for any other
    (squash, longest side with padding, bilinear...): those images go through `preprocess` only."""
    if size and cfg.get("resize_mode", "shortest") == "shortest" and cfg.get("interpolation") == "bicubic" \
            and cfg.get("mode", "RGB") == "RGB":
        return PixelRecipe(size, tuple(cfg["mean"]), tuple(cfg["std"]))
    return None


def _square(size) -> int | None:
    if isinstance(size, int):
        return size
    return int(size[0]) if len(size) == 2 and size[0] == size[1] else None


def _build(plan: _Plan, runtime: Runtime) -> torch.nn.Module:
    oc = _open_clip()
    precision = "fp16" if runtime.dtype == torch.float16 else "fp32"
    try:
        return oc.create_model(plan.name, pretrained=None if plan.name.startswith("local-dir:") else str(plan.checkpoint),
                               precision=precision, device=runtime.device, **plan.create_kwargs)
    except (RuntimeError, ValueError, KeyError, OSError, AttributeError, AssertionError, EOFError,
            pickle.UnpicklingError) as e:
        # a checkpoint of another architecture (open_clip's shape checks are asserts), or not a checkpoint at all
        raise UnknownModelError(Msg("无法用 {name} 的结构加载 {path}（{kind}: {error}）",
                                    "{path} does not load as {name} ({kind}: {error})", path=plan.checkpoint,
                                    name=plan.name, kind=type(e).__name__,
                                    error=(str(e).strip().splitlines() or [""])[0][:300])) from None


class _Tower(torch.nn.Module):
    """One tower of an open_clip model in export form: encode_image or encode_text."""

    def __init__(self, model, text: bool):
        super().__init__()
        self.model, self.text = model, text

    def forward(self, x):
        return self.model.encode_text(x) if self.text else self.model.encode_image(x)


def _towers(encoder: OpenClipEncoder) -> OnnxTowers:
    """open_clip's text towers read the whole context (their positions are not cut), so example token ids are
    always [B, context_length], whatever length the export asks for; the batch stays dynamic."""
    model, size = encoder.model.float().cpu().eval(), encoder.preprocess_cfg["size"]
    h, w = (size, size) if isinstance(size, int) else size
    meta = {"backend": "open_clip", "dim": encoder.dim, "logit_scale": encoder.logit_scale,
            "multilingual": encoder.multilingual, "input_resolution": encoder.image_size,
            "preprocess": encoder.preprocess_cfg}
    texts = lambda batch, length: encoder.plan.tokens([f"a photo {i}" for i in range(batch)])  # noqa: E731
    return OnnxTowers(_Tower(model, False).eval(), _Tower(model, True).eval(), lambda b: torch.randn(b, 3, h, w),
                      texts, meta)


def _onnx(folder: Path, meta: dict, plan: _Plan, runtime: Runtime) -> OnnxEncoder:
    from open_clip.transform import PreprocessCfg, image_transform_v2
    cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["preprocess"].items()}
    return OnnxEncoder(folder, meta, image_transform_v2(PreprocessCfg(**cfg), is_train=False), plan.tokens,
                       plan.model_id, runtime)


def load_open_clip(source: str, runtime: Runtime, cache: Path, offline: bool) -> Encoder:
    """The registry's open_clip backend: `source` as in the module docstring. With an ONNX engine and the
    towers already exported, the torch weights are not loaded at all."""
    plan = _plan(source, cache, offline)
    if runtime.engine == "torch":
        return OpenClipEncoder(_build(plan, runtime), plan, runtime)
    folder = export_folder(cache, plan.export_key(cache))
    meta = read_meta(folder)
    if meta is not None:
        return _onnx(folder, meta, plan, runtime)
    encoder = OpenClipEncoder(_build(plan, replace(runtime, engine="torch")), plan, replace(runtime, engine="torch"))
    fused = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)   # nn.MultiheadAttention's fused inference kernel has no ONNX op
    try:
        meta = export_towers(_towers(encoder), folder)
    except ModelUnavailableError as e:
        encoder.runtime_note = Msg("ONNX Runtime 无法运行 {model}（{error}），改在 torch 上运行。",
                                   "ONNX Runtime cannot run {model} ({error}); it runs on torch instead.",
                                   model=encoder.model_id, error=error_message(e))
        return encoder
    finally:
        torch.backends.mha.set_fastpath_enabled(fused)
    return _onnx(folder, meta, plan, runtime)

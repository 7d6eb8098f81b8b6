"""Tiny OpenCLIP models for offline tests: architectures registered with open_clip from config dicts
(open_clip.add_model_config), built by open_clip itself with random weights, saved to disk in the
forms users have (a checkpoint file, a folder laid out as a hub repo, a hub cache), and loaded back
through the project's own loader. Nothing is downloaded."""
from __future__ import annotations

import json
from pathlib import Path

import torch

ARCH = "tiny-openclip-test"              # OpenAI-style towers, open_clip's own BPE tokenizer
XLMR_ARCH = "tiny-xlmr-openclip-test"    # a Hugging Face XLM-RoBERTa text tower, as xlm-roberta-base-ViT-B-32
DIM = 32
VISION = {"image_size": 32, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32}
TINY_CFG = {"embed_dim": DIM, "vision_cfg": VISION,
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}
PREPROCESS = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bilinear", "resize_mode": "squash"}
CORPUS = ["a photo of a cat", "a dog on the beach", "a red circle", "一只猫", "海滩上的狗", "红色圆形"]


def register(folder: Path, name: str, cfg: dict) -> str:
    """Make `name` an open_clip architecture (as a config file in its model_configs would)."""
    import open_clip
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(cfg), encoding="utf-8")
    open_clip.add_model_config(folder / f"{name}.json")
    return name


def tiny_model(folder: Path, seed: int = 0):
    import open_clip
    register(folder, ARCH, TINY_CFG)
    torch.manual_seed(seed)
    return open_clip.create_model(ARCH)


def make_tiny_openclip_file(path: Path, seed: int = 0) -> Path:
    """A checkpoint file of the tiny architecture (load it as open_clip:tiny-openclip-test/PATH)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(tiny_model(path.parent / "configs", seed).state_dict(), path)
    return path


def make_tiny_openclip_dir(path: Path, seed: int = 0) -> Path:
    """A folder laid out as an OpenCLIP hub repo: open_clip_config.json and open_clip_model.safetensors."""
    from safetensors.torch import save_file
    path.mkdir(parents=True, exist_ok=True)
    model = tiny_model(path.parent / "configs", seed)
    (path / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CFG, "preprocess_cfg": PREPROCESS}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path / "open_clip_model.safetensors"))
    return path


def put_in_hub_cache(repo_dir: Path, cache: Path, repo_id: str, revision: str = "1" * 40) -> Path:
    """Copy a repo folder into the Hugging Face hub cache layout under `cache` (the project's cache/hf),
    as a finished download leaves it; returns the snapshot folder."""
    import shutil
    repo = cache / "hf" / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    snapshot = repo / "snapshots" / revision
    shutil.copytree(repo_dir, snapshot, dirs_exist_ok=True)
    return snapshot


def make_tiny_xlmr_openclip_file(path: Path, seed: int = 0) -> Path:
    """A checkpoint of XLMR_ARCH: the tiny vision tower and a random XLM-RoBERTa text tower whose config and
    word-level tokenizer (trained here on English and Chinese) live in a local folder the config names."""
    import open_clip
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, XLMRobertaConfig
    text_dir = path.parent / "tiny-xlm-roberta"
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(CORPUS, trainers.WordLevelTrainer(special_tokens=["<s>", "<pad>", "</s>", "<unk>"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>", model_max_length=77)
    fast.save_pretrained(text_dir)
    XLMRobertaConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=80, pad_token_id=1).save_pretrained(text_dir)
    cfg = {"embed_dim": DIM, "vision_cfg": VISION,
           "text_cfg": {"hf_model_name": str(text_dir), "hf_tokenizer_name": str(text_dir),
                        "hf_pooler_type": "mean_pooler", "hf_proj_type": "linear"}}
    register(path.parent / "configs", XLMR_ARCH, cfg)
    torch.manual_seed(seed)
    model = open_clip.create_model(XLMR_ARCH, pretrained_text=False)
    torch.save(model.state_dict(), path)
    return path

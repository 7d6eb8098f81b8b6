"""Tiny real models for offline tests: built with the real libraries, saved to disk,
and loaded back through the project's own loaders (never downloaded)."""
from __future__ import annotations

from pathlib import Path

import torch

CLIP_KW = dict(embed_dim=32, image_resolution=32, vision_layers=2, vision_width=64, vision_patch_size=16,
               context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=1, transformer_layers=2)


def make_tiny_clip_file(path: Path, seed: int = 0) -> Path:
    """A random OpenAI-architecture CLIP (clip.model.CLIP), saved as a plain state dict."""
    import clip
    torch.manual_seed(seed)
    model = clip.model.CLIP(**CLIP_KW)
    torch.save(model.state_dict(), path)
    return path


def make_tiny_hf_clip_dir(path: Path, seed: int = 0, kind: str = "clip") -> Path:
    """A random transformers CLIPModel (or ChineseCLIPModel with kind="chinese_clip") with a
    word-level tokenizer trained locally, saved with save_pretrained."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import (CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor,
                              PreTrainedTokenizerFast)
    torch.manual_seed(seed)
    corpus = ["a photo of a cat", "a photo of a dog", "a red circle", "一只猫", "一只狗", "红色圆形", "beach people"]
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(corpus, trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]", "[BOS]", "[EOS]"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                   bos_token="[BOS]", eos_token="[EOS]", model_max_length=32)
    text_cfg = dict(vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=2, max_position_embeddings=32, pad_token_id=0, bos_token_id=2, eos_token_id=3)
    vision_cfg = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                      image_size=32, patch_size=16)
    model = CLIPModel(CLIPConfig(text_config=text_cfg, vision_config=vision_cfg, projection_dim=24))
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=fast).save_pretrained(path)
    model.save_pretrained(path)
    return path


def make_tiny_chinese_clip_dir(path: Path, seed: int = 0) -> Path:
    """A random transformers ChineseCLIPModel (BERT text tower, a character vocab written here)."""
    from transformers import BertTokenizerFast, ChineseCLIPConfig, ChineseCLIPImageProcessor, ChineseCLIPModel, ChineseCLIPProcessor
    torch.manual_seed(seed)
    path.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "photo", "of", "cat", "dog", *"一只猫狗红色圆形的照片"]
    (path / "vocab.txt").write_text("\n".join(vocab), encoding="utf-8")
    tok = BertTokenizerFast(vocab_file=str(path / "vocab.txt"), tokenize_chinese_chars=True, model_max_length=32)
    config = ChineseCLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=64),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=16), projection_dim=24)
    images = ChineseCLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    ChineseCLIPProcessor(image_processor=images, tokenizer=tok).save_pretrained(path)
    ChineseCLIPModel(config).save_pretrained(path)
    return path


def make_tiny_siglip_dir(path: Path, seed: int = 0) -> Path:
    """A random transformers SiglipModel with a word-level tokenizer trained here."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor
    torch.manual_seed(seed)
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(["a photo of a cat", "a red circle", "a dog on the beach"],
                            trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]", "[EOS]"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", eos_token="[EOS]",
                                   model_max_length=16)
    config = SiglipConfig(
        text_config=dict(vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=16, bos_token_id=None, eos_token_id=2,
                         pad_token_id=0),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=16))
    SiglipProcessor(image_processor=SiglipImageProcessor(size={"height": 32, "width": 32}), tokenizer=fast).save_pretrained(path)
    SiglipModel(config).save_pretrained(path)
    return path

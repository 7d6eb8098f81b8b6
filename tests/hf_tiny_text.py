"""Tiny real captioning and translation models for offline tests and the tiny benchmark.

Each builder makes a randomly initialised model with the real `transformers` classes,
trains its tokenizer locally (`tokenizers` / `sentencepiece`), and saves both with
`save_pretrained`, so the project's real loaders read them exactly as they would
read the downloaded checkpoints. Outputs are random words: tests check plumbing
(shapes, language codes, caching, errors), never caption quality.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch

CORPUS = ["a photo of a cat", "a dog on the beach", "two people riding bikes", "a red circle on white",
          "the cat who flies", "一只猫", "海滩上的一只狗", "两个人骑自行车", "白色背景上的红色圆形",
          "会飞的猫"]
IMAGE_SIZE = 32  # pixels; with 16-pixel patches the vision towers see 4 patches
_TINY = dict(hidden=32, ffn=64, layers=2, heads=2)


def _bpe_tokenizer(specials: list[str], byte_level: bool):
    """A BPE tokenizer trained on CORPUS; specials get ids 0..len(specials)-1 in order."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE(unk_token=None if byte_level else "<unk>"))
    if byte_level:  # GPT-2 style
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:  # sentencepiece style, as NLLB
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        alphabet = []
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                                        initial_alphabet=alphabet))
    return tok


def make_tiny_vit_gpt2_dir(path: Path, seed: int = 0) -> Path:
    """A VisionEncoderDecoderModel (tiny ViT + tiny GPT-2), ViTImageProcessor and a byte-level
    BPE tokenizer: the layout of nlpconnect/vit-gpt2-image-captioning."""
    from transformers import (GPT2Config, PreTrainedTokenizerFast, ViTConfig, ViTImageProcessor,
                              VisionEncoderDecoderConfig, VisionEncoderDecoderModel)
    torch.manual_seed(seed)
    tok = _bpe_tokenizer(["<|endoftext|>"], byte_level=True)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   unk_token="<|endoftext|>", model_max_length=64)
    enc = ViTConfig(hidden_size=_TINY["hidden"], intermediate_size=_TINY["ffn"], num_hidden_layers=_TINY["layers"],
                    num_attention_heads=_TINY["heads"], image_size=IMAGE_SIZE, patch_size=16)
    dec = GPT2Config(vocab_size=tok.get_vocab_size(), n_embd=_TINY["hidden"], n_layer=_TINY["layers"],
                     n_head=_TINY["heads"], n_positions=64, bos_token_id=0, eos_token_id=0)
    cfg = VisionEncoderDecoderConfig.from_encoder_decoder_configs(enc, dec)
    # nlpconnect's checkpoint starts decoding at GPT-2's <|endoftext|> and pads with it too
    cfg.decoder_start_token_id = cfg.pad_token_id = cfg.eos_token_id = 0
    model = VisionEncoderDecoderModel(config=cfg)
    model.generation_config.min_new_tokens = 2  # a random decoder often stops at once: keep captions non-empty
    model.save_pretrained(path)
    ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(path)
    fast.save_pretrained(path)
    return path


def make_tiny_blip_dir(path: Path, seed: int = 0) -> Path:
    """A BlipForConditionalGeneration with a WordPiece tokenizer ([DEC] as BOS, [SEP] as EOS),
    saved with BlipProcessor: the layout of Salesforce/blip-image-captioning-base."""
    from transformers import (BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor,
                              BlipProcessor)
    torch.manual_seed(seed)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
    words = sorted({w for line in CORPUS for w in line.split()} | {ch for line in CORPUS for ch in line if ch != " "})
    vocab = {w: i for i, w in enumerate(specials + words)}
    tok = BertTokenizer(vocab=vocab, bos_token="[DEC]", model_max_length=64)
    text = dict(vocab_size=len(specials) + len(words), hidden_size=_TINY["hidden"], intermediate_size=_TINY["ffn"],
                num_hidden_layers=_TINY["layers"], num_attention_heads=_TINY["heads"], max_position_embeddings=64,
                encoder_hidden_size=_TINY["hidden"], pad_token_id=0, sep_token_id=3, bos_token_id=5, eos_token_id=3)
    vision = dict(hidden_size=_TINY["hidden"], intermediate_size=_TINY["ffn"], num_hidden_layers=_TINY["layers"],
                  num_attention_heads=_TINY["heads"], image_size=IMAGE_SIZE, patch_size=16)
    model = BlipForConditionalGeneration(BlipConfig(text_config=text, vision_config=vision, projection_dim=16))
    with torch.no_grad():  # steer the random decoder away from special tokens, so captions are not empty
        model.text_decoder.cls.predictions.bias[:len(specials)] = -1e4
    model.save_pretrained(path)
    image_processor = BlipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    BlipProcessor(image_processor=image_processor, tokenizer=tok).save_pretrained(path)
    return path


def make_tiny_nllb_dir(path: Path, seed: int = 0) -> Path:
    """An M2M100ForConditionalGeneration with an NllbTokenizer whose vocabulary holds NLLB's
    200 language codes (eng_Latn, zho_Hans, ...) as special tokens, as the real checkpoint's does."""
    from transformers import M2M100Config, M2M100ForConditionalGeneration, NllbTokenizer
    torch.manual_seed(seed)
    tok = _bpe_tokenizer(["<s>", "<pad>", "</s>", "<unk>"], byte_level=False)
    state = json.loads(tok.to_str())["model"]
    nllb = NllbTokenizer(vocab=state["vocab"], merges=[tuple(m) for m in state["merges"]], model_max_length=64)
    cfg = M2M100Config(vocab_size=len(nllb), d_model=_TINY["hidden"], encoder_layers=_TINY["layers"],
                       decoder_layers=_TINY["layers"], encoder_attention_heads=_TINY["heads"],
                       decoder_attention_heads=_TINY["heads"], encoder_ffn_dim=_TINY["ffn"],
                       decoder_ffn_dim=_TINY["ffn"], max_position_embeddings=64,
                       bos_token_id=0, pad_token_id=1, eos_token_id=2, decoder_start_token_id=2)
    M2M100ForConditionalGeneration(cfg).save_pretrained(path)
    nllb.save_pretrained(path)
    return path


def _spm_model(prefix: Path, lines: list[str]) -> Path:
    import sentencepiece as spm
    prefix.parent.mkdir(parents=True, exist_ok=True)
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_prefix=str(prefix), vocab_size=60,
                                   model_type="unigram", hard_vocab_limit=False, character_coverage=1.0,
                                   minloglevel=2)
    return prefix.with_suffix(".model")


def make_tiny_marian_dir(path: Path, source: str = "zh", target: str = "en", seed: int = 0,
                         latin_only: bool = False) -> Path:
    """A MarianMTModel with MarianTokenizer (source.spm, target.spm, shared vocab.json with
    </s>=0, <unk>=1 and <pad> last, as Helsinki-NLP's opus-mt checkpoints).
    latin_only: bias the output towards Latin-letter pieces, so "translations" contain no CJK."""
    import sentencepiece as spm
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer
    torch.manual_seed(seed)
    work = Path(tempfile.mkdtemp(prefix="tiny-marian-spm-"))
    models = {side: _spm_model(work / side, CORPUS) for side in ("source", "target")}
    pieces = []
    for m in models.values():
        sp = spm.SentencePieceProcessor(model_file=str(m))
        pieces += [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    vocab = {"</s>": 0, "<unk>": 1}
    for p in pieces:
        vocab.setdefault(p, len(vocab))
    vocab["<pad>"] = len(vocab)
    (work / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    tok = MarianTokenizer(source_spm=str(models["source"]), target_spm=str(models["target"]),
                          vocab=str(work / "vocab.json"), source_lang=source, target_lang=target,
                          model_max_length=64)
    cfg = MarianConfig(vocab_size=len(vocab), d_model=_TINY["hidden"], encoder_layers=_TINY["layers"],
                       decoder_layers=_TINY["layers"], encoder_attention_heads=_TINY["heads"],
                       decoder_attention_heads=_TINY["heads"], encoder_ffn_dim=_TINY["ffn"],
                       decoder_ffn_dim=_TINY["ffn"], max_position_embeddings=64, pad_token_id=vocab["<pad>"],
                       eos_token_id=0, decoder_start_token_id=vocab["<pad>"], forced_eos_token_id=0)
    model = MarianMTModel(cfg)
    if latin_only:
        latin = [i for piece, i in vocab.items() if piece.strip("\u2581").isascii() and piece.strip("\u2581").isalpha()]
        with torch.no_grad():
            model.final_logits_bias[:, 1:] = -1e4  # </s> (id 0) stays allowed
            model.final_logits_bias[:, latin] = 0.0
    model.save_pretrained(path)
    tok.save_pretrained(path)
    shutil.rmtree(work, ignore_errors=True)
    return path

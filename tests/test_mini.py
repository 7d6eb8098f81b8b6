"""The mini-CLIP model, tokenizer, checkpoint format and Shapes data (CPU, random weights)."""
from __future__ import annotations

import pytest
import torch

from core.models import load_encoder
from core.models.mini import (BOS, EOS, PAD, SPECIALS, UNK, MiniCLIP, MiniConfig, Tokenizer, load_checkpoint, save_checkpoint)
from core.settings import pick_runtime
from core.lab.shapes import ShapesConfig, class_prompts, make_splits

CORPUS = ["a large red circle on the left", "左边有一个大的红色圆形", "a photo of a blue square", "蓝色正方形的照片"]


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.build(CORPUS)


def _ids(tok: Tokenizer, words) -> list[int]:
    return [tok.vocab.index(w) for w in words]


def test_tokenizer_english_is_lowercased_words_without_punctuation(tokenizer):
    row = tokenizer.encode(["A Large RED circle, on the LEFT!"], 16)[0].tolist()
    assert row[:9] == [BOS] + _ids(tokenizer, "a large red circle on the left".split()) + [EOS]
    assert row[9:] == [PAD] * 7


def test_tokenizer_chinese_is_one_token_per_character(tokenizer):
    row = tokenizer.encode(["红色圆形。"], 8)[0].tolist()
    assert row == [BOS] + _ids(tokenizer, list("红色圆形")) + [EOS, PAD, PAD]


def test_tokenizer_mixed_and_unknown(tokenizer):
    row = tokenizer.encode(["red 圆形 zebra 猫"], 10)[0].tolist()
    assert row[:7] == [BOS] + _ids(tokenizer, ["red", "圆", "形"]) + [UNK, UNK, EOS]


def test_tokenizer_truncation_keeps_eos_and_empty_text(tokenizer):
    rows = tokenizer.encode(["a " * 50, ""], 6)
    assert rows[0].tolist() == [BOS] + _ids(tokenizer, ["a"]) * 4 + [EOS]
    assert rows[1].tolist() == [BOS, EOS, PAD, PAD, PAD, PAD]


def test_tokenizer_rejects_vocab_without_specials():
    with pytest.raises(ValueError, match="must start with"):
        Tokenizer(["a", "b"])
    assert Tokenizer.build(["x y y"], min_count=2).vocab == list(SPECIALS) + ["y"]


def _model(tokenizer, text_encoder="transformer", seed=0) -> MiniCLIP:
    torch.manual_seed(seed)
    cfg = MiniConfig(image_size=32, embed_dim=48, text_encoder=text_encoder, text_width=64, text_layers=1,
                     text_heads=2, context_length=16, vocab_size=len(tokenizer))
    return MiniCLIP(cfg).eval()


@pytest.mark.parametrize("text_encoder", ["transformer", "lstm"])
def test_checkpoint_round_trip_through_load_encoder(tmp_path, tokenizer, text_encoder):
    model = _model(tokenizer, text_encoder)
    path = save_checkpoint(tmp_path / "m.pt", model, tokenizer, "unit", {"note": "test"})
    raw = torch.load(path, weights_only=True)
    assert raw["kind"] == "mini-clip" and raw["format_version"] == 1 and raw["vocab"] == tokenizer.vocab
    assert raw["config"]["text_encoder"] == text_encoder and raw["meta"] == {"note": "test"}

    enc = load_encoder(f"mini:{path}", pick_runtime("cpu"))
    assert enc.model_id.startswith("mini:unit-") and enc.dim == 48 and enc.multilingual
    assert enc.logit_scale == pytest.approx(1 / 0.07, rel=1e-4)
    items = make_splits(ShapesConfig(4, 0, 0))["train"]
    images = [it.render(40) for it in items]  # not the model's size: preprocess resizes
    img, txt = enc.encode_images(images), enc.encode_texts(CORPUS + ["未知 words"])
    assert img.shape == (4, 48) and txt.shape == (5, 48) and img.dtype == torch.float32
    assert torch.allclose(img.norm(dim=1), torch.ones(4), atol=1e-5)
    assert torch.allclose(txt.norm(dim=1), torch.ones(5), atol=1e-5)
    assert torch.equal(img, enc.encode_images(images)) and torch.equal(txt, enc.encode_texts(CORPUS + ["未知 words"]))
    # the loaded model is the saved one: same text features as the in-memory model
    with torch.inference_mode():
        direct = torch.nn.functional.normalize(model.encode_text(tokenizer.encode(CORPUS, 16)), dim=-1)
    assert torch.allclose(direct, txt[:4], atol=1e-5)
    # a batch of texts gives the same features as one text at a time (padding never leaks in)
    assert torch.allclose(enc.encode_texts(CORPUS[1:2]), txt[1:2], atol=1e-5)


def test_plain_pt_path_is_recognised_as_mini(tmp_path, tokenizer):
    path = save_checkpoint(tmp_path / "other_name.pt", _model(tokenizer), tokenizer, "", {})
    enc = load_encoder(str(path), pick_runtime("cpu"))
    assert enc.model_id.startswith("mini:other_name-")


def test_quantised_storage_is_small_and_close(tmp_path, tokenizer):
    model = _model(tokenizer)
    full = save_checkpoint(tmp_path / "f.pt", model, tokenizer, "q", {})
    q4 = save_checkpoint(tmp_path / "q4.pt", model, tokenizer, "q", {}, bits=4)
    q8 = save_checkpoint(tmp_path / "q8.pt", model, tokenizer, "q", {}, bits=8)
    assert q4.stat().st_size < 0.2 * full.stat().st_size < q8.stat().st_size
    ref = model.state_dict()["visual.layer4.1.conv2.weight"]
    for path, tol in ((q4, 0.08), (q8, 0.005)):
        got = load_checkpoint(path)[0].state_dict()["visual.layer4.1.conv2.weight"]
        assert got.dtype == torch.float32 and (got - ref).abs().max() <= tol * ref.abs().max()


def test_wrong_files_give_clear_errors(tmp_path, tokenizer):
    torch.save({"kind": "something-else"}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not a mini-CLIP checkpoint"):
        load_checkpoint(tmp_path / "x.pt")
    with pytest.raises(ValueError, match="text_encoder"):
        MiniCLIP(MiniConfig(text_encoder="gru", vocab_size=10))


def test_shapes_are_deterministic_and_captioned_in_both_languages():
    a, b = make_splits(ShapesConfig(20, 5, 5, seed=3)), make_splits(ShapesConfig(50, 5, 5, seed=3))
    assert a["test"] == b["test"] and a["val"] == b["val"]  # growing train never moves the test set
    assert a["train"] != make_splits(ShapesConfig(20, 5, 5, seed=4))["train"]
    item = a["test"][0]
    assert item.render(48).tobytes() == item.render(48).tobytes() and item.render(48).size == (48, 48)
    assert item.colour in item.caption("en") and item.shape in item.caption("en")
    assert any("\u4e00" <= ch <= "\u9fff" for ch in item.caption("zh"))
    names, prompts = class_prompts("shape", "zh")
    assert len(names) >= 4 and prompts[0] == "圆形的照片"

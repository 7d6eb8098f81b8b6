"""Text encoding against the reference implementations: the OpenAI-CLIP trimmed text encoder vs
`clip.tokenize` + `model.encode_text` (id 0, "!", is a real token: trimming must keep the EOT),
and a Hugging Face folder whose tokenizer has no model_max_length (the cap is the model's positions)."""
from __future__ import annotations

import json

import clip
import pytest
import torch
import torch.nn.functional as F

from core.models import load_encoder
from core.settings import pick_runtime
from tiny_models import make_tiny_hf_clip_dir

CPU = pick_runtime("cpu")
EOT = 49407

# Texts whose CLIP tokenization holds id 0 ("!" fused with what follows) before the EOT.
ZERO_ID_TEXTS = ["wow!😀 a dog", "wow!😀", "!😀", "hi!😀!😀!😀", "yes!💯 great", "good!👍", "omg!🔥🔥"]
PUNCTUATION = ["hello!!! ???", "!!", "!", "...", "?!", "a cat!", "wow! 😀", "🐶🐱", "(a) [b] {c}"]
SHORT = ["a", "a photo of a cat"]
LONG = ["x " * 200,                                   # truncated to 77 tokens
        "wow!😀 " * 40,                               # truncated, with id 0 all through it
        "a photo of a dog on the beach, " * 12]


def reference(encoder, texts):
    """The `clip` package's own path: full 77-token context, EOT read at tokens.argmax(-1)."""
    with torch.inference_mode():
        return F.normalize(encoder.model.encode_text(clip.tokenize(texts, truncate=True)).float(), dim=-1)


def assert_rows_match(got, want):
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
    assert (F.cosine_similarity(got, want, dim=-1) > 0.9999).all()


def test_zero_id_texts_really_hold_id_0_before_the_eot():
    tokens = clip.tokenize(ZERO_ID_TEXTS + LONG[1:2], truncate=True)
    eot = tokens.argmax(dim=-1)
    assert (tokens[torch.arange(len(tokens)), eot] == EOT).all()
    for row, end in zip(tokens, eot):
        assert (row[1:end] == 0).any(), row[:end + 1].tolist()


@pytest.mark.parametrize("batch", [
    ZERO_ID_TEXTS,                                    # id-0 texts alone: one of them is the longest
    ZERO_ID_TEXTS + PUNCTUATION,
    PUNCTUATION + ZERO_ID_TEXTS + SHORT + LONG,       # mixed with short and truncated long texts
    ["a", "!!", "wow!😀 a dog"],                       # the id-0 text is the longest of its batch
], ids=["zero-id", "zero-id+punctuation", "mixed", "short+zero-id"])
def test_trimmed_clip_text_encoder_matches_clip_encode_text(encoder, batch):
    assert_rows_match(encoder.encode_texts(batch), reference(encoder, batch))


def test_each_text_alone_equals_it_in_a_batch(encoder):
    texts = ZERO_ID_TEXTS + PUNCTUATION + SHORT + LONG
    batch = encoder.encode_texts(texts)
    alone = torch.cat([encoder.encode_texts([t]) for t in texts])
    assert_rows_match(alone, batch)
    assert_rows_match(alone, reference(encoder, texts))


@pytest.fixture(scope="module")
def hf_dir_without_max_length(tmp_path_factory):
    """A tiny HF CLIP (max_position_embeddings 32) whose tokenizer_config.json has no model_max_length."""
    path = make_tiny_hf_clip_dir(tmp_path_factory.mktemp("hf") / "tiny-hf-no-max-len")
    assert json.loads((path / "config.json").read_text())["text_config"]["max_position_embeddings"] == 32
    config_file = path / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config.pop("model_max_length", None)
    config_file.write_text(json.dumps(config, indent=2))
    return path


def test_hf_long_query_is_capped_at_the_model_positions(hf_dir_without_max_length):
    enc = load_encoder(str(hf_dir_without_max_length), CPU)
    tok = enc.processor.tokenizer
    assert tok.model_max_length > 10**6           # transformers' "no limit" sentinel: the tokenizer gives no cap
    words = ("a photo of a cat on the beach people " * 13).split()[:100]
    query = " ".join(words)
    assert len(tok(query)["input_ids"]) > 32      # longer than the model's positions
    got = enc.encode_texts([query])               # used to fail: position ids beyond the embedding table
    assert got.shape == (1, enc.dim) and torch.isfinite(got).all()
    truncated = " ".join(words[:32])              # word-level tokenizer: one token per word
    assert len(tok(truncated)["input_ids"]) == 32
    assert torch.allclose(got, enc.encode_texts([truncated]), atol=1e-6)
    ids = tok([query], return_tensors="pt")["input_ids"][:, :32]
    with torch.inference_mode():
        out = enc.model.get_text_features(input_ids=ids, attention_mask=torch.ones_like(ids))
    want = F.normalize((out if isinstance(out, torch.Tensor) else out.pooler_output).float(), dim=-1)
    assert torch.allclose(got, want, atol=1e-5)

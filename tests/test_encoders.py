"""Encoders through the real loaders: tiny OpenAI-architecture CLIP files and tiny transformers folders."""
from __future__ import annotations

import shutil

import clip
import pytest
import torch

from core.models import registry as encoders
from core.errors import ModelUnavailableError, UnknownModelError
from core.models import load_encoder, openai_clip
from core.images import load_image
from core.settings import pick_runtime
from core_fixtures import SAMPLES
from tiny_models import make_tiny_chinese_clip_dir, make_tiny_hf_clip_dir, make_tiny_siglip_dir

CPU = pick_runtime("cpu")


@pytest.fixture(scope="module")
def images():
    return [load_image(SAMPLES / n) for n in ("cat_chelsea.jpg", "coffee.jpg", "rocket.jpg")]


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    return make_tiny_hf_clip_dir(tmp_path_factory.mktemp("hf") / "tiny-hf-clip")


def check_features(feats, n, dim):
    assert feats.shape == (n, dim) and feats.dtype == torch.float32 and feats.device.type == "cpu"
    assert torch.allclose(feats.norm(dim=-1), torch.ones(n), atol=1e-5)


def test_clip_file_shapes_normalisation_determinism(encoder, images):
    a = encoder.encode_images(images)
    check_features(a, 3, 32)
    assert torch.equal(a, encoder.encode_images(images))
    t = encoder.encode_texts(["a cat", "一杯咖啡", "a rocket"])
    check_features(t, 3, 32)
    assert encoder.encode_images([]).shape == (0, 32) and encoder.encode_texts([]).shape == (0, 32)


def test_batching_does_not_change_results(encoder, images):
    whole = encoder.encode_images(images * 3)
    encoder.batch_size, saved = 2, encoder.batch_size
    try:
        assert torch.allclose(whole, encoder.encode_images(images * 3), atol=1e-5)
    finally:
        encoder.batch_size = saved


def test_trimmed_text_encoder_matches_clip_exactly(encoder):
    texts = ["a", "a photo of a cat sitting on a red sofa in the sun", "一只猫", "x " * 200]
    tokens = clip.tokenize(texts, truncate=True)
    with torch.inference_mode():
        reference = torch.nn.functional.normalize(encoder.model.encode_text(tokens).float(), dim=-1)
    assert torch.allclose(encoder.encode_texts(texts), reference, atol=1e-5)


def test_hf_clip_directory(hf_dir, images):
    enc = load_encoder(str(hf_dir), CPU)
    assert enc.model_id == "hf-local:tiny-hf-clip" and enc.multilingual is False
    check_features(enc.encode_images(images), 3, 24)
    check_features(enc.encode_texts(["a cat", "红色圆形"]), 2, 24)
    assert torch.equal(enc.encode_texts(["a dog"]), enc.encode_texts(["a dog"]))


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(UnknownModelError, match="ViT-B/32") as err:
        load_encoder("ViT-Z/99", CPU)
    assert "available models" in str(err.value)


def test_directory_without_config_is_rejected(tmp_path):
    with pytest.raises(UnknownModelError, match="config.json"):
        load_encoder(str(tmp_path), CPU)


def test_not_a_checkpoint_file(tmp_path):
    bad = tmp_path / "weights.pt"
    torch.save({"hello": torch.zeros(2)}, bad)
    with pytest.raises(UnknownModelError, match="not an OpenAI CLIP checkpoint"):
        load_encoder(str(bad), CPU)


def test_offline_named_model_says_where_it_looked(tmp_path):
    with pytest.raises(ModelUnavailableError) as err:
        load_encoder("ViT-B/32", CPU, cache=tmp_path, offline=True)
    msg = str(err.value)
    assert "ViT-B/32" in msg and str(tmp_path) in msg and "--model" in msg


def test_hub_model_offline_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError) as err:
        load_encoder("OFA-Sys/chinese-clip-vit-base-patch16", CPU, cache=tmp_path)
    msg = str(err.value)
    assert "OFA-Sys/chinese-clip-vit-base-patch16" in msg and "HF_ENDPOINT" in msg and "save_pretrained" in msg


def test_mocked_download_fills_the_cache_once(tmp_path, monkeypatch, tiny_clip_path):
    calls = []

    def fake_download(url, root):
        calls.append(url)
        target = tmp_path / "clip" / url.rsplit("/", 1)[-1]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(tiny_clip_path, target)
        return str(target)
    monkeypatch.setattr(clip.clip, "_download", fake_download)
    monkeypatch.setattr(openai_clip, "openai_unreachable", lambda url: None)   # the host answers (mocked)
    first = load_encoder("ViT-B/32", CPU, cache=tmp_path)
    second = load_encoder("ViT-B/32", CPU, cache=tmp_path)
    assert len(calls) == 1 and calls[0].endswith("ViT-B-32.pt")
    assert first.model_id == second.model_id == "ViT-B/32"


def test_failed_download_is_a_clear_error(tmp_path, monkeypatch):
    def broken(url, root):
        raise OSError("Name or service not known")
    monkeypatch.setattr(clip.clip, "_download", broken)
    monkeypatch.setattr(openai_clip, "openai_unreachable", lambda url: None)   # the host answers (mocked)
    with pytest.raises(ModelUnavailableError, match="Could not download model RN50"):
        load_encoder("RN50", CPU, cache=tmp_path)


def test_fallback_uses_the_bundled_model_when_weights_are_missing(tmp_path, monkeypatch, tiny_clip_path):
    monkeypatch.setattr(encoders, "BUNDLED_MINI", tiny_clip_path)
    monkeypatch.setattr(encoders, "load_encoder", lambda name, *a, **k: (
        _raise(ModelUnavailableError("no ViT-B/32 here")) if name != "mini" else "the-mini-model"))
    enc, notice = encoders.load_encoder_with_fallback("ViT-B/32", CPU, tmp_path, offline=True)
    assert enc == "the-mini-model" and "no ViT-B/32 here" in notice and "mini" in notice


def _raise(e):
    raise e


def test_runtime_is_decided_in_one_place():
    rt = pick_runtime("cpu")
    assert rt.dtype == torch.float32 and not rt.is_cuda
    with pytest.raises(ValueError, match="expected auto, cpu"):
        pick_runtime("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            pick_runtime("cuda")
        assert pick_runtime("auto").device.type == "cpu"


def test_chinese_clip_directory_reads_chinese_natively(tmp_path, images):
    enc = load_encoder(str(make_tiny_chinese_clip_dir(tmp_path / "cn-clip")), CPU)
    assert enc.multilingual is True and enc.model_id == "hf-local:cn-clip"
    check_features(enc.encode_texts(["一只猫", "a photo of a cat", "红色圆形的照片"]), 3, 24)
    check_features(enc.encode_images(images), 3, 24)


def test_siglip_pads_to_max_length_so_batches_equal_singles(tmp_path, images):
    enc = load_encoder(str(make_tiny_siglip_dir(tmp_path / "siglip")), CPU)
    texts = ["a cat", "a red circle on the beach"]
    batch = enc.encode_texts(texts)
    singles = torch.cat([enc.encode_texts([t]) for t in texts])
    assert torch.allclose(batch, singles, atol=1e-5)
    check_features(enc.encode_images(images), 3, enc.dim)


@pytest.mark.parametrize("content", [b"garbage bytes, not a checkpoint", b"PK\x03\x04truncated zip"])
def test_garbage_checkpoint_file_is_a_clear_error(tmp_path, content):
    bad = tmp_path / "model.pt"
    bad.write_bytes(content)
    with pytest.raises(UnknownModelError, match="model.pt"):
        load_encoder(str(bad), CPU)


def test_different_weights_get_different_model_ids(tmp_path, tiny_clip_path):
    state = torch.load(tiny_clip_path, weights_only=True)
    state["ln_final.bias"] += 0.01          # a "fine-tune": same size, same first megabyte
    torch.save(state, tmp_path / "tiny_clip.pt")
    assert load_encoder(str(tmp_path / "tiny_clip.pt"), CPU).model_id != load_encoder(str(tiny_clip_path), CPU).model_id

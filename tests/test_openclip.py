"""OpenCLIP models (issue 22, item 2) through the registry's open_clip backend: tiny architectures built by
open_clip from config dicts, saved as a checkpoint file, a folder laid out as a hub repo and a hub cache,
and loaded through the real loader; compared with open_clip's own model, preprocess and tokenizer."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import core.models.hf as hf
import core.models.openclip as openclip
from core.errors import ModelUnavailableError, UnknownModelError
from core.images import load_image
from core.messages import localize
from core.library.search import SearchQuery
from core.models import load_encoder, resolve
from core.models.onnx_runtime import OnnxEncoder
from core.settings import pick_runtime
from core.workbench import build_workbench
from core_fixtures import SAMPLES
from test_ingest_cli import run_cli
from tiny_openclip import (ARCH, XLMR_ARCH, make_tiny_openclip_dir, make_tiny_openclip_file,
                           make_tiny_xlmr_openclip_file, put_in_hub_cache)

CPU = pick_runtime("cpu")
TEXTS = ["a photo of a cat", "一只猫", "x", "a dog on the beach " * 30]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("openclip")
    return {"file": make_tiny_openclip_file(root / "tiny.pt"), "dir": make_tiny_openclip_dir(root / "repo", seed=1),
            "xlmr": make_tiny_xlmr_openclip_file(root / "xlmr.pt", seed=2), "root": root}


@pytest.fixture(scope="module")
def images():
    return [load_image(SAMPLES / n) for n in ("cat_chelsea.jpg", "coffee.jpg", "rocket.jpg")]


def _online(monkeypatch):
    """Offline mode off for core's own hub rules (conftest sets it for every test); huggingface_hub itself
    stays offline, so a test that reached for the network would fail instead of downloading."""
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)


def _unit_rows(feats, n):
    assert feats.shape == (n, 32) and feats.dtype == torch.float32 and feats.device.type == "cpu"
    assert torch.allclose(feats.norm(dim=-1), torch.ones(n), atol=1e-5)


def test_a_checkpoint_with_its_architecture_is_open_clips_model(models, images, tmp_path):
    import open_clip
    enc = load_encoder(f"open_clip:{ARCH}/{models['file']}", CPU, cache=tmp_path)
    assert isinstance(enc, openclip.OpenClipEncoder) and enc.model_id.startswith(f"open_clip-file:{ARCH}/tiny-")
    assert enc.dim == 32 and enc.image_size == 32 and enc.multilingual is False
    _unit_rows(enc.encode_images(images), 3)
    _unit_rows(enc.encode_texts(TEXTS), 4)
    assert enc.encode_images([]).shape == (0, 32) and enc.encode_texts([]).shape == (0, 32)
    ref, _, ref_preprocess = open_clip.create_model_and_transforms(ARCH, pretrained=str(models["file"]))
    tokens = open_clip.get_tokenizer(ARCH)(TEXTS)   # its own tokenizer: 77 BPE ids, long texts cut
    assert torch.equal(enc.plan.tokens(TEXTS), tokens)
    pixels = torch.stack([ref_preprocess(im) for im in images])
    assert torch.equal(torch.stack([enc.preprocess(im) for im in images]), pixels)
    with torch.inference_mode():
        assert torch.allclose(enc.encode_texts(TEXTS), F.normalize(ref.eval().encode_text(tokens), dim=-1), atol=1e-5)
        assert torch.allclose(enc.encode_images(images), F.normalize(ref.encode_image(pixels), dim=-1), atol=1e-5)
    assert enc.logit_scale == pytest.approx(float(ref.logit_scale.detach().exp()))


def test_a_folder_laid_out_as_a_hub_repo_keeps_its_preprocess(models, images, tmp_path):
    assert resolve(str(models["dir"])) == ("open_clip", str(models["dir"]))   # open_clip_config.json, no config.json
    enc = load_encoder(str(models["dir"]), CPU, cache=tmp_path)
    same = load_encoder(f"open_clip:local-dir:{models['dir']}", CPU, cache=tmp_path)
    assert enc.model_id == same.model_id and enc.model_id.startswith("open_clip-local:repo-")
    assert enc.preprocess_cfg["mean"] == [0.5, 0.5, 0.5] and enc.preprocess_cfg["resize_mode"] == "squash"
    pixels = enc.preprocess(images[0].resize((64, 32)))
    assert pixels.shape == (3, 32, 32) and float(pixels.min()) >= -1.0   # squashed, not cropped; mean/std 0.5
    _unit_rows(enc.encode_images(images), 3)


def test_hf_hub_name_is_read_from_the_cache_without_network(models, tmp_path, monkeypatch):
    put_in_hub_cache(models["dir"], tmp_path, "test-org/tiny-openclip")
    _online(monkeypatch)   # online, but cached: the hub is never probed
    monkeypatch.setattr(hf, "hub_unreachable", lambda *a: pytest.fail("probed the hub for a cached model"))
    enc = load_encoder("open_clip:hf-hub:test-org/tiny-openclip", CPU, cache=tmp_path)
    local = load_encoder(str(models["dir"]), CPU, cache=tmp_path)
    assert enc.model_id == "open_clip:hf-hub:test-org/tiny-openclip"
    assert torch.equal(enc.encode_texts(TEXTS), local.encode_texts(TEXTS))


def test_a_pretrained_tag_fetches_its_hub_weights_and_preprocess(models, tmp_path, monkeypatch):
    import open_clip.pretrained as pretrained
    tag = pretrained._pcfg(hf_hub="test-org/tiny-tag/", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                           interpolation="bilinear", resize_mode="squash")
    monkeypatch.setitem(pretrained._PRETRAINED, ARCH, {"tiny_v1": tag})   # the registry's data, one entry more
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "open_clip_pytorch_model.bin").write_bytes(models["file"].read_bytes())   # no .safetensors twin
    put_in_hub_cache(repo, tmp_path, "test-org/tiny-tag")
    enc = load_encoder(f"open_clip:{ARCH}/Tiny-v1", CPU, cache=tmp_path, offline=True)   # open_clip's tag spelling
    assert enc.model_id == f"open_clip:{ARCH}/tiny_v1" and enc.preprocess_cfg["resize_mode"] == "squash"
    file = load_encoder(f"open_clip:{ARCH}/{models['file']}", CPU, cache=tmp_path)
    assert torch.equal(enc.encode_texts(TEXTS), file.encode_texts(TEXTS))   # same weights


def test_missing_weights_say_where_they_were_looked_for(tmp_path, monkeypatch):
    with pytest.raises(ModelUnavailableError) as err:
        load_encoder("open_clip:ViT-B-32/laion2b_s34b_b79k", CPU, cache=tmp_path, offline=True)
    text = str(err.value)
    assert "ViT-B-32/laion2b_s34b_b79k" in text and str(tmp_path) in text and "offline" in text
    assert "缓存" in localize(err.value, "zh")   # said in Chinese too
    _online(monkeypatch)
    monkeypatch.setattr(hf, "hub_unreachable", lambda *a: "[Errno 111] Connection refused")
    with pytest.raises(ModelUnavailableError, match=r"Cannot reach the Hugging Face hub.*Connection refused.*HF_ENDPOINT"):
        load_encoder("open_clip:hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", CPU, cache=tmp_path)


def test_unknown_architectures_and_tags_list_the_valid_ones(models, tmp_path):
    with pytest.raises(UnknownModelError, match=r"no architecture ViT-Q-99.*ViT-B-32.*xlm-roberta-base-ViT-B-32"):
        load_encoder("open_clip:ViT-Q-99/laion2b", CPU, cache=tmp_path)
    with pytest.raises(UnknownModelError, match=r"'laion9b' is neither.*laion2b_s34b_b79k"):
        load_encoder("open_clip:ViT-B-32/laion9b", CPU, cache=tmp_path)
    with pytest.raises(UnknownModelError, match="needs a pretrained tag"):
        load_encoder("open_clip:ViT-B-32", CPU, cache=tmp_path)
    with pytest.raises(UnknownModelError, match=f"does not load as {XLMR_ARCH}"):   # another architecture's weights
        load_encoder(f"open_clip:{XLMR_ARCH}/{models['file']}", CPU, cache=tmp_path)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint" * 10)
    with pytest.raises(UnknownModelError, match=f"garbage.pt does not load as {ARCH}"):
        load_encoder(f"open_clip:{ARCH}/{garbage}", CPU, cache=tmp_path)
    assert resolve("xlm-roberta-clip") == ("open_clip", "xlm-roberta-base-ViT-B-32/laion5b_s13b_b90k")


def test_the_models_suggested_for_chinese_are_open_clips_and_read_chinese():
    import open_clip
    for spec in openclip.CHINESE_MODELS:
        arch, tag = spec.split("/")
        assert open_clip.is_pretrained_cfg(arch, tag), spec
        assert openclip._reads_chinese(arch, open_clip.get_model_config(arch), None), spec
    english = open_clip.get_model_config("ViT-B-32")
    assert not openclip._reads_chinese("ViT-B-32", english, None)
    assert not openclip._reads_chinese("roberta-ViT-B-32", open_clip.get_model_config("roberta-ViT-B-32"), "roberta")


def test_a_multilingual_text_tower_reads_chinese_through_the_workbench(models, tmp_path):
    spec = f"open_clip:{XLMR_ARCH}/{models['xlmr']}"
    wb = build_workbench(spec, tmp_path / "lib", "cpu", offline=True, fallback=False, cache=tmp_path, runtime="torch")
    assert wb.encoder.multilingual and wb.encoder.model_id.startswith(f"open_clip-file:{XLMR_ARCH}/")
    report = wb.add([SAMPLES / n for n in ("cat_chelsea.jpg", "coffee.jpg", "rocket.jpg")])
    assert len(report.added) == 3
    result = wb.search(SearchQuery(text="一只猫", k=2))
    assert result.text_used == "一只猫" and result.note is None and len(result.hits) == 2   # read as it is
    top, note = wb.classify(load_image(SAMPLES / "cat_chelsea.jpg"), "猫, 狗, 红色圆形", lang="zh", top_k=3)
    assert note is None and sorted(label for label, _ in top) == ["狗", "猫", "红色圆形"]
    assert sum(p for _, p in top) == pytest.approx(1.0, abs=1e-4)


def test_an_english_open_clip_model_still_gets_translation(models, tmp_path):
    wb = build_workbench(f"open_clip:{ARCH}/{models['file']}", tmp_path / "lib", "cpu", offline=True,
                         fallback=False, cache=tmp_path, runtime="torch")
    assert not wb.encoder.multilingual
    text, note = wb.plan_query("一只猫")
    assert note is not None   # no translator here: said so, instead of silently sending Chinese to an English model


def test_nllb_tokenizers_are_told_each_texts_language(tmp_path):
    from open_clip.tokenizer import HFTokenizer
    from transformers import NllbTokenizer
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "▁": 4, "a": 5, "c": 6, "t": 7, "一": 8, "只": 9, "猫": 10}
    NllbTokenizer(vocab=vocab, merges=[]).save_pretrained(tmp_path)
    tokens = openclip._Tokens(HFTokenizer(str(tmp_path), context_length=8))
    hf_tok = tokens.tokenizer.tokenizer
    ids = tokens(["a cat", "一只猫", "cat"])
    assert ids.shape == (3, 8) and ids.dtype == torch.int64
    assert hf_tok.convert_ids_to_tokens(ids[:, 0].tolist()) == ["eng_Latn", "zho_Hans", "eng_Latn"]


def test_onnx_export_matches_torch_and_a_restart_skips_the_torch_weights(models, images, tmp_path, monkeypatch):
    for spec in (f"open_clip:{ARCH}/{models['file']}", f"open_clip:{XLMR_ARCH}/{models['xlmr']}"):
        torch_enc = load_encoder(spec, CPU, cache=tmp_path)
        onnx_enc = load_encoder(spec, "cpu", "onnx", cache=tmp_path)
        assert isinstance(onnx_enc, OnnxEncoder) and onnx_enc.runtime_note is None
        assert onnx_enc.model_id == torch_enc.model_id and onnx_enc.multilingual == torch_enc.multilingual
        assert (onnx_enc.encode_texts(TEXTS) - torch_enc.encode_texts(TEXTS)).abs().max() < 1e-5
        assert (onnx_enc.encode_images(images) - torch_enc.encode_images(images)).abs().max() < 1e-5
        with monkeypatch.context() as m:
            m.setattr(openclip, "_build", lambda *a: pytest.fail("loaded the torch weights again"))
            again = load_encoder(spec, "cpu", "onnx", cache=tmp_path)
        assert again.folder == onnx_enc.folder and again.multilingual == torch_enc.multilingual
        assert torch.equal(again.encode_texts(TEXTS), onnx_enc.encode_texts(TEXTS))


def test_the_cli_takes_open_clip_names(models, tmp_path):
    put_in_hub_cache(models["dir"], tmp_path / "cache", "test-org/tiny-openclip")
    env = {"CLIP_WB_CACHE": str(tmp_path / "cache")}
    common = ["--model", "open_clip:hf-hub:test-org/tiny-openclip", "--library", str(tmp_path / "lib"),
              "--offline", "--no-fallback", "--runtime", "torch"]
    out = run_cli("index", str(SAMPLES), *common, "--quiet", env_extra=env)
    assert out.returncode == 0, out.stderr
    out = run_cli("search", "a cat", *common, "-k", "2", env_extra=env)
    assert out.returncode == 0, out.stderr
    assert len([line for line in out.stdout.splitlines() if ".jpg" in line]) == 2
    missing = run_cli("search", "a cat", "--model", "open_clip:ViT-B-32/laion2b_s34b_b79k", "--offline",
                      "--no-fallback", "--library", str(tmp_path / "lib2"), env_extra=env)
    assert missing.returncode == 2 and "laion/CLIP-ViT-B-32-laion2B-s34B-b79K" in missing.stderr   # the hub repo


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fp16_on_cuda_matches_fp32_and_returns_cpu_float32(models, images, tmp_path):
    for spec in (f"open_clip:{ARCH}/{models['file']}", f"open_clip:{XLMR_ARCH}/{models['xlmr']}"):
        cpu = load_encoder(spec, CPU, cache=tmp_path)
        gpu = load_encoder(spec, pick_runtime("cuda", "auto"), cache=tmp_path)   # auto on CUDA: torch + fp16
        assert gpu.runtime.engine == "torch" and next(gpu.model.parameters()).dtype == torch.float16
        for a, b in ((cpu.encode_images(images), gpu.encode_images(images)),
                     (cpu.encode_texts(TEXTS), gpu.encode_texts(TEXTS))):
            assert b.dtype == torch.float32 and b.device.type == "cpu"
            assert torch.nn.functional.cosine_similarity(a, b).min() > 0.99

"""ONNX Runtime encoders (issue 12): exported through the real export path from tiny CLIPs, the
same outputs as torch, exported once per fingerprint, int8 only after an agreement check, and
the start-up and query paths that skip work they do not need."""
from __future__ import annotations

import os

import pytest
import torch
from PIL import Image

import core.models.fingerprint as fingerprint
import core.models.openai_clip as openai_clip
from core.errors import ModelUnavailableError
from core.library.ingest import Upload, ingest, open_library
from core.library.int8check import Int8Policy, check_int8
from core.library.search import Searcher, SearchQuery
from core.models import load_encoder
from core.models.onnx_runtime import OnnxEncoder
from core.settings import pick_runtime
from core_fixtures import distinct_pngs
from test_ingest_cli import run_cli
from tiny_models import CLIP_KW, make_tiny_clip_file, make_tiny_hf_clip_dir

TEXTS = ["a cat", "a dog on the beach wow!😀", "x", "一只猫", "a " * 100 + "very long caption"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def onnx_enc(tiny_clip_path, cache):
    return load_encoder(str(tiny_clip_path), "cpu", "onnx", cache=cache)


def _images(n=5):
    return [Image.new("RGB", (40 + 7 * i, 30 + 3 * i), (40 * i, 200 - 30 * i, 90)) for i in range(n)]


def test_onnx_matches_torch_within_float_rounding(onnx_enc, encoder):
    assert isinstance(onnx_enc, OnnxEncoder) and onnx_enc.runtime.engine == "onnx"
    assert onnx_enc.model_id == encoder.model_id and onnx_enc.dim == encoder.dim   # one library for both
    assert (onnx_enc.encode_texts(TEXTS) - encoder.encode_texts(TEXTS)).abs().max() < 1e-5
    for text in TEXTS:   # trimmed single texts run at their own (shorter) length
        assert (onnx_enc.encode_texts([text]) - encoder.encode_texts([text])).abs().max() < 1e-5
    assert (onnx_enc.encode_images(_images()) - encoder.encode_images(_images())).abs().max() < 1e-5
    assert onnx_enc.logit_scale == pytest.approx(encoder.logit_scale)


def test_onnx_towers_give_clip_tokenize_and_encode_text_features(tmp_path):
    """A multi-head CLIP (the export splits heads itself): short queries of 3-8 words, one at a
    time as a search sends them, and a text truncated at 77 tokens give the features of the
    model's own path, clip.tokenize(truncate=True) + encode_text over all 77 positions, within
    float rounding; images those of encode_image."""
    import clip
    from core.models.onnx_runtime import export_towers
    torch.manual_seed(3)
    model = clip.model.CLIP(**{**CLIP_KW, "transformer_heads": 4, "vision_width": 128}).eval()   # 4 and 2 heads
    enc = openai_clip._onnx_clip(tmp_path / "onnx", export_towers(openai_clip.clip_onnx_towers(model), tmp_path / "onnx"),
                                 "multihead", pick_runtime("cpu", "onnx"))
    short = ["a cat on a sofa", "a red car parked near the old building", "mountains at sunset over a lake",
             "wow! a dog 😀 on the beach", "一只猫 在 沙发 上"]
    with torch.no_grad():
        want = torch.nn.functional.normalize(model.encode_text(clip.tokenize(short + TEXTS[-1:], truncate=True)), dim=-1)
        pixels = torch.stack([enc.preprocess(im) for im in _images(3)])
        want_images = torch.nn.functional.normalize(model.encode_image(pixels), dim=-1)
    for i, text in enumerate(short + TEXTS[-1:]):
        assert (enc.encode_texts([text])[0] - want[i]).abs().max() < 1e-5
    assert (enc.encode_texts(short) - want[:len(short)]).abs().max() < 1e-5
    assert (enc.encode_pixels(pixels) - want_images).abs().max() < 1e-5


def test_clip_tokens_match_the_clip_package_cut_after_the_last_eot():
    import clip
    for batch in (TEXTS, TEXTS[:1], ["wow!😀"], ["一只猫", "x"]):
        full = clip.tokenize(batch, truncate=True).long()
        assert torch.equal(openai_clip.clip_tokens(batch), full[:, :int(full.argmax(-1).max()) + 1])


def test_export_is_kept_per_fingerprint_and_redone_when_weights_change(tmp_path, monkeypatch):
    path = make_tiny_clip_file(tmp_path / "m.pt", seed=0)
    first = load_encoder(str(path), "cpu", "onnx", cache=tmp_path / "c")
    monkeypatch.setattr(openai_clip, "_build", lambda p: pytest.fail("loaded the torch weights again"))
    again = load_encoder(str(path), "cpu", "onnx", cache=tmp_path / "c")
    assert again.folder == first.folder and again.model_id == first.model_id
    monkeypatch.undo()
    make_tiny_clip_file(path, seed=1)   # same path, new weights
    os.utime(path, ns=(1, 1))
    changed = load_encoder(str(path), "cpu", "onnx", cache=tmp_path / "c")
    assert changed.folder != first.folder and changed.model_id != first.model_id
    torch_enc = load_encoder(str(path), "cpu", cache=tmp_path / "c")
    assert (changed.encode_texts(TEXTS[:3]) - torch_enc.encode_texts(TEXTS[:3])).abs().max() < 1e-5


def test_fingerprint_is_cached_by_size_and_mtime(tmp_path, monkeypatch):
    path = make_tiny_clip_file(tmp_path / "m.pt")
    digest = fingerprint.file_fingerprint(path, tmp_path)
    monkeypatch.setattr(fingerprint, "_sha256", lambda p: pytest.fail("hashed an unchanged file"))
    assert fingerprint.file_fingerprint(path, tmp_path) == digest
    monkeypatch.undo()
    os.utime(path, ns=(5, 5))
    assert fingerprint.file_fingerprint(path, tmp_path) == digest   # re-hashed: same bytes, same id


def test_runtime_choice():
    assert pick_runtime("cpu").engine == "torch"
    assert pick_runtime("cpu", "auto").engine == "onnx" and pick_runtime("cpu", "auto").engine_auto
    assert pick_runtime("cpu", "onnx-int8").engine == "onnx-int8"
    with pytest.raises(ValueError, match="expected one of auto, torch, onnx, onnx-int8"):
        pick_runtime("cpu", "tensorrt")


def test_backends_without_onnx_run_on_torch_and_say_so(tmp_path):
    hf = load_encoder(str(make_tiny_hf_clip_dir(tmp_path / "hf")), "cpu", "onnx", cache=tmp_path)
    assert hf.runtime.engine == "torch" and "runs on torch" in hf.runtime_note
    assert load_encoder(str(tmp_path / "hf"), "cpu", "auto", cache=tmp_path).runtime_note is None   # auto: quiet


def test_int8_reports_agreement_and_refuses_below_par(tiny_clip_path, cache, tmp_path):
    int8 = load_encoder(str(tiny_clip_path), "cpu", "onnx-int8", cache=cache)
    assert not (int8.folder / "text.int8.onnx").is_file()   # quantised on first use, not at load
    lib = open_library(tmp_path / "lib", int8)
    ingest(lib, int8, [Upload(f"{i}.png", d) for i, d in enumerate(distinct_pngs(12))])
    note = check_int8(int8, lib, Int8Policy(min_overlap=0.0, min_cosine=0.0))
    assert "top-10 overlap" in note and "12 images of this library" in note
    assert (int8.folder / "text.int8.onnx").is_file()
    with pytest.raises(ModelUnavailableError, match=r"need >= 1\.01.*--runtime onnx"):
        check_int8(int8, lib, Int8Policy(min_overlap=0.0, min_cosine=1.01))   # recalled, judged by the new bar


def test_cli_takes_runtime(tmp_path, tiny_clip_path):
    common = ["--model", str(tiny_clip_path), "--library", str(tmp_path / "lib"), "--runtime", "onnx"]
    out = run_cli("index", str(tmp_path), *common, "--quiet")
    assert out.returncode == 0, out.stderr
    bad = run_cli("search", "cat", "--model", str(tiny_clip_path), "--runtime", "tensorrt")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_no_rerank_pool_without_captions(tmp_path, encoder, monkeypatch):
    lib = open_library(tmp_path / "lib", encoder)
    ingest(lib, encoder, [Upload(f"{i}.png", d) for i, d in enumerate(distinct_pngs(5))])
    searcher = Searcher(encoder, lib)
    asked = []
    real = searcher.nearest
    monkeypatch.setattr(searcher, "nearest", lambda vec, k, t=None: asked.append(k) or real(vec, k, t))
    searcher.search(SearchQuery(text="a red square", k=3))
    ingest(lib, encoder, [Upload("c.png", distinct_pngs(1, seed=7)[0])],
           annotate=lambda ims: [{"caption_en": "a red square", "caption_zh": None}] * len(ims))
    searcher.search(SearchQuery(text="a red square", k=3))
    assert asked == [3, 200]   # the pool only once a caption exists

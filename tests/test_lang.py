"""Language detection, query preparation (what the CLIP text encoder actually reads),
and bilingual caption metadata."""
from __future__ import annotations

import pytest
from PIL import Image

from core.language.caption import Captioner, CaptionSettings
from core.errors import ModelUnavailableError
from core.models import load_encoder
from core.language.query import caption_metadata, prepare_query
from core.language.script import has_cjk, is_chinese, source_language
from core.settings import pick_runtime
from core.language.translate import TranslateSettings, Translator
from tests.hf_tiny_text import make_tiny_marian_dir, make_tiny_nllb_dir, make_tiny_vit_gpt2_dir
from tests.tiny_models import make_tiny_hf_clip_dir

pytestmark = pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")
CPU = pick_runtime("cpu")
FAST = TranslateSettings(num_beams=1, max_new_tokens=8)


@pytest.mark.parametrize("text,cjk,chinese,source", [
    ("一只猫", True, True, "zh"),
    ("一隻貓", True, True, "zh"),                       # traditional characters
    ("a photo of 一只猫 on the beach", True, True, "zh"),  # mixed: Chinese wins
    ("ねこ", True, False, None),                        # Japanese kana
    ("猫が好き", True, False, None),                    # Japanese: kanji + kana
    ("고양이", True, False, None),                      # Korean
    ("a cat", False, False, "en"),
    ("，。！「」、", False, False, None),              # CJK punctuation only
    ("１２３ 456 !?", False, False, None),             # digits and punctuation
    ("", False, False, None),
    ("   ", False, False, None),
])
def test_detection(text, cjk, chinese, source):
    assert has_cjk(text) is cjk
    assert is_chinese(text) is chinese
    assert source_language(text) == source


class FakeTranslator:
    def __init__(self, result="the cat who flies", error: Exception | None = None):
        self.result, self.error, self.calls = result, error, []

    def translate(self, texts, to):
        self.calls.append((list(texts), to))
        if self.error:
            raise self.error
        return [self.result for _ in texts]


@pytest.fixture(scope="module")
def clip_encoder(tmp_path_factory):
    """A tiny English-only transformers CLIP whose text tower records what it is given."""
    path = make_tiny_hf_clip_dir(tmp_path_factory.mktemp("clip") / "tiny-clip")
    enc = load_encoder(str(path), CPU, cache=tmp_path_factory.mktemp("cache"))
    assert enc.multilingual is False
    seen: list[str] = []
    real = enc._text_features

    def recording(texts):
        seen.extend(texts)
        return real(texts)
    enc._text_features = recording
    enc.seen = seen
    return enc


def _search_text(plan, encoder):
    encoder.seen.clear()
    encoder.encode_texts([plan.text])
    return list(encoder.seen)


def test_chinese_query_reaches_english_only_clip_in_english(clip_encoder):
    tr = FakeTranslator("The Cat Who Flies")
    plan = prepare_query("会飞的猫", clip_encoder, tr)
    assert _search_text(plan, clip_encoder) == ["The Cat Who Flies"]
    assert plan.translated and not plan.warning and plan.original == "会飞的猫"
    assert plan.note == "English query: 'The Cat Who Flies'"   # a Msg: English, and Chinese for the app
    assert "英文查询" in plan.note.text("zh") and "'The Cat Who Flies'" in plan.note.text("zh")
    assert tr.calls == [(["会飞的猫"], "en")]


def test_chinese_query_reaches_chinese_capable_clip_unchanged(clip_encoder, monkeypatch):
    monkeypatch.setattr(clip_encoder, "multilingual", True, raising=False)
    tr = FakeTranslator()
    plan = prepare_query("会飞的猫", clip_encoder, tr)
    assert _search_text(plan, clip_encoder) == ["会飞的猫"]
    assert not plan.translated and plan.note is None and tr.calls == []


def test_english_query_is_never_translated(clip_encoder):
    tr = FakeTranslator(error=AssertionError("must not be called"))
    plan = prepare_query("a red circle", clip_encoder, tr)
    assert _search_text(plan, clip_encoder) == ["a red circle"] and plan.note is None and tr.calls == []
    assert prepare_query("a red circle", clip_encoder, None).text == "a red circle"


def test_mixed_query_is_translated(clip_encoder):
    plan = prepare_query("a photo of 一只猫", clip_encoder, FakeTranslator("a photo of a cat"))
    assert plan.translated and plan.text == "a photo of a cat"


@pytest.mark.parametrize("translator", [None, FakeTranslator(error=ModelUnavailableError("no NLLB here")),
                                        FakeTranslator(result="  ")])
def test_untranslatable_chinese_query_goes_through_with_a_note(clip_encoder, translator):
    plan = prepare_query("会飞的猫", clip_encoder, translator)
    assert _search_text(plan, clip_encoder) == ["会飞的猫"]
    assert not plan.translated and plan.warning and "untranslated" in plan.note
    if translator is not None and translator.error:
        assert "no NLLB here" in plan.note


def test_real_missing_translator_does_not_break_queries(clip_encoder, tmp_path):
    tr = Translator("nllb", CPU, cache=tmp_path, offline=True)
    plan = prepare_query("会飞的猫", clip_encoder, tr)
    assert plan.warning and "facebook/nllb-200-distilled-600M" in plan.note
    assert prepare_query("a cat", clip_encoder, tr).text == "a cat"


def test_japanese_query_is_flagged_not_translated(clip_encoder):
    tr = FakeTranslator()
    plan = prepare_query("猫が好き", clip_encoder, tr)
    assert plan.text == "猫が好き" and plan.warning and tr.calls == []


def test_end_to_end_with_a_real_tiny_marian(clip_encoder, tmp_path):
    """The translator's real output, not a fake, is what the text tower reads."""
    tr = Translator(str(make_tiny_marian_dir(tmp_path / "opus-mt-zh-en", latin_only=True)), CPU, FAST)
    plan = prepare_query("会飞的猫", clip_encoder, tr)
    assert plan.translated and plan.text and not has_cjk(plan.text)
    assert _search_text(plan, clip_encoder) == [plan.text] == tr.translate("会飞的猫", to="en")


@pytest.fixture(scope="module")
def tiny_captioner(tmp_path_factory):
    path = make_tiny_vit_gpt2_dir(tmp_path_factory.mktemp("vg") / "vit-gpt2")
    return Captioner(str(path), CPU, CaptionSettings(num_beams=1, max_new_tokens=4))


def test_caption_metadata(tiny_captioner, tmp_path):
    images = [Image.new("RGB", (20, 20), c) for c in ("red", "blue", "green")]
    tr = Translator(str(make_tiny_nllb_dir(tmp_path / "nllb")), CPU, FAST)
    meta = caption_metadata(images, tiny_captioner, tr)
    assert len(meta) == 3 and all(set(m) == {"caption_en", "caption_zh"} for m in meta)
    assert [m["caption_en"] for m in meta] == tiny_captioner.caption(images)
    assert [m["caption_zh"] for m in meta] == tr.translate([m["caption_en"] for m in meta], to="zh")
    assert caption_metadata([], tiny_captioner, tr) == []


def test_caption_metadata_without_translator(tiny_captioner, tmp_path):
    images = [Image.new("RGB", (20, 20), "red")]
    assert caption_metadata(images, tiny_captioner, None)[0]["caption_zh"] is None
    missing = Translator("marian", CPU, cache=tmp_path, offline=True)
    (meta,) = caption_metadata(images, tiny_captioner, missing)
    assert meta["caption_en"] and meta["caption_zh"] is None
    assert "Helsinki-NLP/opus-mt-en-zh" in meta["caption_zh_error"]

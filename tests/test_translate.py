"""Translator: tiny NLLB (M2M100 + NllbTokenizer with language codes) and tiny Marian models
built locally and loaded through core.translate's real loaders."""
from __future__ import annotations

import threading
import time

import pytest

import core.language.translate as translate_mod
from core.__main__ import main as cli
from core.errors import ModelUnavailableError, UnknownModelError
from core.settings import pick_runtime
from core.language.translate import NLLB_CODES, TRANSLATORS, TranslateSettings, Translator
from tests.hf_tiny_text import make_tiny_marian_dir, make_tiny_nllb_dir

pytestmark = pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")

CPU = pick_runtime("cpu")
FAST = TranslateSettings(num_beams=1, max_new_tokens=8, batch_size=2)
ZH = ["会飞的猫", "一只猫", "海滩上的一只狗", "两个人骑自行车", "白色背景上的红色圆形"]


@pytest.fixture(scope="module")
def nllb_dir(tmp_path_factory):
    return make_tiny_nllb_dir(tmp_path_factory.mktemp("nllb") / "nllb-tiny")


@pytest.fixture(scope="module")
def marian_pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("marian")
    make_tiny_marian_dir(root / "opus-mt-zh-en", "zh", "en")
    make_tiny_marian_dir(root / "opus-mt-en-zh", "en", "zh", seed=1)
    return root


class GenerateSpy:
    """Wraps a loaded model's generate(): counts calls, keeps kwargs and outputs."""

    def __init__(self, translator: Translator, to: str, monkeypatch):
        self.calls: list[tuple[dict, object]] = []
        parts = translator._parts(to)
        self.tokenizer, real = parts.tokenizer, parts.model.generate

        def spy(**kw):
            out = real(**kw)
            self.calls.append((kw, out))
            return out
        monkeypatch.setattr(parts.model, "generate", spy)


@pytest.mark.parametrize("to,src", [("en", "zh"), ("zh", "en")])
def test_nllb_language_codes(nllb_dir, monkeypatch, to, src):
    tr = Translator(str(nllb_dir), CPU, FAST)
    spy = GenerateSpy(tr, to, monkeypatch)
    tr.translate(["会飞的猫"] if to == "en" else ["the cat who flies"], to=to)
    (kw, out), = spy.calls
    target_id = spy.tokenizer.convert_tokens_to_ids(NLLB_CODES[to])
    assert kw["forced_bos_token_id"] == target_id
    assert out[0, 1].item() == target_id  # after the decoder start token comes the target language code
    assert kw["input_ids"][0, 0].item() == spy.tokenizer.convert_tokens_to_ids(NLLB_CODES[src])
    assert target_id != spy.tokenizer.unk_token_id


def test_text_already_in_target_language_never_loads_a_model(nllb_dir, monkeypatch):
    loads = []
    monkeypatch.setattr(translate_mod, "load_pretrained", lambda *a: loads.append(a) or pytest.fail("loaded"))
    tr = Translator(str(nllb_dir), CPU, FAST)
    assert tr.translate(["a cat", "", "  ", "123 !?", "ねこ"], to="en") == ["a cat", "", "  ", "123 !?", "ねこ"]
    assert tr.translate(["一只猫", "一只 cat", "。"], to="zh") == ["一只猫", "一只 cat", "。"]
    assert tr.translate("a dog", to="en") == ["a dog"] and loads == []


def test_lru_cache_skips_the_model(nllb_dir, monkeypatch):
    tr = Translator(str(nllb_dir), CPU, TranslateSettings(num_beams=1, max_new_tokens=8, cache_size=2))
    spy = GenerateSpy(tr, "en", monkeypatch)
    first = tr.translate(["会飞的猫", "一只猫", "会飞的猫"], to="en")  # duplicate runs once
    assert len(spy.calls) == 1 and spy.calls[0][0]["input_ids"].shape[0] == 2 and first[0] == first[2]
    assert tr.translate(["一只猫", "会飞的猫"], to="en") == [first[1], first[0]] and len(spy.calls) == 1
    tr.translate(["两个人骑自行车"], to="en")  # evicts the least recently used ("一只猫")
    tr.translate(["会飞的猫"], to="en")
    assert len(spy.calls) == 2
    tr.translate(["一只猫"], to="en")
    assert len(spy.calls) == 3


def test_cache_can_be_disabled(nllb_dir, monkeypatch):
    tr = Translator(str(nllb_dir), CPU, TranslateSettings(num_beams=1, max_new_tokens=8, cache_size=0))
    spy = GenerateSpy(tr, "en", monkeypatch)
    tr.translate("一只猫", to="en")
    tr.translate("一只猫", to="en")
    assert len(spy.calls) == 2


@pytest.mark.parametrize("which", ["nllb", "marian"])
def test_batch_equals_single(nllb_dir, marian_pair, which):
    path = nllb_dir if which == "nllb" else marian_pair
    batch = Translator(str(path), CPU, FAST).translate(ZH, to="en")  # 3 batches of <= 2, sorted by length
    single = Translator(str(path), CPU, FAST)
    assert batch == [single.translate([t], to="en")[0] for t in ZH]
    assert len(batch) == len(ZH) and all(isinstance(t, str) for t in batch)


def test_marian_pair_folder_and_single_direction(marian_pair):
    both = Translator(str(marian_pair), CPU, FAST)
    assert both.kind == "marian" and both.can_translate_to("en") and both.can_translate_to("zh")
    assert len(both.translate(["the cat who flies"], to="zh")) == 1
    one = Translator(str(marian_pair / "opus-mt-zh-en"), CPU, FAST)
    assert one.can_translate_to("en") and not one.can_translate_to("zh")
    assert one.translate(["一只猫"], to="zh") == ["一只猫"]  # already Chinese: no model needed
    with pytest.raises(ModelUnavailableError, match="opus-mt"):
        one.translate(["a cat"], to="zh")


def test_loaded_once_across_threads(nllb_dir, monkeypatch):
    loads = []
    real = translate_mod.load_pretrained

    def counting(*a):
        loads.append(1)
        time.sleep(0.2)
        return real(*a)
    monkeypatch.setattr(translate_mod, "load_pretrained", counting)
    tr = Translator(str(nllb_dir), CPU, FAST)
    results = []
    threads = [threading.Thread(target=lambda t=t: results.append(tr.translate([t], to="en"))) for t in ZH]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(loads) == 1 and len(results) == len(ZH)


def test_unknown_names_and_bad_target(tmp_path):
    with pytest.raises(UnknownModelError) as e:
        Translator("google-translate", CPU)
    assert all(name in str(e.value) for name in TRANSLATORS)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UnknownModelError, match="opus-mt-zh-en"):
        Translator(str(tmp_path / "empty"), CPU)
    with pytest.raises(ValueError, match="'en', 'zh'"):
        Translator("nllb", CPU).translate(["一只猫"], to="fr")


@pytest.mark.parametrize("name,hub_id", [("nllb", "facebook/nllb-200-distilled-600M"),
                                          ("marian", "Helsinki-NLP/opus-mt-zh-en")])
def test_missing_hub_model_message_and_memo(tmp_path, monkeypatch, name, hub_id):
    calls = []
    real = translate_mod.load_pretrained
    monkeypatch.setattr(translate_mod, "load_pretrained", lambda *a: calls.append(1) or real(*a))
    tr = Translator(name, CPU, cache=tmp_path, offline=True)
    with pytest.raises(ModelUnavailableError) as e:
        tr.translate(["一只猫"], to="en")
    msg = str(e.value)
    for part in (name, hub_id, str(tmp_path), "offline", "save_pretrained", "https://hf-mirror.com", "online"):
        assert part in msg, part
    with pytest.raises(ModelUnavailableError):
        tr.load("en")  # remembered: an unreachable hub must not cost its retries on every query
    assert len(calls) == 1


def test_cli(nllb_dir, capsys):
    assert cli(["translate", "一只猫", "a cat", "--to", "en", "--translator", str(nllb_dir), "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[1] == "a cat"
    assert cli(["translate", "x", "--to", "zh", "--translator", "nope", "--device", "cpu"]) == 2 and "nllb" in capsys.readouterr().err

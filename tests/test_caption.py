"""Captioner: tiny ViT-GPT2 and BLIP built locally, loaded through core.caption's real loaders."""
from __future__ import annotations

import threading
import time

import pytest
import torch
from PIL import Image

import core.language.caption as caption_mod
from core.__main__ import main as cli
from core.language.caption import CAPTIONERS, Captioner, CaptionSettings
from core.errors import ModelUnavailableError, UnknownModelError
from core.settings import pick_runtime
from tests.hf_tiny_text import make_tiny_blip_dir, make_tiny_nllb_dir, make_tiny_vit_gpt2_dir

CPU = pick_runtime("cpu")


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-captioners")
    return {"vit-gpt2": make_tiny_vit_gpt2_dir(root / "vit-gpt2"), "blip": make_tiny_blip_dir(root / "blip")}


def _images(n: int) -> list[Image.Image]:
    """Different sizes and modes: the processor resizes, the captioner converts to RGB."""
    modes = ["RGB", "L", "RGBA", "P"]
    return [Image.new(modes[i % 4], (24 + 9 * i, 40 - 3 * i), color=(40 * i) % 255 if modes[i % 4] != "RGB"
                      else (40 * i % 255, 200, 90)) for i in range(n)]


@pytest.mark.parametrize("kind", ["vit-gpt2", "blip"])
def test_batch_equals_single_and_shapes(tiny_dirs, kind):
    cap = Captioner(str(tiny_dirs[kind]), CPU, CaptionSettings(num_beams=2, max_new_tokens=6, batch_size=3))
    images = _images(5)
    batch = cap.caption(images)  # two generate() calls: 3 + 2 images
    assert len(batch) == 5 and all(isinstance(c, str) and c for c in batch)
    assert batch == [cap.caption([im])[0] for im in images]


def test_model_follows_runtime_and_generation_settings(tiny_dirs, monkeypatch):
    cap = Captioner(str(tiny_dirs["vit-gpt2"]), CPU, CaptionSettings(num_beams=3, max_new_tokens=5))
    cap.load()
    model = cap._parts.get().model
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    seen = {}
    real = model.generate

    def recording(**kw):
        seen.update(kw)
        seen["grad"] = torch.is_grad_enabled()
        return real(**kw)
    monkeypatch.setattr(model, "generate", recording)
    cap.caption(_images(1))
    assert seen["num_beams"] == 3 and seen["max_new_tokens"] == 5 and seen["grad"] is False
    assert seen["pixel_values"].shape == (1, 3, 32, 32)


def test_lazy_and_loaded_once_across_threads(tiny_dirs, monkeypatch):
    loads = []
    real = caption_mod._LOADERS["vision-encoder-decoder"]

    def counting(*a):
        loads.append(1)
        time.sleep(0.2)  # widen the race window
        return real(*a)
    monkeypatch.setitem(caption_mod._LOADERS, "vision-encoder-decoder", counting)
    cap = Captioner(str(tiny_dirs["vit-gpt2"]), CPU, CaptionSettings(num_beams=1, max_new_tokens=3))
    assert not cap.loaded and cap.caption([]) == [] and not cap.loaded
    results = []
    threads = [threading.Thread(target=lambda: results.append(cap.caption(_images(2)))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(loads) == 1 and len(results) == 4 and all(r == results[0] for r in results)


def test_unknown_name_lists_valid_ones():
    with pytest.raises(UnknownModelError) as e:
        Captioner("vit-gpt3", CPU)
    assert all(name in str(e.value) for name in CAPTIONERS)


def test_missing_hub_model_says_what_to_do_and_is_remembered(tmp_path, monkeypatch):
    calls = []
    real = caption_mod.load_pretrained
    monkeypatch.setattr(caption_mod, "load_pretrained", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # honoured even though offline=False: no network attempt
    cap = Captioner("vit-gpt2", CPU, cache=tmp_path / "cache")
    start = time.perf_counter()
    with pytest.raises(ModelUnavailableError) as e:
        cap.caption(_images(1))
    msg = str(e.value)
    for part in ("vit-gpt2", "nlpconnect/vit-gpt2-image-captioning", str(tmp_path / "cache"), "offline",
                 "save_pretrained", "HF_ENDPOINT", "https://hf-mirror.com", "online"):
        assert part in msg, part
    with pytest.raises(ModelUnavailableError):
        cap.load()
    assert len(calls) == 1 and time.perf_counter() - start < 10


def test_local_directory_without_weights(tmp_path, tiny_dirs):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_bytes((tiny_dirs["blip"] / "config.json").read_bytes())
    with pytest.raises(ModelUnavailableError) as e:
        Captioner(str(broken), CPU).load()
    assert str(broken) in str(e.value) and "save_pretrained" in str(e.value)


def test_directory_of_another_model_kind(tmp_path):
    nllb = make_tiny_nllb_dir(tmp_path / "nllb")
    with pytest.raises(UnknownModelError, match="m2m_100"):
        Captioner(str(nllb), CPU).load()


def test_cli_reports_bad_images_and_goes_on(tiny_dirs, tmp_path, capsys):
    good = tmp_path / "good.png"
    Image.new("RGB", (30, 30), (255, 0, 0)).save(good)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    nllb = make_tiny_nllb_dir(tmp_path / "nllb")
    rc = cli(["caption", str(bad), str(good), "--captioner", str(tiny_dirs["vit-gpt2"]),
              "--translator", str(nllb), "--beams", "1", "--max-tokens", "4", "--device", "cpu"])
    out, err = capsys.readouterr()
    assert rc == 1 and "bad.jpg" in err and "not an image" in err
    assert "good.png" in out and "  en: " in out and "  zh: " in out


def test_cli_missing_model_exit_code(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CLIP_WB_CACHE", str(tmp_path))
    img = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(img)
    assert cli(["caption", str(img), "--translator", "none", "--offline", "--device", "cpu"]) == 2
    assert "nlpconnect/vit-gpt2-image-captioning" in capsys.readouterr().err

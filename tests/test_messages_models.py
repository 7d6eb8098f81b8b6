"""Core messages from the runtime, the model loader and the Learn tab's training say themselves
in Chinese for the app (core/messages.py) while str() stays the English the CLI prints."""
from __future__ import annotations

import re
import time

import pytest

from core.errors import DatasetError, LabelError, UnknownModelError
from core.lab.live import LiveConfig, LiveTrainer
from core.lab.pairs import load_pairsets
from core.messages import Msg, localize
from core.models import load_encoder
from core.settings import pick_runtime

CJK = re.compile(r"[\u4e00-\u9fff]")


def test_device_line_follows_the_language():
    line = pick_runtime("cpu", "torch").describe()
    assert isinstance(line, Msg) and isinstance(line, str)
    assert "threads" in line and str(line).startswith("CPU (")
    assert "线程" in localize(line, "zh") and "threads" in localize(line, "en")


def test_bad_device_is_a_value_error_in_both_languages():
    with pytest.raises(ValueError, match="expected auto, cpu") as err:
        pick_runtime("tpu")
    assert "'tpu'" in localize(err.value, "zh") and CJK.search(localize(err.value, "zh"))


def test_unknown_model_through_the_real_loader(tmp_path):
    missing = tmp_path / "nowhere" / "model.pt"
    with pytest.raises(UnknownModelError) as err:
        load_encoder(str(missing))
    assert str(err.value).startswith(f"Model {missing} not found; available models = ")
    zh = localize(err.value, "zh")
    assert zh.startswith(f"找不到模型 {missing}") and "ViT-B/32" in zh


def test_missing_flickr8k_folder(tmp_path):
    folder = tmp_path / "no-such-flickr8k"
    with pytest.raises(DatasetError) as err:
        load_pairsets(f"flickr8k:{folder}", 32, seed=0)
    assert str(err.value).startswith(f"No Flickr8k captions in {folder}; expected captions.txt")
    zh = localize(err.value, "zh")
    assert zh.startswith(f"{folder} 中没有 Flickr8k 描述") and "captions.txt" in zh


def test_learn_tab_label_error():
    from core.lab.learn import Learn
    with pytest.raises(LabelError, match="at least two class names") as err:
        Learn(wb=None).probe("cat")
    assert CJK.search(localize(err.value, "zh"))


def test_live_training_failure_keeps_both_languages(tmp_path):
    trainer = LiveTrainer(tmp_path / "runs")
    assert trainer.start(LiveConfig(data=f"flickr8k:{tmp_path / 'missing'}", epochs=1, device="cpu"))
    for _ in range(600):
        state = trainer.snapshot()
        if not state.running:
            break
        time.sleep(0.05)
    assert not state.running and state.error
    assert state.error.startswith("DatasetError: No Flickr8k captions")
    assert "没有 Flickr8k 描述" in localize(state.error, "zh")

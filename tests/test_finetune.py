"""Fine-tuning pretrained CLIPs (core/lab/finetune.py) with tiny models through the real loaders:
the `python -m core.train --init` contract, the adapter fold, the CSV pairs. CPU, seconds."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from core.errors import DatasetError
from core.lab.csvpairs import read_caption_csv
from core.lab.finetune import FinetuneConfig, _Adapted, _projections, _trainable
from core.lab.pairs import evaluate_pairs, load_pairsets
from cli.train import main
from core.models import load_encoder
from core.settings import pick_runtime
from tiny_models import make_tiny_hf_clip_dir

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 50), "blue": (30, 70, 225), "yellow": (240, 225, 20)}


def _pairs_csv(folder: Path, n: int = 24) -> Path:
    """n small images of four colours, captioned in English and Chinese, as a path,caption CSV."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["path,caption"]
    zh = {"red": "红色", "green": "绿色", "blue": "蓝色", "yellow": "黄色"}
    for i in range(n):
        name = list(COLOURS)[i % 4]
        Image.new("RGB", (40 + i, 36), COLOURS[name]).save(folder / f"im{i}.png")
        rows += [f"im{i}.png,a {name} picture number {i}", f"im{i}.png,{zh[name]}的图片"]
    (folder / "pairs.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder / "pairs.csv"


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory) -> Path:
    return make_tiny_hf_clip_dir(tmp_path_factory.mktemp("hf") / "tiny-hf")


def test_cli_fine_tunes_a_clip_file_on_csv_pairs_and_prints_recall_before_and_after(tiny_clip_path, tmp_path, capsys):
    csv_file = _pairs_csv(tmp_path / "photos")
    out = tmp_path / "run"
    assert main(["--init", str(tiny_clip_path), "--data", f"csv:{csv_file}", "--epochs", "2", "--out", str(out),
                 "--device", "cpu", "--batch-size", "8", "--lr", "1e-4"]) == 0
    printed = capsys.readouterr().out
    assert "before -> after" in printed and "captions_t2i_R@1" in printed and "real weights" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["sizes"] == {"train": 18, "val": 3, "test": 3} and len(report["log"]) == 2
    assert set(report["before"]) == set(report["after"]) and "captions_i2t_R@5" in report["after"]
    assert (out / "recall.png").stat().st_size > 0 and (out / "curves.png").is_file()
    assert "| mean_recall |" in (out / "report.md").read_text()
    # the saved model is an ordinary checkpoint: the real loader reads it and reproduces "after"
    tuned = load_encoder(report["checkpoint"], pick_runtime("cpu"))
    test = load_pairsets(f"csv:{csv_file}", 32, 0, splits=("test",))["test"]
    assert evaluate_pairs(tuned, test) == pytest.approx(report["after"], abs=1e-6)
    assert not torch.equal(tuned.encode_texts(["红色"]), load_encoder(str(tiny_clip_path), "cpu").encode_texts(["红色"]))


def test_cli_reports_a_bad_model_or_data_as_an_error(tmp_path, capsys):
    assert main(["--init", str(tmp_path / "missing.pt"), "--data", "shapes", "--out", str(tmp_path / "r")]) == 2
    assert "not found" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["clip", "hf"])
def test_adapter_folds_into_the_projection_exactly(kind, tiny_clip_path, tiny_hf):
    """The adapted encoder (towers + f + Wf) and the checkpoint with W folded in give the same features."""
    enc = load_encoder(str(tiny_clip_path if kind == "clip" else tiny_hf), pick_runtime("cpu"))
    adapted, params, _ = _trainable(enc, FinetuneConfig(mode="adapter"))
    assert isinstance(adapted, _Adapted) and not any(p.requires_grad for p in enc.model.parameters())
    torch.manual_seed(0)
    for p in params:
        p.data.normal_(0, 0.2)
    images = [Image.new("RGB", (50, 40), c) for c in COLOURS.values()]
    texts = ["a photo of a cat", "a red circle", "一只狗"]
    want_i, want_t = adapted.encode_images(images), adapted.encode_texts(texts)
    fold_image, fold_text = _projections(enc)
    fold_image(params[0].detach())
    fold_text(params[1].detach())
    assert torch.allclose(enc.encode_images(images), want_i, atol=1e-5)
    assert torch.allclose(enc.encode_texts(texts), want_t, atol=1e-5)


def test_adapter_run_on_a_hugging_face_model_starts_from_the_pretrained_model(tiny_hf, tmp_path):
    from core.lab.finetune import finetune
    cfg = FinetuneConfig(init=str(tiny_hf), data="shapes", mode="adapter", epochs=1, batch_size=16,
                         shapes_train=32, shapes_val=8, shapes_test=16, out=str(tmp_path / "run"), device="cpu",
                         hard_negatives=True, plots=False)
    report = finetune(cfg)
    assert Path(report["checkpoint"]).is_dir() and (Path(report["checkpoint"]) / "config.json").is_file()
    assert load_encoder(report["checkpoint"], "cpu").dim == 24
    assert report["log"][0]["train_loss"] > 0 and "en_shape_top1" in report["after"]


def test_caption_csv_rules(tmp_path):
    csv_file = _pairs_csv(tmp_path, n=4)
    data = read_caption_csv(csv_file)
    assert len(data.images) == 4 and len(data.captions) == 8 and data.text_to_image[:2] == [0, 0]
    (tmp_path / "bad.csv").write_text("im0.png,a cat\nnope.png,a dog\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="line 2.*not found"):
        read_caption_csv(tmp_path / "bad.csv")
    (tmp_path / "few.csv").write_text("im0.png,a cat\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="at least 3"):
        read_caption_csv(tmp_path / "few.csv")

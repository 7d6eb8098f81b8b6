"""Training the mini-CLIP: it learns, it resumes, it reads Flickr8k, it plots; and the bundled
model's card tells the truth about it. CPU only, nothing downloaded."""
from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest
import torch
from PIL import Image

from core.models import BUNDLED_MINI, load_encoder
from core.settings import pick_runtime
from core.lab.pairs import evaluate_pairs, load_pairsets
from cli.train import main
from core.lab.train import TrainConfig, contrastive_loss, train

TINY = TrainConfig(data="shapes", epochs=2, batch_size=32, image_size=32, shapes_train=64, shapes_val=24,
                   shapes_test=24, plots=False, seed=1)


def test_contrastive_loss_spreads_over_all_positives():
    def grad(positives):
        logits = torch.tensor([[9.0, 9.0, -9.0], [9.0, 9.0, -9.0], [-9.0, -9.0, 9.0]], requires_grad=True)
        contrastive_loss(logits, positives).backward()
        return logits.grad.abs().max()
    # images 0 and 1 both fit captions 0 and 1: once both count as positives, nothing pushes them apart
    assert grad(torch.tensor([[1, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=torch.bool)) < 1e-3
    assert grad(torch.eye(3, dtype=torch.bool)) > 0.1


def test_short_training_beats_chance_on_held_out_shapes(tmp_path):
    cfg = TrainConfig(data="shapes", epochs=4, batch_size=64, lr=1e-3, image_size=32, shapes_train=1024,
                      shapes_val=100, shapes_test=200, out=str(tmp_path / "run"), plots=False)
    run = train(cfg, progress=False)
    test = json.loads((run / "test_metrics.json").read_text())
    chance_r5 = 100 * 5 / cfg.shapes_test
    for lang in ("en", "zh"):
        assert test[f"{lang}_t2i_R@5"] >= 3 * chance_r5, test
        assert test[f"{lang}_i2t_R@5"] >= 3 * chance_r5, test
    assert test["en_colour_top1"] >= 2 * 100 / 8, test  # 8 colours
    log = json.loads((run / "log.json").read_text())
    assert [r["epoch"] for r in log] == [1, 2, 3, 4] and log[-1]["train_loss"] < log[0]["train_loss"]


class _Interrupt(Exception):
    pass


def _stop(row):
    raise _Interrupt(row["epoch"])


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """The same tiny run twice: straight through, and interrupted after epoch 1 then resumed."""
    root = tmp_path_factory.mktemp("runs")
    straight = train(replace(TINY, out=str(root / "straight"), plots=True), progress=False)
    with pytest.raises(_Interrupt):
        train(replace(TINY, out=str(root / "split")), progress=False, on_epoch=_stop)
    resumed = train(replace(TINY, out="ignored: the run keeps its folder"),
                    resume=str(root / "split" / "last.pt"), progress=False)
    return straight, resumed


def test_resume_continues_exactly_where_it_stopped(tiny_runs):
    straight, resumed = tiny_runs
    a, b = (json.loads((r / "log.json").read_text()) for r in (straight, resumed))
    assert resumed.name == "split" and [r["epoch"] for r in b] == [1, 2]
    assert b[1]["train_loss"] == pytest.approx(a[1]["train_loss"], abs=1e-3)
    assert b[1]["val_mean_recall"] == pytest.approx(a[1]["val_mean_recall"], abs=1e-6)
    assert (resumed / "log.csv").read_text().count("\n") == 3


def test_resume_from_a_non_resumable_file_says_what_to_do(tiny_runs):
    with pytest.raises(ValueError, match="last.pt"):
        train(TINY, resume=str(tiny_runs[0] / "best.pt"), progress=False)


def test_plots_are_png_files(tiny_runs):
    run = tiny_runs[0]
    names = ("curves.png", "retrieval.png", "tsne.png")
    for name in names:
        assert (run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        (run / name).unlink()
    assert main(["plot", str(run)]) == 0
    assert all((run / name).stat().st_size > 1000 for name in names)


def _fake_flickr(root, layout: str, n: int = 8):
    images = root / ("Images" if layout == "kaggle" else "Flicker8k_Dataset")
    images.mkdir(parents=True)
    names = [f"{1000 + i}_abc.jpg" for i in range(n)]
    colours = ["red", "green", "blue", "white"]
    for i, name in enumerate(names):
        Image.new("RGB", (50 + i, 40), colours[i % 4]).save(images / name)
    caps = {name: [f"a {colours[i % 4]} picture number {i}", f"photo {i} in {colours[i % 4]}"] for i, name in enumerate(names)}
    if layout == "kaggle":
        rows = ["image,caption"] + [f'{n_},"{c}"' for n_, cs in caps.items() for c in cs]
        (root / "captions.txt").write_text("\n".join(rows) + "\n")
    else:
        lines = [f"{n_}#{j}\t{c}" for n_, cs in caps.items() for j, c in enumerate(cs)]
        (root / "Flickr8k.token.txt").write_text("\n".join(lines) + "\n")
        for split, part in (("train", names[:6]), ("dev", names[6:7]), ("test", names[7:])):
            (root / f"Flickr_8k.{split}Images.txt").write_text("\n".join(part) + "\n")
    return names


@pytest.mark.parametrize("layout", ["kaggle", "original"])
def test_flickr8k_reader_on_a_fabricated_layout(tmp_path, layout):
    _fake_flickr(tmp_path, layout)
    (tmp_path / ("Images" if layout == "kaggle" else "Flicker8k_Dataset") / "1000_abc.jpg").write_bytes(b"not a jpeg")
    with pytest.warns(UserWarning, match="1000_abc.jpg"):
        data = load_pairsets(f"flickr8k:{tmp_path}", 32, seed=0)
    assert sum(len(d) for d in data.values()) == 7  # the broken image is skipped, not fatal
    assert {len(data["val"]), len(data["test"])} == {1}
    for d in data.values():
        assert d.images.shape[1:] == (3, 32, 32) and d.images.dtype == torch.uint8
        texts, t2i = d.eval_texts["en"]
        assert len(texts) == 2 * len(d) and sorted(set(t2i)) == list(range(len(d)))
        assert d.positives(torch.arange(len(d)), d.codes).equal(torch.eye(len(d), dtype=torch.bool))


def test_training_runs_on_flickr8k_layout(tmp_path):
    _fake_flickr(tmp_path / "f8k", "original")
    cfg = replace(TINY, data=f"flickr8k:{tmp_path / 'f8k'}", epochs=1, batch_size=3, out=str(tmp_path / "run"),
                  text_encoder="lstm", augment=True)
    run = train(cfg, progress=False)
    test = json.loads((run / "test_metrics.json").read_text())
    assert "en_t2i_R@1" in test and not any(k.endswith("_top1") for k in test)


def test_unknown_data_spec_is_a_clear_error(tmp_path):
    assert main(["--data", "imagenet", "--out", str(tmp_path / "x")]) == 2
    with pytest.raises(ValueError, match="shapes.*flickr8k"):
        load_pairsets("imagenet", 32, 0)


# ---------------------------------------------------------------- the bundled model

def test_bundled_model_matches_its_card():
    card = BUNDLED_MINI.parent / "MODEL_CARD.md"
    recorded = json.loads((BUNDLED_MINI.parent / "metrics.json").read_text())
    assert BUNDLED_MINI.stat().st_size <= 10 * 10**6
    text = card.read_text(encoding="utf-8")
    for key in ("en_shape_top1", "zh_shape_top1", "en_colour_top1", "en_t2i_R@5", "zh_i2t_R@1"):
        assert f"{recorded[key]:.1f}" in text, f"{key} = {recorded[key]:.1f} is not in {card}"
    assert re.search(r"bash assets/mini/train_bundled\.sh", text)

    enc = load_encoder("mini", pick_runtime("cpu"))
    test = load_pairsets("shapes", enc.config.image_size, 0, (0, 0, 1000), splits=("test",))["test"]
    got = evaluate_pairs(enc, test)
    for key in ("en_shape_top1", "en_colour_top1", "en_t2i_R@5", "zh_t2i_R@5", "en_i2t_R@5"):
        assert got[key] == pytest.approx(recorded[key], abs=0.5), key

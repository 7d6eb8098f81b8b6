"""The Learn tab: core services (wb.learn, the live trainer) and every api_name through
gradio_client, with a tiny CLIP, the bundled samples, and a seconds-long mini-CLIP training."""
from __future__ import annotations

import time

import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from core.errors import LabelError
from core.lab.live import LiveConfig, LiveTrainer
from ui_server import serve

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:.*:Warning:gradio.queueing")
TEACHER, STUDENT = ("teacher", "t-secret"), ("ann", "a-secret")
TINY_RUN = dict(epochs=1, batch=32, images=64)


@pytest.fixture(scope="module")
def app(tiny_clip_path, tmp_path_factory):
    with serve(tiny_clip_path, tmp_path_factory.mktemp("learn") / "library", lang="en", auth=STUDENT,
               admin=TEACHER) as served:
        served.wb.seed()
        yield served


@pytest.fixture(scope="module")
def teacher(app):
    return Client(app.url, auth=TEACHER, verbose=False)


def test_learn_is_the_fifth_tab(app):
    import gradio as gr
    tabs = [b.label for b in app.demo.blocks.values() if isinstance(b, gr.Tab)]
    assert len(tabs) >= 5 and "Learn" in tabs[4], tabs


def test_embedding_map_is_cached_per_library_version_and_places_a_query(app):
    learn = app.wb.learn
    first = learn.embedding_map("pca", labels="circle, square", query="a red circle")
    assert len(first.points) == len(app.wb) and first.query is not None
    assert {p.label for p in first.points} <= {"circle", "square"}
    assert learn._projection("pca", 5000)[0] is learn._projection("pca", 5000)[0]   # cached
    sampled = learn.embedding_map("tsne", limit=10, query="a star")
    assert len(sampled.points) == 10 and any(n.startswith("sample:10:") for n in sampled.notes) and "knn" in sampled.notes


def test_probe_and_similarity_in_core(app):
    report = app.wb.learn.probe("circle, square, star, hexagon, triangle, cross")
    assert report.train >= 5 and report.test >= 5 and 0 <= report.probe_accuracy <= 100
    assert [c for c, *_ in report.per_class] == report.classes
    with pytest.raises(LabelError):
        app.wb.learn.probe("circle")
    ids = [e.id for e in app.wb.entries(0, 3)]
    sim = app.wb.learn.similarity(ids, ["a cat", "a red circle"])
    assert sim.matrix.shape == (3, 2) and abs(sim.matrix).max() <= 1.0001


def test_api_names_of_the_learn_tab(teacher):
    names = set(teacher.view_api(return_format="dict")["named_endpoints"])
    assert {"/train_start", "/train_watch", "/train_stop", "/use_model", "/embedding_map", "/similarity_matrix",
            "/linear_probe"} <= names


def test_map_similarity_probe_through_the_api(app, teacher):
    plot, note = teacher.predict("pca", "circle, star", "a red circle", api_name="/embedding_map")
    assert f"Showing {len(app.wb)} of {len(app.wb)} images (PCA)" in note
    ids = [e.id for e in app.wb.entries(0, 2)]
    out = teacher.predict(ids, None, "a cat\n红色圆形", api_name="/similarity_matrix")
    assert out.count("<tr>") == 3 and "红色圆形" in out and out.count("data:image/jpeg") == 2
    with pytest.raises(AppError, match="at least one image"):
        teacher.predict([], None, "a cat", api_name="/similarity_matrix")
    md = teacher.predict("circle, square, star", "", api_name="/linear_probe")
    assert "Linear probe" in md and "| circle |" in md


def test_only_the_teacher_trains(app):
    student = Client(app.url, auth=STUDENT, verbose=False)
    with pytest.raises(AppError, match="teacher"):
        student.predict("shapes", 1, 32, "transformer", True, 64, api_name="/train_start")


def test_learn_plots_are_numeric_from_the_first_empty_frame():
    """The first frames of a run are empty; their columns must already be numbers, or the plot takes
    them for categories and keeps that axis (a falling loss drawn as unordered labels)."""
    import gradio as gr
    from core.lab.live import LiveState
    from ui.learn import _loss_frame, _metrics_frame
    empty = LiveState(True, None)
    later = LiveState(True, None, steps=[(1, 6.143), (2, 4.488), (3, 15.5)],
                      epochs=[{"epoch": 1, "val_mean_recall": 2.792, "val_en_shape_top1": 50.0}])
    for state in (empty, later):
        loss = gr.LinePlot(x="step", y="loss").postprocess(_loss_frame(state))
        metrics = gr.LinePlot(x="epoch", y="value", color="metric").postprocess(_metrics_frame(state))
        assert loss.datatypes == {"step": "quantitative", "loss": "quantitative"}
        assert metrics.datatypes == {"epoch": "quantitative", "value": "quantitative", "metric": "nominal"}
    assert [row[1] for row in gr.LinePlot(x="step", y="loss").postprocess(_loss_frame(later)).data] == [6.143, 4.488, 15.5]


@pytest.mark.slow
def test_the_live_defaults_learn_in_their_first_epoch(tmp_path):
    """The Learn tab's defaults must visibly learn (they once ended at chance): after the first of
    their epochs the colours are well above chance (1/8) and so is retrieval."""
    from dataclasses import replace
    from core.lab.train import train
    seen = []

    class Enough(Exception):
        pass

    def first(row):
        seen.append(row)
        raise Enough   # one epoch is enough to tell
    cfg = replace(LiveConfig().train_config(tmp_path / "run"), device="cpu")
    with pytest.raises(Enough):
        train(cfg, progress=False, on_epoch=first)
    row = seen[0]
    assert row["val_en_colour_top1"] > 35 and row["val_mean_recall"] > 6, row


def test_live_trainer_runs_one_at_a_time_and_stops(tmp_path):
    trainer = LiveTrainer(tmp_path)
    config = LiveConfig(epochs=5, batch_size=32, shapes_train=256, shapes_val=16, shapes_test=16, image_size=32)
    assert trainer.start(config) and not trainer.start(config)   # one at a time
    while not trainer.snapshot().steps:
        time.sleep(0.05)
    assert trainer.stop()
    while trainer.snapshot().running:
        time.sleep(0.05)
    state = trainer.snapshot()
    assert state.stopped and state.error is None and len(state.epochs) < 5


def test_train_live_then_use_the_model(app, teacher):
    loss, metrics, status = teacher.predict("shapes", TINY_RUN["epochs"], TINY_RUN["batch"], "lstm", False,
                                            TINY_RUN["images"], api_name="/train_start")
    assert "Training finished" in status and "Best model" in status, status
    assert len(loss["data"]) == 2 and metrics["data"], (loss, metrics)   # 64 images / 32 per batch = 2 steps
    # numbers on numeric axes (drawn as lines), not as categories in arrival order
    assert loss["datatypes"] == {"step": "quantitative", "loss": "quantitative"}, loss["datatypes"]
    assert metrics["datatypes"] == {"epoch": "quantitative", "value": "quantitative", "metric": "nominal"}
    before = app.wb.encoder.model_id
    status = teacher.predict(api_name="/use_model")
    assert "now uses `mini:" in status
    stats = teacher.predict(api_name="/library_stats")
    assert "mini:" in stats and before not in stats      # every tab's next call uses the new model
    assert httpx.get(app.url + "api/stats", auth=TEACHER, timeout=60).json()["model_id"].startswith("mini:")   # the API too
    with pytest.raises(AppError, match="teacher"):
        Client(app.url, auth=STUDENT, verbose=False).predict(api_name="/use_model")


def test_learn_notes_follow_the_ui_language():
    """Core's notes in the map, the similarity matrix and the probe (Msg) reach a Chinese page in Chinese."""
    import numpy as np
    from types import SimpleNamespace

    from core.messages import Msg
    from ui.learn import _heatmap, _map_note, _probe_table

    note = Msg("英文查询：'{q}'", "English query: '{q}'", q="a cat")
    assert "英文查询" in _heatmap(np.eye(1), ["data:,"], ["一只猫"], [note], "zh")
    assert "英文查询" in _map_note(1, 1, "pca", (note,), "zh")
    probe = SimpleNamespace(probe_accuracy=90.0, zeroshot_accuracy=80.0, train=2, test=2, per_class=[], notes=[note])
    assert "英文查询" in _probe_table(probe, "zh") and "English query" in _probe_table(probe, "en")

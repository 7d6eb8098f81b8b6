"""What a message slot keeps per session: a Say's renderer lives in a gr.State until the tab closes,
so it must hold text and counts, never errors (their tracebacks keep every frame's locals) or whole results."""
from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from core.messages import Msg
from core.models.hf import ModelUnavailableError
from ui.language import Say, say


def _cells(render) -> list:
    """Everything a renderer's closure (or partial) holds."""
    out = list(getattr(render, "args", ()))
    out += list((getattr(render, "keywords", None) or {}).values())
    for cell in getattr(render, "__closure__", None) or ():
        out.append(cell.cell_contents)
    return out


def _holds_exception(obj, seen=None, depth=0) -> bool:
    seen = seen if seen is not None else set()
    if id(obj) in seen or depth > 6:
        return False
    seen.add(id(obj))
    if isinstance(obj, BaseException):
        return True
    if isinstance(obj, dict):
        return any(_holds_exception(v, seen, depth + 1) for v in obj.values())
    if isinstance(obj, (list, tuple, set)):
        return any(_holds_exception(v, seen, depth + 1) for v in obj)
    if callable(obj):
        return any(_holds_exception(v, seen, depth + 1) for v in _cells(obj))
    return False


def test_say_keeps_an_errors_message_not_the_error():
    def fails():
        big = bytearray(10_000_000)   # noqa: F841  a frame local the traceback would keep
        raise ModelUnavailableError(Msg("缺少 {x}", "missing {x}", x="m"))
    try:
        fails()
    except ModelUnavailableError as e:
        said = say("cap.unavailable", "en", detail=e)
    assert "missing m" in said and "缺少 m" in said.render("zh")
    assert not _holds_exception(said.render)
    assert len(pickle.dumps(_cells(said.render))) < 5_000


def test_say_keeps_an_image_errors_name_and_reason_in_both_languages():
    from core.errors import ImageError
    said = say("cap.unavailable", "en", detail=ImageError("a.png", Msg("坏了", "broken")))
    assert "a.png: broken" in said and "a.png: 坏了" in said.render("zh")
    assert not _holds_exception(said.render)


def _kept_bytes(render, depth: int = 0) -> int:
    """Pickled size of what a renderer keeps (its closure cells and partial arguments, nested renderers too)."""
    total = 0
    for v in _cells(render):
        if callable(v) and not isinstance(v, type) and depth < 4:
            total += _kept_bytes(v, depth + 1)
        else:
            total += len(pickle.dumps(v))
    return total


class _Library:
    """Just what Callbacks.search reads from a Workbench."""

    def __init__(self, result):
        from core.access import Access
        self.result, self.access = result, Access()

    def search(self, query, caller=None):
        return self.result

    def thumbnail(self, hit):
        return hit.path

    def unknown_words(self, text):
        return []

    def __len__(self):
        return 5000


def test_search_info_keeps_counts_not_the_hits(tmp_path):
    from pathlib import Path

    from core.library.search import Hit, SearchResult
    from ui.callbacks import Callbacks
    hits = [Hit(rowid=i, id=f"{i:012x}", sha256=f"{i:064x}", path=Path(f"/lib/images/{i:064x}.jpg"),
                name=f"picture_{i}.jpg", score=0.9 - i * 1e-5, meta={"caption_en": "a cat " * 20, "tags": list(range(20))})
            for i in range(1000)]
    result = SearchResult(hits=hits, text_used="a cat", note=Msg("已翻译", "translated from Chinese"))
    assert len(pickle.dumps(result)) > 200_000   # what it kept before
    gallery, ids, info = Callbacks(_Library(result)).search("一只猫", None, "", 1000, 0.0, all_k=True, lang="en")
    assert isinstance(info, Say) and "1000" in info and "已翻译" in info.render("zh")
    assert _kept_bytes(info.render) < 20_000


def test_ingest_summary_keeps_no_list_of_added_ids():
    from core.library.ingest import IngestReport
    from ui.callbacks import Callbacks
    report = IngestReport(added=[f"{i:012x}" for i in range(20_000)], duplicates=["a.jpg"],
                          errors=[("b.jpg", Msg("坏", "bad"))])
    render = Callbacks(_Library(None))._summary(report)
    assert "b.jpg" in render("en") and "坏" in render("zh") and _kept_bytes(render) < 5_000


def test_map_and_training_status_keep_no_points_or_history():
    from functools import partial
    from types import SimpleNamespace

    from core.lab.learn import EmbeddingMap, MapPoint
    from core.lab.live import LiveState
    from ui.learn import _map_note, _status_of, _train_status
    emap = EmbeddingMap("pca", [MapPoint(f"{i:012x}", f"p{i}.jpg", 0.1, 0.2, "cat", entry=SimpleNamespace(meta={"x": "y" * 200}))
                                for i in range(5000)], total=9000, query=None, notes=["knn"])
    render = partial(_map_note, len(emap.points), emap.total, emap.method, tuple(emap.notes))
    assert "5000" in render("en") and _kept_bytes(render) < 2_000
    state = LiveState(running=True, run=Path("/runs/r1"), steps=[(i, 1.0 / (i + 1)) for i in range(20_000)],
                      epochs=[{"epoch": e, "val_mean_recall": 0.5, "val_en_shape_top1": 0.7} for e in range(30)],
                      total_steps=30_000)
    render = partial(_train_status, _status_of(state))
    assert render("en") == _train_status(state, "en") and "19999" in render("en")
    assert _kept_bytes(render) < 2_000


def test_one_message_that_cannot_be_said_again_leaves_the_others_switching(caplog):
    import gradio as gr

    from ui.language import Localizer

    def broken(lang):
        raise KeyError("gone")
    with gr.Blocks():
        loc = Localizer("en")
        loc.message()
        loc.message()
        loc.message()
    with caplog.at_level("ERROR"):
        updates = loc.updates("zh", (say("lib.empty", "en").render, broken, None))
    assert updates[0]["value"] == say("lib.empty", "zh")
    assert "value" not in updates[1] and "value" not in updates[2]   # left as they are
    assert "could not say a message again" in caplog.text


def test_a_running_trainings_status_follows_the_sessions_language(monkeypatch):
    from types import SimpleNamespace

    import ui.learn as learn
    from core.lab.live import LiveState
    from ui.language import SessionLangs

    langs = SessionLangs(size=2)
    monkeypatch.setattr(learn, "session_langs", langs)
    monkeypatch.setattr(learn, "POLL_S", 0)
    states = iter([LiveState(running=True, run=Path("/runs/r1"), steps=[(1, 2.0)], total_steps=10)] * 2
                  + [LiveState(running=False, run=Path("/runs/r1"), steps=[(10, 1.0)], total_steps=10)])
    trainer = SimpleNamespace(snapshot=lambda: next(states))
    lc = learn.LearnCallbacks(SimpleNamespace(wb=None, access=None), trainer)
    me, other = SimpleNamespace(session_hash="me"), SimpleNamespace(session_hash="other")
    polls = lc.train_watch("en", me)
    first = next(polls)[2]
    assert first == learn._train_status(learn._status_of(LiveState(running=True, run=Path("/runs/r1"),
                                                                  steps=[(1, 2.0)], total_steps=10)), "en")
    langs.set(other, "zh")          # another session's switch changes nothing here
    assert next(polls)[2] == first
    langs.set(me, "zh")             # this session switched while it runs
    last = next(polls)[2]
    assert last == last.render("zh") and last != last.render("en")


def test_session_languages_keep_only_the_latest_sessions():
    from types import SimpleNamespace

    from ui.language import SessionLangs
    langs = SessionLangs(size=2)
    a, b, c = (SimpleNamespace(session_hash=h) for h in "abc")
    langs.set(a, "zh"), langs.set(b, "zh"), langs.set(a, "en"), langs.set(c, "zh")
    assert langs.get(b, "x") == "x" and langs.get(a, "x") == "en" and langs.get(c, "x") == "zh"
    assert langs.get(None, "en") == "en" and langs.get(SimpleNamespace(session_hash=None), "zh") == "zh"

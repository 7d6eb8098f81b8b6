"""The first minutes offline (issue 11, item 1): the bundled mini model stands in for ViT-B/32,
the banner says so in both languages with the technical reason folded away, the examples,
labels and default search are coloured shapes, and words the model never saw are flagged."""
from __future__ import annotations

import gradio as gr
import pytest
from gradio_client import Client, handle_file

from core.models.registry import BUNDLED_MINI
from core.settings import ASSETS_DIR
from core.starters import starters
from ui import build_app
from ui_server import serve

SHAPES = ASSETS_DIR / "shapes"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    root = tmp_path_factory.mktemp("first_minutes")
    with serve("ViT-B/32", root / "library", lang="en", fallback_cache=root / "empty-cache") as served:
        yield served


@pytest.fixture(scope="module")
def client(app):
    return Client(app.url, verbose=False)


def test_mini_model_lists_the_words_it_never_saw(app):
    assert app.wb.fallback and app.wb.encoder.domain == "shapes"
    assert app.wb.unknown_words("cat, dog, red circle", "猫, 红色圆形") == ["cat", "dog", "猫"]
    assert app.wb.unknown_words("blue star, 蓝色五角星") == []


def test_open_world_models_flag_nothing(tiny_clip_path, tmp_path):
    from core.workbench import build_workbench
    wb = build_workbench(str(tiny_clip_path), tmp_path / "lib", device="cpu", offline=True, fallback=False)
    assert not wb.fallback and wb.unknown_words("zebra on a unicycle") == []
    assert wb.starters == starters(None) and "cat" in wb.starters.labels


@pytest.mark.parametrize("lang, text", [("en", "The library is empty"), ("zh", "图库是空的")])
def test_an_empty_library_says_how_to_add_images(tiny_clip_path, tmp_path, lang, text):
    from core.workbench import build_workbench
    from ui.callbacks import Callbacks
    wb = build_workbench(str(tiny_clip_path), tmp_path / "lib", device="cpu", offline=True, fallback=False)
    items, _, info, _ = Callbacks(wb).library_page(1, lang)
    assert not items and text in info and ("Add sample images" in info or "添加示例图片" in info)


def test_delete_asks_first_and_names_the_image(app):
    from ui.callbacks import Callbacks
    app.wb.add([SHAPES / "05_green_cross.png"])
    entry = next(e for e in app.wb.page(1).entries if e.name == "05_green_cross.png")
    row, question = Callbacks(app.wb).confirm_remove(entry.id, "en")
    assert row["visible"] is True and entry.name in question and entry.id in question
    assert len(app.wb.entry(entry.id).id) == 12                       # nothing deleted by asking


def _blocks(app, lang):
    blocks = build_app(app.wb, lang=lang)
    return {getattr(b, "elem_id", None): b for b in blocks.blocks.values()}, blocks


@pytest.mark.parametrize("lang, words", [("en", "only knows coloured shapes"), ("zh", "只认识彩色几何图形")])
def test_banner_is_short_bilingual_and_folds_the_detail(app, lang, words):
    by_id, _ = _blocks(app, lang)
    banner = by_id["notice"].value
    assert words in banner and "ViT-B/32" in banner and "chinese-clip" in banner and "HF_ENDPOINT" in banner
    assert "Errno" not in banner and "offline mode" not in banner    # the raw reason is not in the banner...
    details = by_id["notice-details"]
    assert isinstance(details, gr.Accordion) and details.open is False
    assert "ViT-B/32" in by_id["notice-detail"].value                  # ...but one click away


def test_examples_labels_and_search_are_shapes(app):
    by_id, blocks = _blocks(app, "en")
    assert "red circle" in by_id["zs-labels"].value and "cat" not in by_id["zs-labels"].value
    datasets = [b for b in blocks.blocks.values() if isinstance(b, gr.Dataset)]
    shown = [str(s) for d in datasets for row in d.raw_samples for s in row]
    assert shown and all(str(SHAPES) in s and s.endswith(".png") for s in shown)
    assert any(isinstance(b, gr.Textbox) and b.value == "blue star" for b in blocks.blocks.values())


def test_classify_warns_about_unknown_labels(client):
    image = handle_file(str(SHAPES / "09_blue_star.png"))
    top, status = client.predict(image, "custom", "cat, dog, 猫", "single", "", False, api_name="/classify")
    assert "never seen these words: cat, dog, 猫" in status
    top, status = client.predict(image, "custom", "blue star, red circle", "single", "", False, api_name="/classify")
    assert "never seen" not in status and top["label"] == "blue star"


def test_an_unknown_label_never_wins_silently(app, client):
    """A label the model never saw is marked in the result, and the page's note and the JSON API's
    `note` say the model cannot judge it (a red triangle once came out as "dog", 50%, unmarked)."""
    import httpx
    triangle = SHAPES / "08_red_triangle.png"
    top, status = client.predict(handle_file(str(triangle)), "custom", "dog, red triangle", "single", "", False,
                                 api_name="/classify")
    marked = {c["label"]: c["label"].startswith("⚠️ ") for c in top["confidences"]}
    assert marked == {"⚠️ dog": True, "red triangle": False}, marked
    assert "cannot judge the labels with them (dog)" in status
    r = httpx.post(app.url + "api/classify", files={"image": (triangle.name, triangle.read_bytes())},
                   data={"labels": "dog, red triangle"})
    assert r.status_code == 200 and "cannot judge the labels with them (dog)" in r.json()["note"], r.text


def test_similarity_matrix_flags_unknown_words(app, client):
    if not len(app.wb):
        app.wb.seed()
    ids = [e.id for e in app.wb.entries(0, 2)]
    out = client.predict(ids, None, "a red circle\na cat on a sofa", api_name="/similarity_matrix")
    assert "⚠️ a cat on a sofa" in out and "⚠️ a red circle" not in out, out
    assert "never seen these words: cat, sofa" in out, out


def test_search_warns_about_unknown_words(app, client):
    app.wb.add([SHAPES / "09_blue_star.png", SHAPES / "19_red_circle.png"])
    _, info = client.predict("a cat", None, "", 2, 0, api_name="/search")
    assert "never seen these words: cat" in info
    gallery, info = client.predict("blue star", None, "", 1, 0, api_name="/search")
    assert "never seen" not in info and "blue_star" in gallery[0]["caption"]


def test_weak_matches_are_cut_unless_all_k_is_asked(app, client):
    from core.library.search import SearchQuery, count_strong
    app.wb.add(sorted(SHAPES.glob("*.png")))
    hits = app.wb.search(SearchQuery(text="blue star", k=10)).hits
    strong = count_strong(hits)
    assert 0 < strong < 10, [h.score for h in hits]
    gallery, info = client.predict("blue star", None, "", 10, 0, api_name="/search")   # its five inputs, as documented
    assert len(gallery) == strong and "weaker matches hidden" in info
    assert not any(g["caption"].startswith("◌") for g in gallery)
    from ui.callbacks import Callbacks     # the page's checkbox reaches the same callback through a State
    gallery, _, info = Callbacks(app.wb, app.access).search("blue star", None, "", 10, 0, True, lang="en")
    assert len(gallery) == 10 and f"{10 - strong} results marked ◌" in info
    assert [caption.startswith("◌") for _, caption in gallery] == [i >= strong for i in range(10)]


def test_count_strong_is_relative_to_the_best():
    from core.library.search import Hit, count_strong

    def hits(*scores):
        return [Hit(rowid=i, id=str(i), sha256="", path="", name="", score=s, meta={}) for i, s in enumerate(scores)]
    assert count_strong(hits(0.32, 0.30, 0.29, 0.20)) == 3
    assert count_strong(hits(0.9, 0.85, 0.47)) == 2
    assert count_strong(hits(-0.1, -0.2)) == 2 and count_strong([]) == 0


def test_console_hint_speaks_the_readmes_flags():
    import demo
    from core.settings import PROJECT_ROOT
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    hint = demo.console_hint("http://127.0.0.1:7860/", None)
    assert "share=True" not in hint and "python demo.py --share --admin teacher:PASS" in hint
    assert "python demo.py --share --admin teacher:PASS --auth student:PASS" in readme
    assert "--index-url https://download.pytorch.org/whl/cpu" in readme
    assert "https://x.gradio.live" in demo.console_hint("http://127.0.0.1:7860/", "https://x.gradio.live")


def test_offline_hub_model_fails_at_once_and_says_cache(tmp_path):
    import time
    from core.errors import ModelUnavailableError
    from core.models.hf import model_type
    start = time.monotonic()
    with pytest.raises(ModelUnavailableError) as err:
        model_type("nlpconnect/vit-gpt2-image-captioning", tmp_path, True, "captioner 'vit-gpt2'")
    assert time.monotonic() - start < 10
    message = str(err.value)
    assert "not in the cache" in message and "offline mode" in message and "couldn't connect" not in message


def test_first_start_seeds_the_samples_unless_told_not_to(tiny_clip_path, tmp_path):
    import demo
    from core.library.ingest import sample_files
    common = ["--model", str(tiny_clip_path), "--device", "cpu", "--offline", "--lang", "en"]
    demo.build(demo.parse_args([*common, "--library", str(tmp_path / "seeded")]))
    demo.build(demo.parse_args([*common, "--library", str(tmp_path / "empty"), "--no-seed"]))
    from core.workbench import build_workbench
    seeded = build_workbench(str(tiny_clip_path), tmp_path / "seeded", device="cpu", offline=True, fallback=False)
    empty = build_workbench(str(tiny_clip_path), tmp_path / "empty", device="cpu", offline=True, fallback=False)
    assert len(seeded) == len(sample_files()) and len(empty) == 0


@pytest.mark.parametrize("lang, words", [("en", "No captions here"), ("zh", "无法生成描述")])
def test_caption_tab_says_before_a_click_that_no_captioner_is_here(app, client, lang, words):
    """Offline with no captioner cached, the Caption tab says so up front, once, with the way to supply one;
    a click then says it once too (the how-to was repeated twice)."""
    by_id, _ = _blocks(app, lang)
    note = by_id["cap-offline"].value
    assert words in note and "save_pretrained" in note and "HF_ENDPOINT" in note, note
    _, _, status = client.predict(handle_file(str(SHAPES / "09_blue_star.png")), api_name="/caption")
    assert status.count("HF_ENDPOINT") == 1 and status.count("save_pretrained") == 1, status

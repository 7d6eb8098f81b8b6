"""The Learn tab in a real browser (Chromium via Playwright), in English and Chinese: the map,
the similarity matrix, the probe, and a seconds-long live training switched into the app.
Screenshots go to test-artifacts/learn_*.png."""
from __future__ import annotations

import re

import pytest

from test_ui_browser import SAMPLES, browser, shot  # noqa: F401  (the shared Chromium fixture)
from ui_server import serve

pytestmark = [pytest.mark.browser,
              pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:.*:Warning:gradio.queueing")]
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def app(tiny_clip_path, tmp_path_factory):
    with serve(tiny_clip_path, tmp_path_factory.mktemp("learn_browser") / "library", lang=None) as served:
        served.wb.seed()
        yield served


def open_learn(browser, app, lang: str):  # noqa: F811
    context = browser.new_context(viewport={"width": 1280, "height": 1000}, locale="zh-CN" if lang == "zh" else "en-US")
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.goto(app.url)
    page.get_by_role("tab", name=re.compile("Learn|学习")).click()
    return context, page


def open_section(page, name: str):
    page.get_by_role("button", name=re.compile(name)).first.click()


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_map_similarity_and_probe(browser, app, lang):  # noqa: F811
    zh = lang == "zh"
    context, page = open_learn(browser, app, lang)
    try:
        open_section(page, "嵌入空间地图" if zh else "The embedding space")
        page.get_by_label("着色标签（可选）" if zh else "Colour by labels (optional)").fill("circle, square, star")
        page.get_by_label("文字查询（可选）" if zh else "Text query (optional)").fill("红色圆形" if zh else "a red circle")
        page.locator("#learn-map-draw").click()
        page.locator("#learn-map-note").get_by_text(re.compile(r"显示 \d+ / \d+|Showing \d+ of \d+")).wait_for()
        plot = page.locator("#learn-map canvas, #learn-map svg").first
        plot.wait_for()
        box = plot.bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        shot(page, f"learn_map_{lang}")

        open_section(page, "相似度矩阵" if zh else "Similarity matrix")
        page.locator("#learn-sim-texts textarea").fill("一只猫\na red circle\na brick wall")
        files = page.locator("input[type=file]").last
        files.set_input_files([str(SAMPLES / "cat_chelsea.jpg"), str(SAMPLES / "brick.jpg")])
        page.locator("#learn-sim-go").click()
        table = page.locator("#learn-sim-out table")
        table.wait_for()
        assert table.locator("tr").count() == 4 and table.locator("img").count() == 2
        table.scroll_into_view_if_needed()
        shot(page, f"learn_similarity_{lang}")

        open_section(page, "零样本 vs 线性探针" if zh else "Zero-shot vs linear probe")
        page.locator("#learn-probe-classes textarea").fill("circle, square, star, hexagon")
        page.locator("#learn-probe-go").click()
        out = page.locator("#learn-probe-out")
        out.get_by_text(re.compile("线性探针|Linear probe")).wait_for()
        out.scroll_into_view_if_needed()
        shot(page, f"learn_probe_{lang}")
    finally:
        context.close()


def test_train_live_stop_free_and_use_the_model(browser, app):  # noqa: F811
    context, page = open_learn(browser, app, "en")
    try:
        page.locator("#learn-epochs input[type=number]").fill("1")
        page.locator("#learn-images input[type=number]").fill("64")
        page.locator("#learn-images input[type=number]").press("Enter")
        page.locator("#learn-start").click()
        page.locator("#learn-status").get_by_text("Training finished").wait_for()
        page.locator("#learn-loss canvas, #learn-loss svg").first.wait_for()
        shot(page, "learn_train_en")
        page.locator("#learn-use").click()
        page.locator("#learn-status").get_by_text("The app now uses").wait_for()
        page.locator("#lang").get_by_text("中文").click()
        page.get_by_role("button", name="开始训练").wait_for(state="visible")
        page.locator("#learn-status").get_by_text("应用已改用模型").wait_for()   # the message on screen follows
        assert "The app now uses" not in page.locator("#learn-status").inner_text()
        shot(page, "learn_train_zh")
    finally:
        context.close()

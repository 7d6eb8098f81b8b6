"""Every image input goes through core's safe loader in every session state (issue 18, item 1), in
Chromium: a page started in Chinese, one started in English, after the language switch, after a
sample click and after the Learn tab switched the app's model. Bad files (an empty .jpg, a text
file named .png, a 12k x 12k PNG bomb) get core's reason next to the input, in the page's language,
and the server never decodes them itself (no Gradio preprocessing error, no PIL bomb warning).
Screenshots in test-artifacts/safe_*.png."""
from __future__ import annotations

import re

import pytest

from core.settings import ASSETS_DIR
from test_classroom import huge_png
from test_ui_browser import browser, open_page, shot  # noqa: F401  (shared fixture)
from ui_server import serve

pytestmark = [pytest.mark.browser,
              pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:.*:Warning:gradio.queueing")]

INPUTS = {"#zs-image": ("#zs-status", "Classify", "分类"),
          "#search-image": ("#search-info", "Search", "搜索"),
          "#cap-image": ("#caption-status", "Caption", "生成描述")}
TABS = {"#zs-image": ("Zero-shot", "零样本"), "#search-image": ("Search", "搜索"), "#cap-image": ("Captions", "图像描述")}
REASONS = {"zero_bytes.jpg": ("file is empty (0 bytes)", "文件为空（0 字节）"),
           "notes.png": ("not an image file", "不是图片文件"),
           "bomb.png": ("pixel limit", "像素的上限")}
LEAKS = ("ComponentProcessingError", "DecompressionBomb", "UnidentifiedImageError", "Traceback")


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad_uploads")
    for name, data in {"zero_bytes.jpg": b"", "notes.png": b"just some text, not an image\n",
                       "bomb.png": huge_png(12000)}.items():
        (folder / name).write_bytes(data)
    return {name: folder / name for name in REASONS}


@pytest.fixture(scope="module")
def app_zh(tiny_clip_path, tmp_path_factory):
    with serve(tiny_clip_path, tmp_path_factory.mktemp("safe_zh") / "library", lang="zh") as served:
        served.wb.seed()
        yield served


@pytest.fixture(scope="module")
def app_browser_lang(tiny_clip_path, tmp_path_factory):
    with serve(tiny_clip_path, tmp_path_factory.mktemp("safe_any") / "library", lang=None) as served:
        served.wb.seed()
        yield served


def tab_name(selector: str, lang: str) -> re.Pattern:
    return re.compile(re.escape(TABS[selector][lang == "zh"]))


def walk(page, bad: dict, lang: str, capfd, rotate: int, label: str) -> None:
    """Each image input gets one bad file (a different one per state, so across states each input
    gets each file); its reason must show beside it in `lang`, and the server log stay clean."""
    names = list(REASONS)
    for i, (selector, (slot, en_button, zh_button)) in enumerate(INPUTS.items()):
        name = names[(i + rotate) % len(names)]
        page.get_by_role("tab", name=tab_name(selector, lang)).click()
        page.locator(f"{selector} input[type=file]").set_input_files(str(bad[name]))
        page.get_by_role("button", name=zh_button if lang == "zh" else en_button, exact=True).click()
        head = f"无法读取图片 {name}：" if lang == "zh" else f"Cannot read image {name}: "
        message = page.locator(slot).get_by_text(re.compile(re.escape(head) + ".*" + re.escape(REASONS[name][lang == "zh"])))
        message.wait_for()
        assert re.search(r"[\u4e00-\u9fff]", message.inner_text()) if lang == "zh" else True
        err = capfd.readouterr().err
        assert not [leak for leak in LEAKS if leak in err], f"{label} {selector} {name}: {err[-2000:]}"
        shot(page, f"safe_{label}_{selector[1:]}")
        page.locator(f"{selector} button[aria-label='Remove Image']").first.click()   # Gradio's own label


def test_started_in_chinese(browser, app_zh, bad, capfd):  # noqa: F811
    context, page = open_page(browser, app_zh.url, "en-US", ready="图库")
    try:
        walk(page, bad, "zh", capfd, rotate=0, label="start_zh")
    finally:
        context.close()


def test_started_in_english_then_switched_to_chinese(browser, app_browser_lang, bad, capfd):  # noqa: F811
    context, page = open_page(browser, app_browser_lang.url, "en-US", ready="Library")
    try:
        walk(page, bad, "en", capfd, rotate=1, label="start_en")
        page.locator("#lang").get_by_text("中文").click()
        page.get_by_role("tab", name="图库").wait_for()
        walk(page, bad, "zh", capfd, rotate=2, label="switched_zh")
        page.locator("#lang").get_by_text("English").click()
        page.get_by_role("tab", name="Library").wait_for()
        walk(page, bad, "en", capfd, rotate=0, label="switched_back_en")
    finally:
        context.close()


def test_after_a_sample_click_the_box_keeps_its_language_and_its_loader(browser, app_zh, bad, capfd):  # noqa: F811
    context, page = open_page(browser, app_zh.url, "zh-CN", ready="图库")
    try:
        page.locator("#zs-samples button, #zs-samples tr, #zs-samples .gallery-item").first.click()
        page.locator("#zs-image img").first.wait_for()
        assert "Image" not in page.locator("#zs-image label, #zs-image [data-testid='block-label']").first.inner_text()
        page.get_by_role("button", name="分类", exact=True).click()
        page.locator("#zs-result").get_by_text("%").first.wait_for()
        walk(page, bad, "zh", capfd, rotate=1, label="sample_zh")
    finally:
        context.close()


@pytest.mark.slow
def test_after_the_learn_tab_switched_the_model(browser, app_browser_lang, bad, capfd):  # noqa: F811
    context, page = open_page(browser, app_browser_lang.url, "zh-CN", ready="图库")
    page.set_default_timeout(60_000)
    try:
        page.get_by_role("tab", name=re.compile("学习")).click()
        page.locator("#learn-epochs input[type=number]").fill("1")
        page.locator("#learn-images input[type=number]").fill("64")
        page.locator("#learn-images input[type=number]").press("Enter")
        page.locator("#learn-start").click()
        page.locator("#learn-status").get_by_text("训练完成").wait_for()
        page.locator("#learn-use").click()
        page.locator("#learn-status").get_by_text("应用已改用模型").wait_for()
        walk(page, bad, "zh", capfd, rotate=2, label="learn_switch_zh")
    finally:
        context.close()

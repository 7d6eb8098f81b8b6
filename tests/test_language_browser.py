"""Every string in the UI language, in Chromium (issue 11, item 3): `--lang zh` in an English browser
shows Gradio's own texts in Chinese too, the language switch takes them along, messages already on
screen follow it, and a core error arrives in Chinese. Screenshots in test-artifacts/lang_*.png."""
from __future__ import annotations

import re

import pytest

from core.settings import ASSETS_DIR
from test_ui_browser import browser, open_page, shot  # noqa: F401  (shared fixture)
from ui_server import serve

pytestmark = [pytest.mark.browser,
              pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:.*:Warning:gradio.queueing")]

CJK = re.compile(r"[\u4e00-\u9fff]")
SHAPES = ASSETS_DIR / "shapes"


@pytest.fixture(scope="module")
def app(tiny_clip_path, tmp_path_factory):
    with serve(tiny_clip_path, tmp_path_factory.mktemp("lang_browser") / "library", lang="zh") as served:
        served.wb.add(sorted((ASSETS_DIR / "shapes").glob("*.png"))[:4])
        yield served


@pytest.fixture
def page(browser, app):
    """An English-speaking browser (locale en-US) opening an app started with --lang zh."""
    context, pg = open_page(browser, app.url, "en-US", ready="图库")
    yield pg
    context.close()


def test_gradio_texts_follow_lang_zh_in_an_english_browser(page):
    """Gradio's own texts start in Chinese (the library's file drop zone), so do the image inputs."""
    page.locator("#zs-image").get_by_text("把图片拖到这里").first.wait_for()
    page.get_by_role("tab", name="图库").click()
    upload = page.locator("#lib-upload")
    upload.get_by_text("将文件拖放到此处").first.wait_for()     # Gradio's "Drop File Here", in Chinese
    assert "Drop File Here" not in upload.inner_text() and "Click to Upload" not in upload.inner_text()
    shot(page, "lang_gradio_zh")


def test_switching_language_takes_the_upload_texts_along(page):
    page.locator("#zs-image").get_by_text("把图片拖到这里").first.wait_for()
    page.locator("#lang").get_by_text("English").click()
    page.locator("#zs-image").get_by_text("Drop an image here").first.wait_for()
    page.get_by_role("tab", name="Library").click()                      # mounted after the switch
    page.locator("#lib-upload").get_by_text("Drop File Here").first.wait_for()
    assert "lang=en" in page.url                                         # a reload keeps the choice
    shot(page, "lang_gradio_en")
    page.reload()
    page.get_by_role("tab", name="Library").wait_for()
    page.locator("#zs-image").get_by_text("Drop an image here").first.wait_for()


def test_messages_on_screen_follow_the_switch(page, tmp_path):
    """What callbacks wrote in English (the add summary, with an unreadable file's reason; a search's
    info) is said again in Chinese by the switch alone, and back in English."""
    page.locator("#lang").get_by_text("English").click()
    page.get_by_role("tab", name="Library").click()
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    page.locator("#lib-upload input[type=file]").set_input_files([str(SHAPES / "08_red_triangle.png"), str(broken)])
    page.get_by_role("button", name="Add to library").click()
    summary = page.locator("#lib-summary")
    summary.get_by_text("unreadable: broken.jpg").wait_for()
    page.get_by_role("tab", name="Search").click()
    page.locator("#search-image input[type=file]").set_input_files(str(SHAPES / "08_red_triangle.png"))
    page.get_by_role("button", name="Search", exact=True).click()
    info = page.locator("#search-info")
    info.get_by_text("images found").wait_for()

    page.locator("#lang").get_by_text("中文").click()
    info.get_by_text("找到").wait_for()
    assert "found" not in info.inner_text()
    shot(page, "lang_messages_search_zh")
    page.get_by_role("tab", name="图库").click()
    summary.get_by_text("无法读取：broken.jpg").wait_for()
    text = summary.inner_text()
    assert "新增 1 张" in text and "Added" not in text
    reason = text.split("无法读取：broken.jpg：", 1)[1]
    assert CJK.match(reason), text      # core's reason in Chinese (the decoder's own words may follow)
    shot(page, "lang_messages_zh")

    page.locator("#lang").get_by_text("English").click()
    summary.get_by_text("Added 1, already present 0, unreadable 1").wait_for()
    assert not CJK.search(summary.inner_text())
    shot(page, "lang_messages_en")
    page.get_by_role("tab", name="Search").click()
    info.get_by_text("images found").wait_for()


def test_a_core_error_arrives_in_chinese(page):
    """One label is refused by core's zero-shot planner; its detail, not only the heading, is Chinese."""
    page.locator("#zs-image input[type=file]").set_input_files(str(ASSETS_DIR / "shapes" / "09_blue_star.png"))
    page.locator("#zs-labels textarea").fill("猫")
    page.get_by_role("button", name="分类", exact=True).click()
    toast = page.locator(".toast-body").filter(has_text="标签无效").first
    toast.wait_for()
    text = toast.inner_text()
    shot(page, "lang_error_zh")
    detail = text.split("标签无效", 1)[1]
    assert CJK.search(detail), text
    assert not re.search(r"[A-Za-z]+ [A-Za-z]+ [A-Za-z]+", detail), f"English left in the Chinese error: {text}"

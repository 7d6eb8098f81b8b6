"""The offline first start in Chromium, in both languages (issue 11): the short banner, its folded
detail, the shape examples and the unknown-word warning. Screenshots in test-artifacts/first_*.png."""
from __future__ import annotations

import time

import pytest

from core.settings import ASSETS_DIR
from ui_server import serve

SHAPES = ASSETS_DIR / "shapes"
from test_ui_browser import browser, page, shot  # noqa: F401  (shared fixtures; `page` opens this module's `app`)

pytestmark = [pytest.mark.browser,
              pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:.*:Warning:gradio.queueing")]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    root = tmp_path_factory.mktemp("first_browser")
    with serve("ViT-B/32", root / "library", lang=None, fallback_cache=root / "empty-cache") as served:
        yield served


def _classify_first_example(page, button: str) -> None:
    page.locator("#zs-image input[type=file]").set_input_files(str(SHAPES / "09_blue_star.png"))
    page.get_by_role("button", name=button, exact=True).click()
    page.locator("#zs-result").get_by_text("%").first.wait_for()


def test_empty_library_explains_how_to_add(page):
    page.get_by_role("tab", name="Library").click()
    page.locator("#lib-page-info").get_by_text("The library is empty").wait_for()
    page.get_by_role("button", name="Add sample images").wait_for()
    shot(page, "first_empty_library_en")
    page.locator("#lang").get_by_text("中文").click()
    page.locator("#lib-page-info").get_by_text("图库是空的").wait_for()
    shot(page, "first_empty_library_zh")


def test_offline_banner_and_shapes_in_english(page):
    page.locator("#notice").get_by_text("using the small built-in model").wait_for()
    page.get_by_text("Technical details").click()
    page.locator("#notice-detail").get_by_text("ViT-B/32").first.wait_for()
    _classify_first_example(page, "Classify")
    shot(page, "first_offline_en")
    page.locator("#zs-labels textarea").fill("cat, dog, red circle")
    page.get_by_role("button", name="Classify", exact=True).click()
    page.locator("#zs-status").get_by_text("never seen these words: cat, dog").wait_for()
    shot(page, "first_unknown_words_en")


def test_offline_banner_and_shapes_in_chinese(page):
    page.locator("#lang").get_by_text("中文").click()
    page.locator("#notice").get_by_text("只认识彩色几何图形").wait_for()
    page.get_by_text("技术细节").click()
    _classify_first_example(page, "分类")
    page.locator("#zs-labels textarea").fill("猫, 红色圆形")
    page.get_by_role("button", name="分类", exact=True).click()
    page.locator("#zs-status").get_by_text("从未见过这些词：猫").wait_for()
    shot(page, "first_offline_zh")
    page.get_by_role("tab", name="图文搜索").click()
    page.get_by_role("button", name="搜索", exact=True).click()
    page.locator("#search-info").get_by_text("图库是空的").or_(page.locator("#search-info").get_by_text("张")).first.wait_for()
    shot(page, "first_search_zh")


def test_clicked_result_stays_in_the_preview(page, app):
    app.wb.add(sorted(SHAPES.glob("*.png")))
    page.get_by_role("tab", name="Search").click()
    page.get_by_role("button", name="Search", exact=True).click()       # the default search: "blue star"
    info = page.locator("#search-info")
    info.get_by_text("weaker matches hidden").wait_for()
    gallery = page.locator("#search-gallery")
    first_caption = gallery.get_by_text("blue_star").first
    first_caption.wait_for()
    gallery.locator("img").first.click()
    page.wait_for_timeout(1500)                 # time for a (formerly chained) "similar" search to land
    assert "similar to" not in info.inner_text()
    preview = gallery.locator("img").first.get_attribute("src")
    assert "blue_star" in gallery.inner_text() and preview
    shot(page, "first_search_preview_en")
    page.get_by_label("Show weak matches too (all K)").check()
    page.get_by_role("button", name="Search", exact=True).click()
    info.get_by_text("marked ◌").wait_for()
    shot(page, "first_search_all_k_en")


def test_search_preview_and_delete_in_chinese(page, app):
    """The same first minutes in the Chinese UI: weak matches explained, the clicked result kept,
    delete asks first and reports in Chinese."""
    app.wb.add(sorted(SHAPES.glob("*.png")))             # already there when the test above ran: duplicates
    page.locator("#lang").get_by_text("中文").click()
    page.get_by_role("tab", name="图文搜索").click()
    page.get_by_role("button", name="搜索", exact=True).click()
    info = page.locator("#search-info")
    info.get_by_text("较弱的匹配已隐藏").wait_for()
    gallery = page.locator("#search-gallery")
    gallery.get_by_text("blue_star").first.wait_for()
    gallery.locator("img").first.click()
    page.wait_for_timeout(1000)
    assert "相似的图片" not in info.inner_text()
    shot(page, "first_search_preview_zh")

    page.get_by_role("tab", name="图库").click()
    library = page.locator("#lib-gallery")
    library.locator("img").first.wait_for()
    before = len(app.wb)
    _select_first(page, library)
    page.get_by_role("button", name="删除选中的图片").click()
    page.locator("#lib-confirm-text").get_by_text("确定要从图库中永久删除").wait_for()
    assert len(app.wb) == before                          # nothing happens before the confirmation
    shot(page, "first_delete_confirm_zh")
    page.get_by_role("button", name="确定删除").click()
    page.locator("#lib-report").get_by_text("已删除").wait_for()
    assert len(app.wb) == before - 1
    shot(page, "first_deleted_zh")


def test_caption_without_its_model_fails_at_once_and_says_what_to_do(page):
    """Offline, the caption tab answers in seconds (not after ~30 s of retries), in Chinese, with the way to a
    captioner: a local folder or a mirror."""
    page.locator("#lang").get_by_text("中文").click()
    page.get_by_role("tab", name="图像描述").click()
    page.locator("#cap-image input[type=file]").set_input_files(str(SHAPES / "09_blue_star.png"))
    started = time.monotonic()
    page.get_by_role("button", name="生成描述", exact=True).click()
    status = page.locator("#caption-status")
    status.get_by_text("缺少模型").wait_for(timeout=15_000)
    assert time.monotonic() - started < 10
    text = status.inner_text()
    assert "--captioner" in text and "HF_ENDPOINT" in text, text
    shot(page, "first_caption_offline_zh")


def _select_first(page, gallery) -> None:
    """Click the gallery's first image until its id is selected (a refresh landing just after a click
    redraws the gallery and drops the selection)."""
    from playwright.sync_api import expect
    selected = page.locator("#lib-selected textarea")
    for _ in range(5):
        gallery.locator("img").first.click()
        try:
            expect(selected).not_to_have_value("", timeout=3000)
            return
        except AssertionError:
            page.keyboard.press("Escape")   # close the preview the click opened; try again
    raise AssertionError("no image could be selected in the library gallery")

"""The health panel in Chromium: a teacher logged in to a class app sees it, in English and after the
language switch in Chinese, with the class's searches and a refused one on it; a student logged in
to the same app has no such tab. Screenshots in test-artifacts/health_*.png."""
from __future__ import annotations

import httpx
import pytest

from core.settings import ASSETS_DIR
from test_ui_browser import TIMEOUT_MS, browser, shot  # noqa: F401  (shared fixture)
from ui_server import serve

pytestmark = [pytest.mark.browser,
              pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:.*:Warning:gradio.queueing")]

TEACHER, STUDENT = ("teacher", "pw-teacher"), ("ann", "pw-ann")
CAT = ASSETS_DIR / "samples" / "cat_chelsea.jpg"


@pytest.fixture(scope="module")
def app(tiny_clip_path, tmp_path_factory):
    with serve(tiny_clip_path, tmp_path_factory.mktemp("health_browser") / "library", lang="en",
               auth=[STUDENT], admin=TEACHER) as served:
        served.wb.add([CAT])
        with httpx.Client(base_url=served.url, timeout=60, auth=STUDENT) as http:   # some of the class's work
            for q in ("a cat", "一只猫", "a red circle"):
                http.get("/api/search", params={"q": q}).raise_for_status()
            refused = http.get("/api/similar/zzzzzz")
            assert refused.status_code == 400   # not an image id: refused, and listed on the panel
        yield served


def logged_in(browser, url: str, who: tuple[str, str]):
    """(context, page) of `who` logged in through Gradio's login form, the app loaded."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000}, locale="en-US")
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.goto(url)
    page.locator("input[type=text]").first.fill(who[0])
    page.locator("input[type=password]").fill(who[1])
    page.get_by_role("button", name="Login").click()
    page.get_by_role("tab", name="Library").wait_for()
    return context, page


def test_the_teacher_sees_the_panel_in_both_languages(browser, app):
    context, page = logged_in(browser, app.url, TEACHER)
    try:
        page.get_by_role("tab", name="Health").click()
        panel = page.locator("#health-panel")
        panel.get_by_text("How the class and the server are doing").wait_for()
        panel.get_by_text("LibraryError").first.wait_for()
        text = panel.inner_text()
        assert "search" in text and "p50 / p95 (5 min)" in text and "Memory (RSS)" in text and "budget" in text
        shot(page, "health_en")
        page.locator("#lang").get_by_text("中文").click()
        panel.get_by_text("课堂与服务器状态").wait_for()
        text = panel.inner_text()
        assert "搜索" in text and "内存（RSS）" in text and "预算" in text and "LibraryError" in text
        assert page.get_by_role("tab", name="运行状态").is_visible()
        shot(page, "health_zh")
    finally:
        context.close()


def test_a_student_has_no_panel(browser, app):
    context, page = logged_in(browser, app.url, STUDENT)
    try:
        page.get_by_role("tab", name="Learn").wait_for()
        page.wait_for_timeout(1500)   # the load events have run (the teacher's tab shows by then)
        assert page.get_by_role("tab", name="Health").count() == 0
        panel = page.locator("#health-panel")
        assert panel.count() == 0 or not panel.is_visible()
    finally:
        context.close()

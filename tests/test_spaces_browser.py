"""A Space without a persistent disk, in Chromium (issue 11, item 7): the banner says, in the UI's
language, that uploads vanish on a restart and how to keep them. Screenshots in test-artifacts/space_*.png."""
from __future__ import annotations

import pytest

from test_ui_browser import browser, open_page, shot  # noqa: F401  (shared fixture)
from ui_server import serve

pytestmark = [pytest.mark.browser,
              pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:.*:Warning:gradio.queueing")]


@pytest.fixture(scope="module")
def app(tiny_clip_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("space_browser")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPACE_ID", "teacher/clip-workbench")               # on a Space ...
        mp.setenv("CLIP_WB_PERSISTENT_ROOT", str(root / "no-disk"))   # ... with no persistent disk mounted
        mp.delenv("CLIP_WB_SYNC_TO_HUB", raising=False)
        with serve(tiny_clip_path, root / "library") as served:
            yield served


@pytest.mark.parametrize("locale, marker, name", [("en-US", "vanish", "space_warning_en"),
                                                  ("zh-CN", "重启", "space_warning_zh")])
def test_a_space_without_a_disk_warns_that_uploads_vanish(browser, app, locale, marker, name):
    context, page = open_page(browser, app.url, locale, ready="图库" if locale.startswith("zh") else "Library")
    try:
        banner = page.locator("#storage")
        banner.get_by_text(marker).first.wait_for()
        text = banner.inner_text()
        assert "/data" in text and "--sync-to-hub" in text, text
        shot(page, name)
    finally:
        context.close()

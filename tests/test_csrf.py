"""The JSON API's writing endpoints refuse another site's page, over real HTTP: a browser logged in
to the app (Gradio's cookie) sends a POST that names a foreign Origin or Referer."""
from __future__ import annotations

import io

import httpx
import pytest
from PIL import Image

from ui_server import serve

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:.*:Warning:gradio.queueing")
STUDENT, TEACHER = ("ann", "pw-ann"), ("teacher", "pw-teacher")


def png(color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (20, 20), color).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def app(tiny_clip_path, tmp_path_factory):
    with serve(tiny_clip_path, tmp_path_factory.mktemp("csrf") / "library", lang="en",
               auth=[STUDENT], admin=TEACHER) as served:
        yield served


@pytest.fixture
def browser(app):
    """A student's browser, logged in through the app's form (it holds Gradio's login cookie)."""
    with httpx.Client(base_url=app.url, timeout=60) as http:
        assert http.post("login", data={"username": STUDENT[0], "password": STUDENT[1]}).status_code == 200
        yield http


@pytest.mark.parametrize("headers", [{"Origin": "https://evil.example"}, {"Origin": "null"},
                                     {"Referer": "https://evil.example/page.html"},
                                     {"Origin": "http://127.0.0.1:1"}])
def test_a_foreign_page_cannot_post_with_the_login_cookie(app, browser, headers):
    before = len(app.wb)
    r = browser.post("api/images", headers=headers, files=[("files", ("x.png", png((1, 2, 3)), "image/png"))])
    assert r.status_code == 403 and r.json()["kind"] == "CrossSiteRequest", r.text
    assert len(app.wb) == before
    r = browser.post("api/search/vector", headers=headers, json={"vector": [0.1] * app.wb.encoder.dim})
    assert r.status_code == 403


def test_the_apps_own_page_and_non_browser_clients_may(app, browser):
    own = app.url.rstrip("/")
    r = browser.post("api/images", headers={"Origin": own}, files=[("files", ("a.png", png((9, 8, 7)), "image/png"))])
    assert r.status_code == 200, r.text
    r = browser.post("api/images", headers={"Referer": own + "/?__theme=dark"},
                     files=[("files", ("b.png", png((19, 18, 17)), "image/png"))])
    assert r.status_code == 200, r.text
    with httpx.Client(base_url=app.url, timeout=60, auth=STUDENT) as script:   # no Origin, no Referer
        r = script.post("api/images", files=[("files", ("c.png", png((29, 28, 27)), "image/png"))])
        assert r.status_code == 200, r.text
    # reading stays open to other sites' pages (it changes nothing; the login still decides)
    assert browser.get("api/stats", headers={"Origin": "https://evil.example"}).status_code == 200


def test_an_allowed_site_may(app, browser, monkeypatch):
    monkeypatch.setenv("CLIP_WB_API_ORIGINS", "https://school.example, https://other.example")
    r = browser.post("api/search/vector", headers={"Origin": "https://school.example"},
                     json={"vector": [0.1] * app.wb.encoder.dim})
    assert r.status_code == 200, r.text

"""ui/locale.py: the <head> script that starts Gradio in the app's language, on real HTTP responses."""
from __future__ import annotations

from starlette.applications import Starlette
from starlette.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from ui.app import launch_options
from ui.locale import LocaleScript, detect_js, head_script, switch_js

PAGE = "<!doctype html><html><head><title>t</title></head><body>hi</body></html>"


def _client(forced: str | None) -> TestClient:
    async def page(request):
        return HTMLResponse(PAGE)

    async def data(request):
        return JSONResponse({"head": "<head>"})

    async def streamed(request):
        async def parts():
            yield b"<html><he"
            yield b"ad><title>s</title></head></html>"
        return StreamingResponse(parts(), media_type="text/html")

    app = Starlette(routes=[Route("/", page, methods=["GET", "HEAD"]), Route("/data", data),
                            Route("/streamed", streamed)])
    return TestClient(LocaleScript(app, forced=forced))


def test_html_pages_get_the_script_first_in_their_head():
    r = _client("zh").get("/")
    assert r.status_code == 200 and r.text.startswith("<!doctype html><html><head><script>")
    assert '"zh-CN"' in r.text and int(r.headers["content-length"]) == len(r.content)
    assert r.text.count("<script>") == 1 and r.text.endswith("<body>hi</body></html>")


def test_a_head_split_across_chunks_and_other_responses():
    client = _client(None)
    streamed = client.get("/streamed")
    assert streamed.text.startswith("<html><head><script>") and streamed.text.endswith("<title>s</title></head></html>")
    assert client.get("/data").json() == {"head": "<head>"}               # JSON untouched
    assert client.head("/").status_code == 200                              # HEAD is not rewritten


def test_the_script_prefers_the_address_then_the_flag():
    forced, free = head_script("zh"), head_script(None)
    assert "lang" in forced and '"zh"' in forced and "null" in free       # ?lang= first, then --lang, else nothing
    assert "changeLocale" in switch_js()
    assert "navigator.language" in detect_js(True)          # following the browser (or the page's locale)
    assert "navigator.language" not in detect_js(False)     # --lang: the radio keeps it unless ?lang= asks


def test_the_page_is_served_by_python_not_node():
    """GRADIO_SSR_MODE=true (set on Spaces) would have Node serve the HTML, past LocaleScript and the guards."""
    assert launch_options()["ssr_mode"] is False

"""The MCP tools (ui/mcp.py) through the official `mcp` client over real HTTP, against the app as demo.py
--mcp serves it (tests/ui_server.py) with a tiny CLIP, a tiny captioner and the class's logins."""
from __future__ import annotations

import asyncio
import base64
import io
import json

import httpx
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from PIL import Image

import demo as demo_py
from core import SearchQuery, parse_terms
from core.language.caption import Captioner
from core.settings import ASSETS_DIR, pick_runtime
from tests.hf_tiny_text import make_tiny_vit_gpt2_dir
from ui.mcp import MCP_PATH, TOOLS, mcp_problem
from ui_server import serve

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:This MCP server includes a tool:UserWarning")
STUDENT, TEACHER = ("ann", "pw1"), ("teacher", "secret")
CAT = ASSETS_DIR / "samples" / "cat_chelsea.jpg"
SAMPLES = sorted((ASSETS_DIR / "samples").glob("*.jpg"))[:4]


def data_uri(data: bytes, mime: str = "image/jpeg") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def png(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (28, 22), color).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def app(tiny_clip_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("mcp")
    with serve(tiny_clip_path, root / "library", lang="en", auth=STUDENT, admin=TEACHER, mcp=True) as served:
        served.wb.add(sorted(set(SAMPLES) | {CAT}))   # the machine's own user stocks the library
        served.wb.provide(captioner=Captioner(str(make_tiny_vit_gpt2_dir(root / "vit-gpt2")), pick_runtime("cpu")))
        yield served


async def _session(url: str, auth: tuple[str, str] | None, work):
    """One MCP session as an assistant's client opens it: streamable HTTP, HTTP Basic when given."""
    async with httpx.AsyncClient(auth=httpx.BasicAuth(*auth) if auth else None, timeout=60) as http:
        async with streamable_http_client(url.rstrip("/") + MCP_PATH, http_client=http) as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                return await work(session)


def call(app, name: str, arguments: dict | None = None, auth=STUDENT):
    return asyncio.run(_session(app.url, auth, lambda s: s.call_tool(name, arguments or {})))


def answer(result) -> dict:
    """A tool's JSON answer (it must not be an error)."""
    assert not result.isError, result.content[0].text
    return json.loads(result.content[0].text)


def refusal(result) -> str:
    """A tool's refusal: its text says it in English, then in Chinese."""
    assert result.isError
    text = result.content[0].text
    english, _, chinese = text.partition("\n")
    assert not _chinese(english) and _chinese(chinese), text
    return text


def _chinese(text: str) -> bool:
    return any("\u4e00" <= c <= "\u9fff" for c in text)


def test_exactly_the_five_tools_with_bilingual_descriptions(app):
    tools = asyncio.run(_session(app.url, STUDENT, lambda s: s.list_tools())).tools
    assert sorted(t.name for t in tools) == sorted(TOOLS)   # none of the page's endpoints
    for tool in tools:
        assert _chinese(tool.description) and "Returns" in tool.description
    schema = {t.name: t.inputSchema for t in tools}
    assert schema["search_library"]["required"] == ["query"] and schema["search_library"]["properties"]["k"]["default"] == 10
    assert schema["classify_image"]["properties"]["labels"]["type"] == "array"
    assert "request" not in json.dumps(schema)
    # a page endpoint is not callable as a tool either, nor listed in Gradio's schema route
    assert "Unknown tool" in call(app, "library_page", {"page": 1}).content[0].text
    assert sorted(t["name"] for t in httpx.get(app.url.rstrip("/") + MCP_PATH + "schema").json()) == sorted(TOOLS)
    assert mcp_problem(app.demo) is None


def test_search_returns_stored_images_served_by_the_app(app):
    found = answer(call(app, "search_library", {"query": "a photo of a cat", "k": 3}))
    hits = found["results"]
    assert len(hits) == 3 and [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    stored = {e.id: e for e in app.wb.entries()}
    assert all(h["id"] in stored and h["name"] == stored[h["id"]].name for h in hits)
    image = httpx.get(hits[0]["image_url"], auth=STUDENT)   # the same login reads it from the JSON API
    assert image.status_code == 200 and image.content == stored[hits[0]["id"]].path.read_bytes()
    assert ("search", "mcp") in app.wb.monitor.series()[0]   # counted as an MCP call by the front door


def test_search_reads_weighted_terms_like_the_page(app):
    """The same rclip syntax as the page and POST /api/search: weights, a minus term, the plan said."""
    query = '"2:a photo of a cat" - dog'
    found = answer(call(app, "search_library", {"query": query, "k": 3}))
    assert found["plan"] and "cat" in found["plan"] and "dog" in found["plan"]
    direct = app.wb.search(SearchQuery(terms=parse_terms(query), k=3))
    assert [h["id"] for h in found["results"]] == [h.id for h in direct.hits]


def test_classify_from_base64_or_a_library_url(app):
    labels = ["cat", "dog", "car"]
    by_data = answer(call(app, "classify_image", {"image": data_uri(CAT.read_bytes()), "labels": labels}))["labels"]
    assert sorted(x["label"] for x in by_data) == sorted(labels)
    assert abs(sum(x["probability"] for x in by_data) - 1) < 1e-3
    assert [x["probability"] for x in by_data] == sorted((x["probability"] for x in by_data), reverse=True)
    cat = next(e for e in app.wb.entries() if e.name == CAT.name)
    url = app.url.rstrip("/") + f"/api/images/{cat.id}"
    assert answer(call(app, "classify_image", {"image": url, "labels": labels}))["labels"] == by_data


def test_caption_and_stats(app):
    captions = answer(call(app, "caption_image", {"image": data_uri(CAT.read_bytes())}))
    assert isinstance(captions["caption_en"], str) and captions["caption_en"].strip()
    stats = answer(call(app, "library_stats"))
    assert stats["images"] == len(app.wb) >= len(set(SAMPLES) | {CAT}) and stats["model_id"] == app.wb.encoder.model_id
    assert "path" not in stats and stats["max_k"] > 0


def test_the_teacher_adds_an_image_a_student_may_not(app):
    new = png((12, 200, 40))
    before = len(app.wb)
    refused = refusal(call(app, "add_image", {"image": data_uri(new, "image/png")}, auth=STUDENT))
    assert "teacher" in refused and "教师" in refused and len(app.wb) == before
    report = answer(call(app, "add_image", {"image": data_uri(new, "image/png")}, auth=TEACHER))
    assert len(report["added"]) == 1 and report["id"] == report["added"][0] and report["images"] == before + 1
    stored = httpx.get(report["image_url"], auth=TEACHER)
    assert stored.status_code == 200 and stored.content == new   # stored as sent, readable afterwards
    again = answer(call(app, "add_image", {"image": base64.b64encode(new).decode()}, auth=TEACHER))
    assert again["added"] == [] and again["id"] == report["id"] and len(app.wb) == before + 1   # stored once


@pytest.mark.parametrize("auth", [None, ("ann", "wrong")])
def test_a_client_without_a_valid_login_is_refused(app, auth):
    text = refusal(call(app, "search_library", {"query": "cat"}, auth=auth))
    assert "Log in" in text and "登录" in text


def test_bad_images_get_a_clear_message(app):
    not_image = refusal(call(app, "classify_image", {"image": data_uri(b"hello, not a picture"), "labels": ["a", "b"]}))
    assert "assistant-upload" in not_image and "图片" in not_image
    assert "base64" in refusal(call(app, "caption_image", {"image": "no image here!"}))
    elsewhere = refusal(call(app, "caption_image", {"image": "https://example.com/cat.jpg"}))
    assert "other sites" in elsewhere and "其他网站" in elsewhere   # never fetched from the server
    assert "No image with id" in refusal(call(app, "caption_image", {"image": "abcdef123456"}))


def test_the_docs_client_snippet_runs(app, capsys):
    """docs/API.md's MCP client (a ```py block: the gradio_client snippets' runner skips it) as written."""
    import re
    from core.settings import PROJECT_ROOT
    doc = (PROJECT_ROOT / "docs" / "API.md").read_text(encoding="utf-8")
    code = re.search(r"```py\n(.*?)```", doc, flags=re.S).group(1).replace('"http://127.0.0.1:7860/"', repr(app.url))
    exec(compile(code, "docs/API.md", "exec"), {})
    out = capsys.readouterr().out
    assert all(name in out for name in TOOLS) and '"results"' in out


def test_an_app_without_logins_is_open_to_every_client(tiny_clip_path, tmp_path):
    """As its page is: no login, and each client is the one local user (who may add)."""
    with serve(tiny_clip_path, tmp_path / "library", mcp=True) as served:
        report = answer(call(served, "add_image", {"image": data_uri(png((90, 10, 160)), "image/png")}, auth=None))
        assert report["images"] == len(served.wb) == 1
        assert answer(call(served, "library_stats", auth=None))["images"] == 1


def test_mcp_flag_and_a_failed_start_said_at_start(tiny_clip_path, tmp_path, monkeypatch):
    assert demo_py.parse_args(["--mcp"]).mcp and not demo_py.parse_args([]).mcp
    monkeypatch.setenv("CLIP_WB_MCP", "1")
    assert demo_py.parse_args([]).mcp   # on a Space, by its variable

    def broken(self, blocks):   # what Gradio meets with mcp 2.x
        raise AttributeError("'Server' object has no attribute 'call_tool'")
    monkeypatch.setattr("gradio.mcp.GradioMCPServer.__init__", broken)
    with serve(tiny_clip_path, tmp_path / "library", mcp=True) as served:
        assert httpx.get(served.url + "api/stats").status_code == 200   # the page and API run on
        problem = mcp_problem(served.demo)
    assert problem is not None and "call_tool" in problem and 'gradio[mcp]==6.31.0' in problem and "MCP 服务器" in problem

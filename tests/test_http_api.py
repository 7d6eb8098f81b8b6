"""The JSON HTTP API (/api/...) over real HTTP, served beside the Gradio app by tests/ui_server.py,
built as demo.py builds it, with a tiny real CLIP and a tmp library."""
from __future__ import annotations

from http.client import HTTPConnection
import io
from urllib.parse import urlparse

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from core.library.search import MAX_K
from core.settings import ASSETS_DIR
from ui.http_api import build_api
from ui_server import serve

SAMPLES = sorted((ASSETS_DIR / "samples").glob("*.jpg"))[:4]
CAT = ASSETS_DIR / "samples" / "cat_chelsea.jpg"
HIT_KEYS = {"id", "score", "name", "image_url"}


def png(color=(200, 30, 30), size=(24, 20)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def app(tiny_clip_path, tmp_path_factory):
    with serve(tiny_clip_path, tmp_path_factory.mktemp("http_api") / "library", lang="en") as served:
        report = httpx.post(served.url + "api/images", timeout=60,
                            files=[("files", (p.name, p.read_bytes(), "image/jpeg")) for p in SAMPLES + [CAT]])
        assert report.status_code == 200, report.text
        yield served


@pytest.fixture(scope="module")
def http(app):
    with httpx.Client(base_url=app.url, timeout=60) as client:
        yield client


def cat_id(app) -> str:
    return next(e.id for e in app.wb.entries() if e.name == CAT.name)


def test_search_contract(app, http):
    r = http.get("/api/search", params={"q": "a photo of a cat", "k": 3})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    results = r.json()["results"]
    assert len(results) == 3 and all(HIT_KEYS <= set(h) for h in results)
    assert [h["score"] for h in results] == sorted((h["score"] for h in results), reverse=True)
    hit = results[0]
    assert len(hit["id"]) == 12 and isinstance(hit["score"], float) and isinstance(hit["name"], str)
    image = http.get(hit["image_url"])
    assert image.status_code == 200 and image.headers["content-type"].startswith("image/")
    assert image.content == app.wb.entry(hit["id"]).path.read_bytes()
    Image.open(io.BytesIO(image.content)).verify()
    thumb = http.get(hit["thumb_url"])
    assert thumb.headers["content-type"] == "image/jpeg" and max(Image.open(io.BytesIO(thumb.content)).size) <= 256


def test_search_minus_threshold_and_chinese(http):
    r = http.get("/api/search", params={"q": "cat", "minus": "dog, 人", "k": 5, "threshold": 0.99})
    assert r.status_code == 200 and all(h["score"] >= 0.99 for h in r.json()["results"])
    body = http.get("/api/search", params={"q": "一只猫", "k": 2}).json()
    assert len(body["results"]) == 2 and "query_used" in body and "note" in body


def test_stats(app, http):
    stats = http.get("/api/stats").json()
    assert stats["images"] == len(SAMPLES) + (CAT not in SAMPLES) == len(app.wb)
    assert stats["model_id"] == app.wb.encoder.model_id and stats["dim"] == app.wb.library.dim
    assert "path" not in stats   # no server paths to clients


def test_search_by_image_upload_finds_it_first(app, http):
    r = http.post("/api/search/image", params={"k": 2}, files={"image": ("q.jpg", CAT.read_bytes(), "image/jpeg")})
    first = r.json()["results"][0]
    assert r.status_code == 200 and first["id"] == cat_id(app) and first["score"] > 0.99


def test_vector_and_similar(app, http):
    vector = app.wb.encoder.encode_images([Image.open(CAT).convert("RGB")])[0].tolist()
    r = http.post("/api/search/vector", json={"vector": vector, "k": 2})
    assert r.status_code == 200 and r.json()["results"][0]["id"] == cat_id(app)
    r = http.get(f"/api/similar/{cat_id(app)}", params={"k": 3})
    body = r.json()
    assert body["query"]["name"] == CAT.name and body["results"][0]["id"] == cat_id(app)


def test_classify(http):
    r = http.post("/api/classify", files={"image": ("cat.jpg", CAT.read_bytes(), "image/jpeg")},
                  data={"labels": "cat, dog, 小鸟", "top_k": "5"})
    body = r.json()
    assert r.status_code == 200 and {c["label"] for c in body["labels"]} == {"cat", "dog", "小鸟"}
    assert sum(c["probability"] for c in body["labels"]) == pytest.approx(1, abs=1e-4) and "note" in body
    r = http.post("/api/classify", files={"image": ("cat.jpg", CAT.read_bytes(), "image/jpeg")},
                  data={"labels": "cat"})
    assert r.status_code == 400 and r.json()["kind"] == "LabelError"


def test_add_reports_added_duplicates_and_errors(app, http):
    files = [("files", ("new.png", png(), "image/png")), ("files", ("again.jpg", CAT.read_bytes(), "image/jpeg")),
             ("files", ("broken.jpg", b"\xff\xd8\xff\xe0 not really a jpeg", "image/jpeg")),
             ("files", ("page.png", b"<!doctype html><html><body>hi</body></html>", "image/png"))]
    report = http.post("/api/images", files=files).json()
    assert len(report["added"]) == 1 and report["duplicates"] == ["again.jpg"]
    assert sorted(e["name"] for e in report["errors"]) == ["broken.jpg", "page.png"]
    assert report["images"] == len(app.wb) and app.wb.entry(report["added"][0]).name == "new.png"


def test_library_page(app, http):
    body = http.get("/api/library", params={"page": 1}).json()
    assert body["total"] == len(app.wb) and body["pages"] == 1 and body["page"] == 1
    entry = body["entries"][0]
    assert {"id", "name", "added", "width", "height", "image_url", "thumb_url"} <= set(entry)
    assert http.get(entry["image_url"]).status_code == 200


@pytest.mark.parametrize("method, url, kwargs, status, kind", [
    ("GET", "/api/search", {}, 400, "QueryError"),
    ("GET", "/api/search?q=%20%20", {}, 400, "QueryError"),
    ("GET", "/api/search?q=cat&k=0", {}, 400, "QueryError"),
    ("GET", f"/api/search?q=cat&k={10 ** 6}", {}, 400, "QueryError"),
    ("GET", "/api/search?q=cat&k=ten", {}, 400, "ValidationError"),
    ("GET", f"/api/similar/abcdef?k={MAX_K + 1}", {}, 400, "QueryError"),
    ("GET", "/api/images/abcdef123456", {}, 404, "LibraryError"),
    ("GET", "/api/images/abcdef123456/thumb", {}, 404, "LibraryError"),
    ("GET", "/api/similar/abcdef123456", {}, 404, "LibraryError"),
    ("GET", "/api/images/features_library.pth", {}, 400, "LibraryError"),
    ("POST", "/api/search/image", {"files": {"image": ("x.jpg", b"\xff\xd8\xff garbage", "image/jpeg")}}, 400,
     "ImageError"),
    ("POST", "/api/search/image", {"files": {"image": ("x.png", b"<html><script>1</script></html>", "image/png")}},
     400, "ImageError"),
    ("POST", "/api/search/image", {}, 400, "ValidationError"),
    ("POST", "/api/search/vector", {"json": {"vector": [0.1, 0.2], "k": 3}}, 400, "QueryError"),
    ("POST", "/api/search/vector", {"json": {"vector": "nope"}}, 400, "ValidationError"),
])
def test_bad_inputs_are_json_errors(http, method, url, kwargs, status, kind):
    r = http.request(method, url, **kwargs)
    assert r.status_code == status and r.json()["kind"] == kind and r.json()["error"]
    assert "Traceback" not in r.text


@pytest.mark.parametrize("path", [
    "/api/images/../features_library.pth", "/api/images/..%2Ffeatures_library.pth",
    "/api/images/%2e%2e%2ffeatures_library.pth", "/api/images/..%2F..%2Fetc%2Fpasswd",
    "/api/images/%2e%2e/thumb", "/api/similar/..%2Ffeatures_library.pth", "/api/images/.%2e",
])
def test_path_traversal_never_serves_files(app, path):
    """Raw paths (http.client sends them as written; httpx would resolve the dots)."""
    url = urlparse(app.url)
    conn = HTTPConnection(url.hostname, url.port, timeout=30)
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read()
    conn.close()
    assert r.status in (400, 404) and not body.startswith(b"PK") and b"root:" not in body
    assert r.getheader("content-type", "").startswith("application/json")


def test_oversized_uploads_are_refused_before_reading(app):
    """A small limit on a second router over the same Workbench (the real one is 100 MiB)."""
    api = FastAPI(routes=build_api(app.wb, max_bytes=1000).routes)
    with TestClient(api) as client:
        huge = ("huge.png", png() + b"\0" * 100_000, "image/png")   # the body is over the limit: not even parsed
        r = client.post("/api/search/image", files={"image": huge})
        assert r.status_code == 413 and r.json()["kind"] == "TooLarge"
        big = ("big.png", png() + b"\0" * 2000, "image/png")          # the file is over the limit: not read
        r = client.post("/api/search/image", files={"image": big})
        assert r.status_code == 400 and "over the 1,000-byte limit" in r.json()["error"]
        r = client.post("/api/images", files=[("files", big), ("files", ("ok.png", png((1, 2, 3), (8, 8)), "image/png"))])
        assert r.status_code == 200 and [e["name"] for e in r.json()["errors"]] == ["big.png"]
        assert len(r.json()["added"]) == 1


def test_the_gradio_app_is_still_served(http):
    assert http.get("/").status_code == 200 and http.get("/gradio_api/info").status_code == 200


def test_auth_guards_the_api(tiny_clip_path, tmp_path):
    with serve(tiny_clip_path, tmp_path / "library", lang="en", auth=("teacher", "secret")) as app, \
            httpx.Client(base_url=app.url, timeout=60) as http:
        r = http.get("/api/stats")
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
        assert r.json()["kind"] == "Unauthorized"
        assert http.get("/api/stats", auth=("teacher", "wrong")).status_code == 401
        assert http.get("/api/search?q=cat", auth=("student", "secret")).status_code == 401
        assert http.get("/api/stats", headers={"Authorization": "Basic !!!"}).status_code == 401
        assert http.get("/api/stats", auth=("teacher", "secret")).json()["images"] == 0
        r = http.post("/api/images", files={"files": ("a.png", png(), "image/png")})
        assert r.status_code == 401 and len(app.wb) == 0
        # A browser logged in to the app (Gradio's session cookie) may call the API too
        assert http.post("/login", data={"username": "teacher", "password": "secret"}).status_code == 200
        assert http.get("/api/stats").status_code == 200

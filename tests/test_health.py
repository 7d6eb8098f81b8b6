"""How the class and the server are doing, over real HTTP (tests/ui_server.py builds the app as demo.py
does): GET /metrics scraped by prometheus_client's own parser, GET /api/health (the panel's numbers),
both behind the JSON API's logins; every surface's calls counted; and a scrape answered at once while
the model is busy and requests wait in the queue."""
from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import httpx
import pytest
from gradio_client import Client
from prometheus_client.parser import text_string_to_metric_families

from core.settings import ASSETS_DIR
from ui_server import serve

CAT = ASSETS_DIR / "samples" / "cat_chelsea.jpg"
TEACHER, STUDENT = ("teacher", "pw-teacher"), ("ann", "pw-ann")


def scrape(http: httpx.Client, **kwargs) -> dict:
    """GET /metrics -> {family name: {label tuple: value}} read by the real Prometheus parser."""
    r = http.get("/metrics", **kwargs)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {f.name: {tuple(sorted(s.labels.items())) + (s.name,): s.value for s in f.samples}
            for f in text_string_to_metric_families(r.text)}


def requests_of(families: dict, action: str, outcome: str) -> float:
    """clipwb_requests_total of `action` and `outcome`, over every surface."""
    return sum(v for key, v in families["clipwb_requests"].items()
               if ("action", action) in key and ("outcome", outcome) in key)


@pytest.fixture(scope="module")
def class_app(tiny_clip_path, tmp_path_factory):
    with serve(tiny_clip_path, tmp_path_factory.mktemp("health") / "library", lang="en",
               auth=[STUDENT], admin=TEACHER) as served:
        served.wb.add([CAT])
        yield served


def test_metrics_need_a_login_and_count_every_call(class_app):
    with httpx.Client(base_url=class_app.url, timeout=60) as http:
        assert http.get("/metrics").status_code == 401            # the JSON API's logins
        before = scrape(http, auth=STUDENT)
        http.get("/api/search", params={"q": "a cat", "k": 2}, auth=STUDENT).raise_for_status()
        refused = http.get("/api/similar/zzzzzz", auth=STUDENT)    # not an id: refused, its kind kept
        assert refused.status_code == 400
        Client(class_app.url, auth=STUDENT, verbose=False).predict("a cat", None, "", 3, 0, api_name="/search")
        after = scrape(http, auth=TEACHER)
    grew = lambda *key: requests_of(after, *key) - requests_of(before, *key)   # noqa: E731
    assert grew("search", "ok") == 2 and grew("search", "refused") == 1   # the JSON API's two, the page's one
    hist = after["clipwb_request_seconds"]
    count = sum(v for k, v in hist.items() if ("action", "search") in k and k[-1] == "clipwb_request_seconds_count")
    inf = sum(v for k, v in hist.items() if ("action", "search") in k and ("le", "+Inf") in k)
    assert count == inf == requests_of(after, "search", "ok") + requests_of(after, "search", "refused")
    errors = after["clipwb_errors"]
    assert errors[(("action", "search"), ("kind", "LibraryError"), ("outcome", "refused"), "clipwb_errors_total")] >= 1
    assert after["clipwb_library_images"][("clipwb_library_images",)] == len(class_app.wb)
    assert after["clipwb_memory_rss_bytes"][("clipwb_memory_rss_bytes",)] > 50 * 2 ** 20
    assert ("clipwb_queue_waiting",) in after["clipwb_queue_waiting"]


def test_health_json_is_the_teachers_and_holds_the_panels_numbers(class_app):
    with httpx.Client(base_url=class_app.url, timeout=60) as http:
        http.get("/api/search", params={"q": "a dog"}, auth=TEACHER).raise_for_status()
        student = http.get("/api/health", auth=STUDENT)
        assert student.status_code == 403 and student.json()["kind"] == "PermissionDenied"
        assert http.get("/api/health").status_code == 401
        body = http.get("/api/health", auth=TEACHER).json()
    search = body["windows"]["5"]["search"]
    assert search["requests"] >= 1 and sum(search["surfaces"].values()) == search["requests"]
    assert 0 < search["p50_ms"] <= search["p95_ms"]
    assert body["model"] == class_app.wb.encoder.model_id and body["library"]["images"] == len(class_app.wb)
    assert body["library"]["budget_bytes"] == int(class_app.access.limits.budget_mb * 2 ** 20)
    assert body["queue"] == {"waiting": 0, "running": 0}


def test_a_scrape_never_waits_behind_model_work(tiny_clip_path, tmp_path, monkeypatch):
    """Every model slot busy and more searches queued: /metrics and /api/health answer at once,
    and say how many wait."""
    with serve(tiny_clip_path, tmp_path / "library", lang="en") as app:
        gate, searching = threading.Event(), threading.Semaphore(0)
        real = app.wb.searcher.search

        def stuck(*args, **kwargs):
            searching.release()
            gate.wait(60)
            return real(*args, **kwargs)
        monkeypatch.setattr(app.wb.searcher, "search", stuck)
        client = Client(app.url, verbose=False)
        jobs = [client.submit(f"query {i}", None, "", 3, 0, api_name="/search") for i in range(20)]
        try:
            for _ in range(16):                    # the app's model slots on a CPU (QueueConfig.heavy_cpu)
                assert searching.acquire(timeout=60)
            with httpx.Client(base_url=app.url, timeout=60) as http:
                start = time.perf_counter()
                families = scrape(http)
                body = http.get("/api/health").json()
                took = time.perf_counter() - start
        finally:
            gate.set()
        for job in jobs:
            job.result(timeout=120)
    assert took < 2.0
    assert families["clipwb_queue_running"][("clipwb_queue_running",)] >= 16
    assert families["clipwb_queue_waiting"][("clipwb_queue_waiting",)] >= 1 and body["queue"]["waiting"] >= 1


def test_the_panel_says_everything_in_both_languages():
    """ui/health.py's text for one snapshot: each action's row, the queue, memory, disk against the budget,
    the errors by kind and the last message, in English and in Chinese (core's Msg said in each)."""
    from core.errors import QuotaError
    from core.health import Health
    from core.messages import Msg
    from core.monitor import Monitor
    from test_monitor import fake_workbench
    from ui.health import render
    m = Monitor()
    for s in (0.05, 0.1, 0.2):
        m.record("search", "page", s)
    m.record("classify", "api", 0.3)
    m.record("add", "page", 0.01, QuotaError(Msg("上传配额已满：<b>{n}</b>", "Upload quota reached: <b>{n}</b>", n=1)))
    snap = Health(lambda: fake_workbench(m), budget_mb=6).snapshot(queue=(5, 2))
    en, zh = render(snap, "en"), render(snap, "zh")   # 0.1 s and 0.2 s read as their bins' middles: 98 and 197 ms
    assert "| search | 3.0 | 98 ms / 197 ms |" in en and "| classify | 1.0 |" in en and "| add | 1.0 |" in en
    assert "| 搜索 | 3.0 | 98 ms / 197 ms |" in zh and "| 分类 |" in zh and "| 上传 |" in zh
    assert "5 waiting, 2 running" in en and "5 个等待，2 个运行中" in zh
    assert "3.0 MiB of the 6.0 MiB budget (50 %)" in en and "3.0 MiB / 预算 6.0 MiB (50 %)" in zh
    assert "`QuotaError` × 1" in en and "Upload quota reached: &lt;b&gt;1&lt;/b&gt;" in en   # escaped, not markup
    assert "上传配额已满：&lt;b&gt;1&lt;/b&gt;" in zh and "CPU（2 线程）" in zh and "CPU (2 threads)" in en
    assert "health." not in en + zh   # every key has its text


def test_a_model_switch_keeps_the_servers_history(tiny_clip_path, tmp_path):
    """The Learn tab's "use this model" builds a new workbench (Workbench.with_model): the monitor goes
    with it, so the panel and /metrics keep counting from the server's start."""
    from core.workbench import build_workbench
    from core.library.search import SearchQuery
    wb = build_workbench(str(tiny_clip_path), tmp_path / "a", device="cpu", offline=True, fallback=False)
    wb.search(SearchQuery(text="a cat", k=1))
    new = wb.with_model(str(tiny_clip_path), tmp_path / "b", seed=False)
    new.search(SearchQuery(text="a dog", k=1))
    assert new.monitor is wb.monitor and new.monitor.window(5)["search"].requests == 2
    busy = SimpleNamespace(start=lambda config: False)   # a training already runs: asked, answered, counted
    assert new.train(busy, None) is False and new.monitor.window(5)["train"].requests == 1

"""One way through the front door (core/workbench.py, core/policy.py, core/holder.py): each action
crosses each module once, the caller's policy is applied inside the Workbench, and every surface
gets the same answer. Real HTTP and gradio_client against the app built as demo.py builds it."""
from __future__ import annotations

import hashlib

import httpx
import pytest
from gradio_client import Client

import core.library.ingest as ingest_module
from core import Holder, SearchQuery, Upload, build_workbench
from core.access import LOCAL, Access, Accounts, Limits
from core.errors import PermissionDenied, QueryError, WorkbenchError
from core.library.search import WEAK_RATIO, check_query, count_strong
from core.library.store import Library
from core.settings import ASSETS_DIR
from core_fixtures import distinct_pngs
from tiny_models import make_tiny_clip_file
from ui_server import serve

SAMPLES = sorted((ASSETS_DIR / "samples").glob("*.jpg"))
QUERIES = ["a photo of a cat", "a red car", "beach", "dog", "coffee cup", "rocket"]
TEACHER, STUDENT = ("teacher", "t-secret"), ("ann", "a-secret")


@pytest.fixture(scope="module")
def app(tiny_clip_path, tmp_path_factory):
    with serve(tiny_clip_path, tmp_path_factory.mktemp("front") / "library", lang="en", auth=STUDENT,
               admin=TEACHER) as served:
        served.wb.add(SAMPLES)
        yield served


# ---------------------------------------------------------------- every surface, the same answer

def test_page_and_json_api_give_the_same_ids_in_the_same_order(app):
    """/api/search keeps all K hits, each marked weak or not by the rule the page applies; the page's
    /search shows exactly the strong ones, in the same order."""
    by_name = {e.name: e.id for e in app.wb.entries()}
    assert len(by_name) == len(SAMPLES)   # names are unique here, so a gallery caption names one id
    page = Client(app.url, auth=STUDENT, verbose=False)
    mixed = 0
    with httpx.Client(base_url=app.url, auth=STUDENT, timeout=60) as http:
        for q in QUERIES:
            results = http.get("/api/search", params={"q": q, "k": len(SAMPLES)}).json()["results"]
            gallery, _ = page.predict(q, None, "", len(SAMPLES), 0, api_name="/search")
            shown = [by_name[item["caption"].split(" · ", 1)[1]] for item in gallery]
            assert len(results) == len(SAMPLES) and all(isinstance(h["weak"], bool) for h in results)
            assert shown == [h["id"] for h in results if not h["weak"]], q
            flags = [h["weak"] for h in results]
            assert flags == sorted(flags), f"{q}: weak hits come last"
            best = results[0]["score"]
            assert all(h["weak"] == (best > 0 and h["score"] < WEAK_RATIO * best) for h in results), q
            mixed += 0 < len(shown) < len(results)
    assert mixed, "no query had both strong and weak hits: the comparison proved nothing"


def test_a_switch_reaches_every_surface_at_once_or_none(tmp_path):
    """The Learn tab's "use this model" goes through the server's Holder: afterwards the page and the
    JSON API answer with the new model; a switch that fails leaves both on the old one."""
    first, second = (make_tiny_clip_file(tmp_path / f"{n}.pt", seed=s) for n, s in (("a", 0), ("b", 1)))
    with serve(first, tmp_path / "lib-a", lang="en", admin=TEACHER) as app:
        holder = Holder.of(app.wb)
        teacher = app.access.caller(TEACHER[0], surface="page")
        before = app.wb.encoder.model_id
        page = Client(app.url, auth=TEACHER, verbose=False)
        with httpx.Client(base_url=app.url, auth=TEACHER, timeout=60) as http:
            with pytest.raises(WorkbenchError):   # no such model: nothing switches
                holder.switch(teacher, str(tmp_path / "missing.pt"), tmp_path / "lib-missing")
            assert http.get("/api/stats").json()["model_id"] == before and before in page.predict(
                api_name="/library_stats")
            with pytest.raises(PermissionDenied):   # the teacher only: nothing is built for anyone else
                holder.switch(app.access.caller("ann", surface="page"), str(second), tmp_path / "lib-b")
            assert not (tmp_path / "lib-b").exists()
            new = holder.switch(teacher, str(second), tmp_path / "lib-b")
            assert new is holder.wb and new.access is app.access   # one policy: quotas used so far carry over
            after = http.get("/api/stats").json()["model_id"]
            assert after == new.encoder.model_id != before
            assert after in page.predict(api_name="/library_stats")


# ---------------------------------------------------------------- the policy, applied inside

def _counting(monkeypatch):
    """Count reads, hashes and 'is it stored?' questions during an add."""
    calls = {"read": 0, "sha256": 0, "contains": 0}
    real_read, real_sha = ingest_module.read_file, hashlib.sha256

    def read(*a, **k):
        calls["read"] += 1
        return real_read(*a, **k)

    def sha(*a, **k):
        calls["sha256"] += 1
        return real_sha(*a, **k)
    monkeypatch.setattr(ingest_module, "read_file", read)
    monkeypatch.setattr(ingest_module.hashlib, "sha256", sha)
    real_contains = Library.contains

    def contains(self, sha):
        calls["contains"] += 1
        return real_contains(self, sha)
    monkeypatch.setattr(Library, "contains", contains)
    return calls


@pytest.mark.parametrize("surface", ["page", "cli"])
def test_each_file_is_read_and_hashed_once_and_asked_about_once(tiny_clip_path, tmp_path, monkeypatch, surface):
    wb = build_workbench(str(tiny_clip_path), tmp_path / "lib", device="cpu", offline=True, fallback=False)
    files = []
    for i, data in enumerate(distinct_pngs(5)):
        files.append(tmp_path / f"f{i}.png")
        files[-1].write_bytes(data)
    wb.add(files[:2])   # two already stored
    caller = wb.access.caller(None, "s1", "page") if surface == "page" else LOCAL
    calls = _counting(monkeypatch)
    report = wb.add(files, caller=caller)
    assert len(report.added) == 3 and len(report.duplicates) == 2 and report.total == 5
    # the page's upload is read by the front door (and held against limits), the local user's streams
    # through ingest: either way each file is read, hashed and looked up once
    assert calls == {"read": 5, "sha256": 5, "contains": 5}


def test_an_upload_over_the_quota_is_refused_before_it_is_all_read(tiny_clip_path, tmp_path, monkeypatch):
    """The front door stops reading once the new bytes pass what the caller may add: memory stays
    within the quota, and nothing is stored."""
    import numpy as np
    from PIL import Image

    from core.errors import QuotaError
    files = []
    for i in range(6):   # ~12 KB of noise each: incompressible
        files.append(tmp_path / f"noise{i}.png")
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(files[-1])
    access = Access(Accounts.parse(students=["ann:pw"], env={}), Limits(quota_mb=20_000 / 2 ** 20))
    wb = build_workbench(str(tiny_clip_path), tmp_path / "lib", device="cpu", offline=True, fallback=False,
                         access=access)
    calls = _counting(monkeypatch)
    with pytest.raises(QuotaError, match="Upload quota reached") as over:
        wb.add(files, caller=access.caller("ann", surface="page"))
    assert calls["read"] == 2 and len(wb) == 0 and access.used_mb(access.caller("ann")) == 0
    total_mb = sum(f.stat().st_size for f in files) / 2 ** 20
    assert f"this upload is {total_mb:.1f} MiB" in str(over.value)   # the whole upload, counted by size


def test_quota_and_roles_come_with_the_caller(tiny_clip_path, tmp_path):
    access = Access(Accounts.parse(students=["ann:pw"], admins=["teacher:pw"], env={}), Limits(quota_mb=0.01))
    wb = build_workbench(str(tiny_clip_path), tmp_path / "lib", device="cpu", offline=True, fallback=False,
                         access=access)
    ann, teacher = access.caller("ann", surface="api"), access.caller("teacher", surface="page")
    report = wb.add([Upload(f"{i}.png", d) for i, d in enumerate(distinct_pngs(3))], caller=ann)
    assert len(report.added) == 3 and report.total == 3
    with pytest.raises(PermissionDenied):
        wb.remove([report.added[0]], ann)
    with pytest.raises(PermissionDenied):
        wb.compact(ann)
    assert [e.id for e in wb.remove([report.added[0]], teacher)] == [report.added[0]]
    assert teacher.quota_mb is None and ann.quota_mb == 0.01 and LOCAL.quota_mb is None and not LOCAL.shared


def test_search_leaves_the_callers_query_alone_and_judges_weak_hits(tiny_clip_path, tmp_path):
    wb = build_workbench(str(tiny_clip_path), tmp_path / "lib", device="cpu", offline=True, fallback=False)
    wb.add(SAMPLES)
    query = SearchQuery(image=str(SAMPLES[0]), text="  a red car ", minus=["dog, 猫"], k=len(SAMPLES))
    result = wb.search(query)
    assert query.image == str(SAMPLES[0]) and query.text == "  a red car " and query.minus == ["dog, 猫"]
    assert result.strong == count_strong(result.hits) and result.weak == len(result.hits) - result.strong


def test_what_a_query_may_be_is_decided_once():
    q = check_query(SearchQuery(text="  cat ", minus=["dog, people", "，猫", ""], k=3))
    assert q.text == "cat" and q.minus == ["dog", "people", "猫"]
    for bad, match in ((SearchQuery(text=" "), "Empty query"), (SearchQuery(text="cat", k=0), "k must be"),
                       (SearchQuery(text="cat", threshold=float("nan")), "threshold")):
        with pytest.raises(QueryError, match=match):
            check_query(bad)

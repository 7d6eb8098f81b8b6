"""Safe to hand a class, through the real paths: the app built as demo.py builds it (tests/ui_server.py)
with the bundled mini model, a teacher, two students and a concept list that names "red circle" as
unsafe. A student's red circle waits for review, hidden from the other student's search, page and
JSON API, seen marked and approved by the teacher; the query "red circle" is refused; near-identical
images are grouped; the command line adds under the same rules."""
from __future__ import annotations

import io
import json
import subprocess
import sys

import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image, ImageFilter

import demo
from core.access import Access, Accounts
from core.images import MAX_BYTES
from core.library.search import SearchQuery
from core.safety import SafetyConfig
from core.settings import ASSETS_DIR, PROJECT_ROOT
from core.workbench import build_workbench
from ui_server import serve

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:.*:Warning:gradio.queueing")
SHAPES = ASSETS_DIR / "shapes"
RED_CIRCLE, BLUE_STAR, GREEN_SQUARE = SHAPES / "19_red_circle.png", SHAPES / "09_blue_star.png", SHAPES / "18_green_square.png"
ANN, BOB, TEACHER = ("ann", "pw-ann"), ("bob", "pw-bob"), ("teacher", "pw-teacher")


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def rules(tmp_path_factory):
    path = tmp_path_factory.mktemp("rules") / "class_rules.txt"
    path.write_text("# what our class keeps out\nred circle\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def app(rules, tmp_path_factory):
    safety = SafetyConfig(mode="standard", shared=True, concepts=str(rules))
    with serve("mini", tmp_path_factory.mktemp("class_safety") / "library", lang="en", auth=[ANN, BOB],
               admin=TEACHER, safety=safety) as served:
        Client(served.url, auth=TEACHER, verbose=False).predict([handle_file(GREEN_SQUARE)], api_name="/add_to_library")
        said = Client(served.url, auth=ANN, verbose=False).predict([handle_file(RED_CIRCLE), handle_file(BLUE_STAR)],
                                                                  api_name="/add_to_library")
        served.said = said
        yield served


def red_id(app) -> str:
    return next(e.id for e in app.wb.entries() if e.name == RED_CIRCLE.name)


def names(gallery) -> list[str]:
    return [item["caption"] for item in gallery]


def test_a_students_flagged_upload_waits_and_she_is_told(app):
    assert "Added 2" in app.said and "Waiting for the teacher's review: 1 image" in app.said, app.said
    assert app.wb.safety.review.is_held(app.wb.entry(red_id(app)).sha256)
    stats = httpx.get(app.url + "api/stats", auth=BOB).json()
    assert stats["safety"] == {"mode": "standard", "filter": f"zero-shot (class_rules.txt, 1 concept) on "
                                                             f"{app.wb.encoder.model_id}", "held": 1}


def test_another_student_neither_finds_nor_sees_it(app):
    bob = Client(app.url, auth=BOB, verbose=False)
    hits, _ = bob.predict("a shape", None, "", 10, 0, api_name="/search")
    assert hits and not any(RED_CIRCLE.name in c for c in names(hits)), names(hits)
    page, _ = bob.predict(1, api_name="/library_page")[:2]
    assert len(page) == 2 and not any(RED_CIRCLE.name in c for c in names(page))
    with httpx.Client(base_url=app.url, auth=BOB, timeout=60) as http:
        library = http.get("api/library").json()
        assert library["total"] == 2 and RED_CIRCLE.name not in {e["name"] for e in library["entries"]}
        found = http.get("api/search", params={"q": "a shape", "k": 10}).json()["results"]
        assert found and red_id(app) not in {h["id"] for h in found}
        vector = app.wb.library.vector(red_id(app)).tolist()   # even its own embedding does not find it
        assert red_id(app) not in {h["id"] for h in http.post("api/search/vector", json={"vector": vector}).json()["results"]}
        for route in (f"api/images/{red_id(app)}", f"api/images/{red_id(app)}/thumb", f"api/similar/{red_id(app)}"):
            assert http.get(route).status_code == 404, route
        assert http.get("api/review").status_code == 403
        assert http.post("api/review/approve", json={"ids": [red_id(app)]}).status_code == 403
    with pytest.raises(AppError, match="Only the teacher"):
        bob.predict(red_id(app), api_name="/approve_image")


def test_the_teacher_sees_it_marked_and_approves_in_one_click(app, rules, tmp_path_factory):
    teacher = Client(app.url, auth=TEACHER, verbose=False)
    page = teacher.predict(1, api_name="/library_page")[0]
    marked = [c for c in names(page) if RED_CIRCLE.name in c]
    assert marked and marked[0].startswith("⏸ waiting for review · "), names(page)
    queue, status = teacher.predict(api_name="/review_queue")
    assert len(queue) == 1 and queue[0]["caption"].startswith("flagged by the filter: red circle · 19_red_circle.png")
    assert status == "Waiting for review: 1 image."
    with httpx.Client(base_url=app.url, auth=TEACHER, timeout=60) as http:
        held = http.get("api/review").json()["held"]
        assert [(h["id"], h["concept"], h["by"]) for h in held] == [(red_id(app), "red circle", "ann")]
        assert {e["id"]: e["held"] for e in http.get("api/library").json()["entries"]}[red_id(app)] is True
        assert http.get(f"api/images/{red_id(app)}").status_code == 200
    said = teacher.predict(red_id(app), api_name="/approve_image")
    assert said.startswith(f"Approved 19_red_circle.png ({red_id(app)})")
    assert httpx.get(app.url + "api/stats", auth=BOB).json()["safety"]["held"] == 0
    found = httpx.get(app.url + "api/search", params={"q": "a shape", "k": 10}, auth=BOB).json()["results"]
    assert red_id(app) in {h["id"] for h in found}
    assert httpx.get(app.url + f"api/images/{red_id(app)}", auth=BOB).status_code == 200


def test_the_query_red_circle_is_refused_neutrally(app):
    for who in (BOB, TEACHER):
        with pytest.raises(AppError) as e:
            Client(app.url, auth=who, verbose=False).predict("red circle", None, "", 5, 0, api_name="/search")
        assert "This search is not available here" in str(e.value) and "red circle" not in str(e.value)
    r = httpx.get(app.url + "api/search", params={"q": "a red circle"}, auth=BOB)
    assert r.status_code == 400 and r.json()["kind"] == "QueryRefused" and "circle" not in r.json()["error"]
    assert httpx.get(app.url + "api/search", params={"q": "porn"}, auth=BOB).json()["kind"] == "QueryRefused"
    assert httpx.get(app.url + "api/search", params={"q": "blue star"}, auth=BOB).status_code == 200


def test_near_identical_images_are_reported_grouped_and_collapsed(app, tmp_path):
    star = Image.open(BLUE_STAR).convert("RGB")
    copy = tmp_path / "star_again.png"
    copy.write_bytes(png(star.resize((110, 110)).filter(ImageFilter.GaussianBlur(0.6))))
    with httpx.Client(base_url=app.url, auth=TEACHER, timeout=60) as http:
        added = http.post("api/images", files=[("files", (copy.name, copy.read_bytes(), "image/png"))]).json()
        star_id = next(e.id for e in app.wb.entries() if e.name == BLUE_STAR.name)
        assert [(n["id"], n["of"]) for n in added["near_duplicates"]] == [(added["added"][0], star_id)]
        groups = http.get("api/near-duplicates").json()["groups"]
        assert [[e["id"] for e in g] for g in groups] == [[star_id, added["added"][0]]]
        # on a shared link search shows the best of the two only
        found = [h["id"] for h in http.get("api/search", params={"q": "blue star", "k": 5}).json()["results"]]
        assert (star_id in found) != (added["added"][0] in found), found
    shown, status = Client(app.url, auth=TEACHER, verbose=False).predict(api_name="/near_duplicates")
    assert status.startswith("1 group of near-duplicates") and [c["caption"].split(" · ")[1] for c in shown] == ["oldest", "copy"]
    run = subprocess.run([sys.executable, "-m", "core", "library", "near-duplicates", "--model", "mini", "--library",
                          str(app.wb.root), "--offline", "--no-fallback"], capture_output=True, text=True, timeout=300,
                         cwd=PROJECT_ROOT)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [f"{star_id} {added['added'][0]}"]
    wider = subprocess.run([sys.executable, "-m", "core", "library", "near-duplicates", "--threshold", "1.01",
                            "--model", "mini", "--library", str(app.wb.root), "--offline", "--no-fallback"],
                           capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT)
    assert wider.returncode == 0 and wider.stdout == ""


def test_the_command_line_adds_under_the_apps_rules(app, tmp_path):
    app.wb.safety.record()   # demo.py does this at start
    other = tmp_path / "circle_from_disk.png"
    other.write_bytes(png(Image.open(RED_CIRCLE).convert("RGB").rotate(90)))
    run = subprocess.run([sys.executable, "-m", "core", "index", str(other), "--model", "mini", "--library",
                          str(app.wb.root), "--offline", "--no-fallback", "--quiet"], capture_output=True, text=True,
                         timeout=300, cwd=PROJECT_ROOT)
    assert run.returncode == 0, run.stderr
    held = [line for line in run.stdout.splitlines() if line.startswith("  held for review: ")]
    assert len(held) == 1, run.stdout
    image_id = held[0].split(": ")[1]
    assert httpx.get(app.url + f"api/images/{image_id}", auth=BOB).status_code == 404
    assert image_id in {h["id"] for h in httpx.get(app.url + "api/review", auth=TEACHER).json()["held"]}
    said = Client(app.url, auth=TEACHER, verbose=False).predict(image_id, api_name="/reject_image")
    assert said.startswith("Deleted circle_from_disk.png")
    assert image_id not in {h["id"] for h in httpx.get(app.url + "api/review", auth=TEACHER).json()["held"]}


def test_a_shared_link_keeps_no_history_in_the_browser_and_says_its_filter(app):
    with httpx.Client(base_url=app.url, timeout=60) as browser:
        assert browser.post("login", data={"username": BOB[0], "password": BOB[1]}).status_code == 200
        config = browser.get("config").json()
    assert config["run_history"] is False and "runs" not in config["footer_links"]
    assert config["max_file_size"] == MAX_BYTES   # an oversized upload is refused before it is read
    banner = json.dumps(config, ensure_ascii=False)
    assert "Safety filter:** standard" in banner and "class_rules.txt" in banner


# ---------------------------------------------------------------- the front door alone

@pytest.fixture
def class_wb(tmp_path):
    def make(mode: str, concepts=None):
        access = Access(Accounts.parse(["ann:pw"], ["teacher:pw"], env={}))
        wb = build_workbench("mini", tmp_path / mode, device="cpu", offline=True, fallback=False, access=access,
                             safety=SafetyConfig(mode=mode, shared=True, concepts=concepts))
        return wb, access.caller("ann", surface="page"), access.caller("teacher", surface="page")
    return make


def test_strict_mode_holds_every_student_upload_not_the_teachers(class_wb, rules):
    wb, ann, teacher = class_wb("strict", str(rules))
    assert wb.add([BLUE_STAR], caller=ann).held and not wb.add([GREEN_SQUARE], caller=teacher).held
    assert [h.why for _, h in wb.review(teacher)] == ["strict"]
    assert [e.name for e in wb.page(1, caller=ann).entries] == [GREEN_SQUARE.name]


def test_a_model_that_cannot_judge_holds_students_uploads_and_says_so(class_wb):
    wb, ann, teacher = class_wb("standard")   # the built-in list: the mini model knows none of its words
    assert wb.safety.cannot_judge() and wb.safety.describe().startswith("none: the model")
    report = wb.add([BLUE_STAR], caller=ann)
    assert report.held == report.added and [h.why for _, h in wb.review(teacher)] == ["unjudged"]
    assert not wb.add([GREEN_SQUARE], caller=teacher).held
    assert wb.search(SearchQuery(text="a shape", k=5), ann).hits[0].name == GREEN_SQUARE.name
    assert len(wb.search(SearchQuery(text="a shape", k=5), ann).hits) == 1


def test_the_hold_is_on_disk_before_the_image_is_acknowledged(class_wb, rules, monkeypatch):
    wb, ann, _ = class_wb("standard", str(rules))
    seen = {}
    add = type(wb.library).add

    def spying_add(library, images):
        seen.update({im.sha256: wb.safety.review.is_held(im.sha256) for im in images})   # a fresh read of review.json
        return add(library, images)
    monkeypatch.setattr(type(wb.library), "add", spying_add)
    wb.add([RED_CIRCLE, BLUE_STAR], caller=ann)
    assert sorted(seen.values()) == [False, True]


def test_removing_a_waiting_image_forgets_its_hold(class_wb, rules):
    wb, ann, teacher = class_wb("standard", str(rules))
    image_id, = wb.add([RED_CIRCLE], caller=ann).held
    wb.remove([image_id], teacher)
    assert wb.safety.review.held() == {} and wb.stats()["safety"]["held"] == 0


def test_demo_turns_safety_on_when_others_reach_the_app(monkeypatch, rules):
    monkeypatch.delenv("CLIP_WB_SAFETY", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert demo.parse_args([]).safety_config.mode == "off"
    shared = demo.parse_args(["--share", "--admin", "t:pw"]).safety_config
    assert shared.mode == "standard" and shared.shared and shared.collapses
    assert demo.parse_args(["--auth", "a:pw"]).safety_config.mode == "standard"
    assert demo.parse_args(["--safety", "strict", "--safety-concepts", str(rules)]).safety_config.concepts == str(rules)
    monkeypatch.setenv("CLIP_WB_SAFETY", "off")
    assert demo.parse_args(["--auth", "a:pw"]).safety_config.mode == "off"
    monkeypatch.setenv("SPACE_ID", "someone/app")
    monkeypatch.setenv("CLIP_WB_SAFETY", "strict")
    monkeypatch.setenv("CLIP_WB_SAFETY_CONCEPTS", str(rules))
    space = demo.parse_args([]).safety_config
    assert space.mode == "strict" and space.shared and space.concepts == str(rules)


def test_the_learn_tab_shows_a_student_no_waiting_image(class_wb, rules):
    wb, ann, teacher = class_wb("standard", str(rules))
    wb.add([RED_CIRCLE, BLUE_STAR], caller=ann)
    assert {p.name for p in wb.learn.embedding_map(caller=ann).points} == {BLUE_STAR.name}
    assert {p.name for p in wb.learn.embedding_map(caller=teacher).points} == {BLUE_STAR.name, RED_CIRCLE.name}

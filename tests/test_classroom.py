"""A class on one link: served paths, roles, login throttling, quotas, bad files at every endpoint,
a full disk at every write step, and a few concurrent students (correctness only; speed lives in
benchmarks/bench_classroom.py)."""
from __future__ import annotations

import errno
import io
import json
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from core.access import Accounts, Limits
from core.errors import LibraryError
from core.images import load_image
from core.library.ingest import Upload, ingest, open_library
from core.library.store import Library
from core.settings import ASSETS_DIR
from core_fixtures import distinct_pngs
from ui_server import serve

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:.*:Warning:gradio.queueing")
CAT = ASSETS_DIR / "samples" / "cat_chelsea.jpg"
STUDENT, TEACHER = ("ann", "pw-ann"), ("teacher", "pw-teacher")


def huge_png(side: int = 12248) -> bytes:
    """A valid greyscale PNG of side x side pixels that compresses to ~150 KB (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = zlib.compressobj(9)
    body = b"".join(raw.compress(b"\0" * (side + 1)) for _ in range(side)) + raw.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def bad_files(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {"empty.png": b"", "notes.png": b"just some text, not an image\n",
             "page.png": b"<!doctype html><html><body><script>alert(1)</script></body></html>",
             "bomb.png": huge_png()}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return {name: folder / name for name in files}


@pytest.fixture(scope="module")
def open_app(tiny_clip_path, tmp_path_factory):
    with serve(tiny_clip_path, tmp_path_factory.mktemp("class_open") / "library", lang="en") as served:
        Client(served.url, verbose=False).predict([handle_file(CAT)], api_name="/add_to_library")
        yield served


@pytest.fixture(scope="module")
def class_app(tiny_clip_path, tmp_path_factory):
    with serve(tiny_clip_path, tmp_path_factory.mktemp("class_auth") / "library", lang="en",
               auth=[STUDENT, ("bob", "pw-bob")], admin=TEACHER) as served:
        Client(served.url, auth=TEACHER, verbose=False).predict([handle_file(CAT)], api_name="/add_to_library")
        yield served


def private_files(app) -> list[Path]:
    root = Path(app.wb.root).resolve()
    files = [root / "store.json", root / "journal.log", root / ".lock", root / "features_library.pth",
             ASSETS_DIR / "mini" / "mini_clip_shapes.pt", ASSETS_DIR / "mini" / "metrics.json"]
    files += sorted((root / "store").glob("*.npy"))[:3]
    assert all(p.exists() for p in files), [p for p in files if not p.exists()]
    return files


def _urls(path: Path) -> list[str]:
    return [f"gradio_api/file={path}", f"file={path}", f"gradio_api/file={path.parent}/../{path.parent.name}/{path.name}"]


# ---------------------------------------------------------------- served paths

@pytest.mark.parametrize("logged_in", [False, True])
def test_only_images_thumbnails_and_samples_are_served(open_app, class_app, logged_in):
    app = class_app if logged_in else open_app
    with httpx.Client(base_url=app.url, timeout=30) as http:
        if logged_in:   # a student who logged in through the form still gets nothing private
            assert http.post("login", data={"username": STUDENT[0], "password": STUDENT[1]}).status_code == 200
        for path in private_files(app):
            for url in _urls(path):
                r = http.get(url)
                assert r.status_code in (403, 404), (url, r.status_code)
                assert path.read_bytes()[:64] not in r.content or not path.read_bytes()[:64]
        entry = app.wb.page(1).entries[0]
        for allowed in (app.wb.thumbnail(entry), entry.path, ASSETS_DIR / "samples" / "cat_chelsea.jpg"):
            r = http.get(f"gradio_api/file={Path(allowed).resolve()}")
            assert r.status_code == 200 and r.content == Path(allowed).read_bytes()


def test_library_gallery_serves_thumbnails_in_place(open_app):
    """Thumbnails are static files: the gallery links to the library's thumbs/, not a per-request copy."""
    with httpx.Client(base_url=open_app.url, timeout=30) as http:
        event = http.post("gradio_api/call/library_page", json={"data": [1]}).json()["event_id"]
        stream = http.get(f"gradio_api/call/library_page/{event}").text
    payload = json.loads(stream.split("event: complete\ndata:", 1)[1].strip().splitlines()[0])
    thumbs = str(Path(open_app.wb.root).resolve() / "thumbs")
    assert payload[0] and all(item["image"]["path"].startswith(thumbs) for item in payload[0]), payload[0][0]


def test_api_serves_nothing_by_path(open_app):
    with httpx.Client(base_url=open_app.url, timeout=30) as http:
        for bad in ("../store.json", "..%2Fstore.json", "%2e%2e/journal.log", "store.json"):
            for route in (f"api/images/{bad}", f"api/images/{bad}/thumb"):
                r = http.get(route)
                assert r.status_code in (400, 404) and b"generation" not in r.content, (route, r.status_code)


# ---------------------------------------------------------------- roles and logins

@pytest.mark.parametrize("api, args", [("/remove_image", ["{id}"]), ("/compact_library", []),
                                       ("/repair_library", []), ("/seed_library", [])])
def test_students_cannot_delete_or_maintain(class_app, api, args):
    image_id = class_app.wb.page(1).entries[0].id
    n = len(class_app.wb)
    with pytest.raises(AppError) as e:
        Client(class_app.url, auth=STUDENT, verbose=False).predict(*[a.format(id=image_id) for a in args],
                                                                   api_name=api)
    assert "Only the teacher" in str(e.value)   # the English UI's text; the Chinese one: tests/test_messages_library.py
    assert len(class_app.wb) == n


def test_students_search_classify_and_upload_the_teacher_deletes(class_app, tmp_path):
    student = Client(class_app.url, auth=("bob", "pw-bob"), verbose=False)
    png = tmp_path / "bob.png"
    png.write_bytes(distinct_pngs(1, seed=7)[0])
    assert "Added 1" in student.predict([handle_file(png)], api_name="/add_to_library")
    hits, _ = student.predict("a cat", None, "", 3, 0, api_name="/search")
    assert hits
    teacher = Client(class_app.url, auth=TEACHER, verbose=False)
    image_id = class_app.wb.page(1).entries[0].id
    assert "Deleted" in teacher.predict(image_id, api_name="/remove_image")
    teacher.predict(api_name="/compact_library")


def test_without_logins_the_one_local_user_may_do_everything(open_app, tmp_path):
    client = Client(open_app.url, verbose=False)
    png = tmp_path / "local.png"
    png.write_bytes(distinct_pngs(1, seed=8)[0])
    client.predict([handle_file(png)], api_name="/add_to_library")
    image_id = open_app.wb.page(1).entries[0].id
    assert "Deleted" in client.predict(image_id, api_name="/remove_image")


def test_failed_logins_are_throttled_per_client_and_name(class_app):
    throttle = class_app.access.throttle
    try:
        with httpx.Client(base_url=class_app.url, timeout=30) as http:
            codes = [http.post("login", data={"username": "ann", "password": f"guess{i}"}).status_code
                     for i in range(throttle.limit)]
            assert codes == [400] * throttle.limit
            r = http.post("login", data={"username": "ann", "password": STUDENT[1]})   # even the right one, for now
            assert r.status_code == 429 and "Retry-After" in r.headers and "登录" in r.json()["detail"]
            assert http.get("api/stats", auth=STUDENT).status_code == 429   # the JSON API shares the counter
            # a classmate behind the same school address is not locked out by ann's typos
            assert http.post("login", data={"username": "bob", "password": "pw-bob"}).status_code == 200
    finally:
        throttle.succeeded("127.0.0.1")
    with httpx.Client(base_url=class_app.url, timeout=30) as http:
        assert http.post("login", data={"username": "ann", "password": STUDENT[1]}).status_code == 200


def test_logins_from_environment_and_file(tmp_path):
    secrets = tmp_path / "logins.txt"
    secrets.write_text("# class 3b\ncarl:pw-c\nadmin head:pw-h\n", encoding="utf-8")
    accounts = Accounts.parse(["ann:pw"], [], env={"CLIP_WB_AUTH": "dan:pw-d, eve:pw-e", "CLIP_WB_ADMIN": "t:pw-t",
                                                  "CLIP_WB_AUTH_FILE": str(secrets)})
    assert set(accounts.students) == {"ann", "dan", "eve", "carl"} and set(accounts.admins) == {"t", "head"}
    assert accounts.check("head", "pw-h") and not accounts.check("head", "pw-c") and not accounts.check("x", "")
    with pytest.raises(ValueError, match="user:password"):
        Accounts.parse(["no-colon"], env={})


# ---------------------------------------------------------------- quotas and temp files

def test_upload_quota_and_library_budget(tiny_clip_path, tmp_path, monkeypatch):
    import ui.callbacks
    monkeypatch.setattr(ui.callbacks, "UPLOAD_GRACE_S", 0.0)
    big = [tmp_path / f"big{i}.png" for i in range(3)]
    for i, p in enumerate(big):   # ~190 KB of noise each: incompressible
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (150, 420, 3), dtype=np.uint8)).save(p)
    limits = Limits(quota_mb=0.45, budget_mb=0.7)
    with serve(tiny_clip_path, tmp_path / "library", lang="en", auth=[STUDENT, ("bob", "pw-bob")], admin=TEACHER,
               limits=limits) as app:
        ann, bob = (Client(app.url, auth=a, verbose=False) for a in (STUDENT, ("bob", "pw-bob")))
        assert "Added 2" in ann.predict([handle_file(p) for p in big[:2]], api_name="/add_to_library")
        assert "already present 2" in ann.predict([handle_file(p) for p in big[:2]], api_name="/add_to_library")
        with pytest.raises(AppError, match="quota"):   # duplicates did not count, the third goes over
            ann.predict([handle_file(big[2])], api_name="/add_to_library")
        (tmp_path / "big3.png").write_bytes(big[2].read_bytes()[:-20] + b"\0" * 20)
        assert "Added 1" in bob.predict([handle_file(big[2])], api_name="/add_to_library")
        with pytest.raises(AppError, match="library is full"):
            bob.predict([handle_file(tmp_path / "big3.png")], api_name="/add_to_library")
        r = httpx.post(app.url + "api/images", auth=STUDENT, files=[("files", ("b.png", (tmp_path / "big3.png").read_bytes()))])
        assert r.status_code == 413 and r.json()["kind"] == "QuotaError"
        uploads = Path(app.demo.GRADIO_CACHE)
        left = [p.name for p in uploads.rglob("big*.png")]
        assert not left, f"uploads left in Gradio's temp folder: {left}"


def test_classify_search_and_caption_uploads_do_not_stay(tiny_clip_path, tmp_path, monkeypatch):
    """An upload that is only looked at (classify, search, caption) is deleted once its request is
    done (after a grace that is 0 here), not kept a day in Gradio's folder; a box still showing it
    then gets a clear 'upload it again', not a file error."""
    import ui.callbacks
    monkeypatch.setattr(ui.callbacks, "UPLOAD_GRACE_S", 0.0)
    with serve(tiny_clip_path, tmp_path / "library", lang="en") as app:
        client = Client(app.url, verbose=False)
        calls = {"looked_classify.png": ("/classify", lambda f: [f, "custom", "cat, dog", "single", "", False]),
                 "looked_search.png": ("/search", lambda f: ["", f, "", 3, 0]),
                 "looked_caption.png": ("/caption", lambda f: [f])}
        for i, (name, (api, args)) in enumerate(calls.items()):
            path = tmp_path / name
            Image.fromarray(np.random.default_rng(i).integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(path)
            try:
                client.predict(*args(handle_file(path)), api_name=api)
            except AppError:   # the tiny model has no captioner offline: the upload must go all the same
                pass
        left = [p.name for p in Path(app.demo.GRADIO_CACHE).rglob("looked_*.png")]
        assert not left, f"uploads left in Gradio's temp folder: {left}"
        stale = Path(ui.callbacks.gr.utils.get_upload_folder()) / "gone" / "x.png"
        cb = ui.callbacks.Callbacks(app.wb)
        result, said = cb.classify(str(stale), "custom", "cat, dog", "single", "", False, "zh", page=True)
        assert result is None and "请重新上传" in said


# ---------------------------------------------------------------- bad files at every endpoint

def test_bad_files_get_the_same_clear_error_at_every_endpoint(open_app, tmp_path):
    client = Client(open_app.url, verbose=False)
    reasons = {"empty.png": "empty", "notes.png": "not an image", "page.png": "not an image", "bomb.png": "pixel limit"}
    for name, path in bad_files(tmp_path).items():
        calls = {"/classify": ([handle_file(path), "custom", "cat, dog", "single", "", False]),
                 "/search": (["", handle_file(path), "", 3, 0]), "/caption": ([handle_file(path)])}
        for api, args in calls.items():
            with pytest.raises(AppError) as e:
                client.predict(*args, api_name=api)
            text = str(e.value)
            assert f"Cannot read image {name}" in text and reasons[name] in text, (api, name, text)
        summary = client.predict([handle_file(path)], api_name="/add_to_library")
        assert f"{name}: " in summary and reasons[name] in summary, summary


def test_16_bit_and_uniform_images_keep_their_brightness(tmp_path):
    grey = np.full((20, 30), 30000, dtype=np.uint16)
    ramp = np.tile(np.linspace(0, 65535, 30).astype(np.uint16), (20, 1))
    for name, arr, expect in (("uniform16.png", grey, 30000 / 257), ("ramp16.png", ramp, None)):
        path = tmp_path / name
        Image.fromarray(arr).save(path)
        rgb = np.asarray(load_image(path)).astype(float)
        if expect is not None:
            assert abs(rgb.mean() - expect) < 1.5, rgb.mean()
        else:
            assert rgb[:, 0].mean() < 2 and rgb[:, -1].mean() > 253
    white8 = tmp_path / "white.png"
    Image.new("L", (10, 10), 255).save(white8)
    assert np.asarray(load_image(white8)).min() == 255


def test_stats_are_fresh_after_another_process_adds(open_app):
    count = lambda text: int(text.split("**Images:**")[1].split("·")[0])  # noqa: E731
    before = count(Client(open_app.url, verbose=False).predict(api_name="/library_stats"))
    other = Library(open_app.wb.root, open_app.wb.library.model_id, open_app.wb.library.dim)
    ingest(other, open_app.wb.encoder, [Upload("fresh.png", distinct_pngs(1, seed=99)[0])])
    after = count(Client(open_app.url, verbose=False).predict(api_name="/library_stats"))
    assert after == before + 1


# ---------------------------------------------------------------- a full disk at every write step

def _fail_at(monkeypatch, n: int) -> dict:
    """Make the n-th os.fsync / os.replace / syncfs (the one sync of a batch's images) from now
    raise ENOSPC (as a full disk would)."""
    import os
    from core.library import journal
    count = {"calls": 0, "fired": False}
    real = {"fsync": os.fsync, "replace": os.replace, "syncfs": journal.syncfs}

    def make(name):
        def fake(*args):
            count["calls"] += 1
            if count["calls"] == n:
                count["fired"] = True
                raise OSError(errno.ENOSPC, "No space left on device")
            return real[name](*args)
        return fake
    monkeypatch.setattr(os, "fsync", make("fsync"))
    monkeypatch.setattr(os, "replace", make("replace"))
    monkeypatch.setattr(journal, "syncfs", make("syncfs"))
    return count


# An add of 3 images makes 8 calls (1 syncfs for the staged images, 1 journal fsync, 3 renames into
# images/, 3 thumbnails), a compaction 18: 26 steps (an add made 14 calls before its images were
# synced in one call; with an fsync per image, where syncfs is missing, the later steps skip).
@pytest.mark.parametrize("step", range(1, 40))
def test_disk_full_at_any_step_of_an_add_or_compaction(encoder, tmp_path, monkeypatch, step):
    lib = open_library(tmp_path / "lib", encoder)
    first = ingest(lib, encoder, [Upload(f"a{i}.png", d) for i, d in enumerate(distinct_pngs(3, seed=1))])
    acked = set(first.added)
    count = _fail_at(monkeypatch, step)
    try:
        report = ingest(lib, encoder, [Upload(f"b{i}.png", d) for i, d in enumerate(distinct_pngs(3, seed=2))])
        acked |= set(report.added)
        lib.compact()
    except LibraryError as e:
        assert "disk is full" in str(e) or "No space" in str(e)
    monkeypatch.undo()
    if not count["fired"]:
        pytest.skip(f"an add + compaction makes fewer than {step} fsync/replace calls")
    reopened = Library(lib.root, lib.model_id, lib.dim)
    stored = {e.id for e in reopened.entries()}
    assert acked <= stored, f"lost {acked - stored}"
    assert reopened.verify()["healthy"]
    assert not list((lib.root / "staging").iterdir())
    assert not [p.name for p in lib.root.rglob(".*.tmp")]
    ingest(reopened, encoder, [Upload("after.png", distinct_pngs(1, seed=3)[0])])   # and it still takes adds
    assert Library(lib.root, lib.model_id, lib.dim).verify()["healthy"]


# ---------------------------------------------------------------- a few students at once

def test_a_few_students_at_once_lose_nothing(class_app, tmp_path):
    students = [STUDENT, ("bob", "pw-bob")] * 2

    def student(i: int) -> list[str]:
        client = Client(class_app.url, auth=students[i], verbose=False)
        paths = []
        for j, data in enumerate(distinct_pngs(3, seed=200 + i)):
            paths.append(tmp_path / f"s{i}_{j}.png")
            paths[-1].write_bytes(data)
        summary = client.predict([handle_file(p) for p in paths], api_name="/add_to_library")
        assert "unreadable 0" in summary
        client.predict("a cat", None, "", 5, 0, api_name="/search")
        client.predict("一只猫", None, "", 5, 0, api_name="/search")
        client.predict(handle_file(paths[0]), "custom", "cat, dog", "single", "", False, api_name="/classify")
        client.predict(1, api_name="/library_page")
        return [__import__("hashlib").sha256(p.read_bytes()).hexdigest() for p in paths]

    with ThreadPoolExecutor(4) as pool:
        shas = [s for batch in pool.map(student, range(4)) for s in batch]
    lib = Library(class_app.wb.root, class_app.wb.library.model_id, class_app.wb.library.dim)
    stored = [e.sha256 for e in lib.entries()]
    assert set(shas) <= set(stored) and len(stored) == len(set(stored))
    assert lib.verify()["healthy"]


def test_image_loader_refuses_a_bomb_before_decoding():
    from core.errors import ImageError
    with pytest.raises(ImageError, match="pixel limit"):
        load_image(io.BytesIO(huge_png()).getvalue(), "bomb.png")


def test_index_names_every_skipped_path_with_its_reason(encoder, tmp_path):
    import os
    photos = tmp_path / "photos"
    (photos / "x.jpg").mkdir(parents=True)
    (photos / "x.jpg" / "inside.png").write_bytes(distinct_pngs(1, seed=5)[0])
    (photos / "real.png").write_bytes(distinct_pngs(1, seed=6)[0])
    os.mkfifo(photos / "pipe.png")   # reading it would block forever
    (photos / "broken.jpg").symlink_to(tmp_path / "gone.jpg")
    report = ingest(open_library(tmp_path / "lib", encoder), encoder, [photos, photos / "x.jpg"])
    reasons = dict(report.errors)
    assert len(report.added) == 1 and set(reasons) == {"x.jpg", "pipe.png", "broken.jpg"}
    assert "not a regular file" in reasons["x.jpg"] and "not a regular file" in reasons["pipe.png"]
    assert "No such file" in reasons["broken.jpg"]


# ---------------------------------------------------------------- no server paths for students

def test_students_see_no_server_paths_the_teacher_does(tmp_path):
    """The offline start's notice names the model cache under the server's home folder, and the
    library stats its folder: a student reads neither (page stats, /api/stats, the banner), the
    teacher sees the library's folder in the stats."""
    cache = tmp_path / "secret-home" / "model-cache"
    with serve("ViT-B/32", tmp_path / "lib", lang="en", auth=STUDENT, admin=TEACHER, fallback_cache=cache) as app:
        assert str(cache) in app.wb.notice                      # the raw notice does name it
        student, teacher = (Client(app.url, auth=who, verbose=False) for who in (STUDENT, TEACHER))
        said = student.predict(api_name="/library_stats")
        assert "secret-home" not in said and str(tmp_path) not in said and "Path" not in said, said
        assert str(app.wb.root) in teacher.predict(api_name="/library_stats")
        notice = httpx.get(app.url + "api/stats", auth=STUDENT).json()["notice"]
        assert notice and "secret-home" not in notice and "(…/ViT-B-32.pt)" in notice, notice
        assert str(cache) in httpx.get(app.url + "api/stats", auth=TEACHER).json()["notice"]
        banner = [b.value for b in app.demo.blocks.values() if getattr(b, "elem_id", None) == "notice-detail"]
        assert banner and "secret-home" not in banner[0], banner

"""The app's API through gradio_client: every api_name, errors, and concurrent uploads.

The app runs in this process (tests/ui_server.py) with a tiny CLIP and a tmp library;
the library is also checked on disk, by reopening it as another process would.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from core.library.store import Library
from core.library.thumbs import thumb_path
from core.settings import ASSETS_DIR
from ui_server import serve

EXPECTED_APIS = {"/classify", "/search", "/search_similar", "/caption", "/add_to_library", "/remove_image",
                 "/library_page", "/library_stats", "/verify_library", "/compact_library", "/seed_library",
                 "/repair_library"}
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:.*:Warning:gradio.queueing")
CAT = ASSETS_DIR / "samples" / "cat_chelsea.jpg"


@pytest.fixture(scope="module")
def app(tiny_clip_path, tmp_path_factory):
    with serve(tiny_clip_path, tmp_path_factory.mktemp("ui_api") / "library", lang="en") as served:
        yield served


@pytest.fixture(scope="module")
def client(app):
    return Client(app.url, verbose=False)


def make_images(folder: Path, n: int, seed: int) -> list[Path]:
    """n distinct small PNG files named img_<seed>_<i>.png."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        j = seed * 100 + i
        p = folder / f"img_{seed}_{i}.png"
        Image.new("RGB", (24 + i % 5, 20), ((j * 37) % 256, (j * 91) % 256, (j * 53) % 256)).save(p)
        paths.append(p)
    return paths


def on_disk(app) -> Library:
    """The library reopened from disk, as the CLI or a restarted app would see it."""
    lib = app.wb.library
    return Library(lib.root, lib.model_id, lib.dim)


def test_every_event_has_its_api_name(client):
    assert EXPECTED_APIS <= set(client.view_api(return_format="dict")["named_endpoints"])


MESSAGE_SLOTS = {"zs-status", "search-info", "caption-status", "lib-summary", "lib-stats", "lib-report",
                 "lib-page-info", "lib-confirm-text", "learn-status", "learn-map-note", "learn-sim-out",
                 "learn-probe-out", "review-status", "review-report", "health-panel"}


def test_every_message_slot_is_written_with_its_memory(app):
    """The language switch says again what each slot's State remembers (ui/language.py): an event that
    wrote a slot without its State would bring an older message back on the next switch."""
    switch = next(f for f in app.demo.fns.values()
                  if f.fn is not None and f.inputs and getattr(f.inputs[0], "elem_id", None) == "lang")
    memories = switch.inputs[1:]
    slots = switch.outputs[len(switch.outputs) - len(memories):]
    assert {s.elem_id for s in slots} == MESSAGE_SLOTS
    for fn in app.demo.fns.values():
        written = {o._id for o in fn.outputs}
        for slot, memory in zip(slots, memories):
            assert fn is switch or slot._id not in written or memory._id in written, (fn.name, slot.elem_id)


def test_add_then_search_finds_it_first(app, client, tmp_path):
    summary = client.predict([handle_file(CAT)], api_name="/add_to_library")
    assert "unreadable 0" in summary
    hits, info = client.predict("", handle_file(CAT), "", 3, 0, api_name="/search")
    assert hits[0]["caption"].endswith("· cat_chelsea.jpg")
    assert float(hits[0]["caption"].split(" · ")[0]) > 0.99   # the same image: cosine 1
    assert "found" in info


def test_duplicate_upload_is_stored_once(app, client):
    client.predict([handle_file(CAT)], api_name="/add_to_library")
    n = len(app.wb.library)
    summary = client.predict([handle_file(CAT)], api_name="/add_to_library")
    assert "Added 0, already present 1" in summary and "already present: cat_chelsea.jpg" in summary
    assert len(on_disk(app)) == n


def test_classify_returns_probabilities(client):
    out, status = client.predict(handle_file(CAT), "custom", "cat, dog, 小鸟", "single", "", False,
                                 api_name="/classify")
    probs = {c["label"]: c["confidence"] for c in out["confidences"]}
    assert set(probs) == {"cat", "dog", "小鸟"} and sum(probs.values()) == pytest.approx(1, abs=1e-4)
    out, _ = client.predict(handle_file(CAT), "cifar10", "", "custom", "a blurry photo of a {c}.", False,
                            api_name="/classify")
    assert len(out["confidences"]) == 5


def test_classify_can_add_to_library(app, client, tmp_path):
    image = make_images(tmp_path, 1, seed=7)[0]
    _, status = client.predict(handle_file(image), "custom", "cat, dog", "single", "", True, api_name="/classify")
    assert "Added 1" in status
    assert any(e.name == image.name for e in on_disk(app).entries())


def test_domain_errors_are_readable(client, tmp_path):
    with pytest.raises(AppError, match="Invalid labels: Only one label"):
        client.predict(handle_file(CAT), "custom", "cat", "single", "", False, api_name="/classify")
    with pytest.raises(AppError, match="Empty query"):
        client.predict("", None, "", 5, 0, api_name="/search")
    with pytest.raises(AppError, match="Library error: 'zz' is not an image id"):
        client.predict("zz", 5, api_name="/search_similar")


def test_corrupt_upload_reports_and_keeps_library(app, client, tmp_path):
    good = make_images(tmp_path, 1, seed=8)[0]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    before = len(on_disk(app))
    summary = client.predict([handle_file(bad), handle_file(good)], api_name="/add_to_library")
    assert "Added 1" in summary and "unreadable 1" in summary and "unreadable: broken.jpg:" in summary
    lib = on_disk(app)
    assert len(lib) == before + 1
    report = lib.verify(deep=True)
    assert not (report["missing_files"] or report["orphan_files"] or report["hash_mismatch"])


def test_search_similar_page_stats_remove(app, client, tmp_path):
    client.predict([handle_file(p) for p in make_images(tmp_path, 3, seed=9)], api_name="/add_to_library")
    items, page_info, page = client.predict(1, api_name="/library_page")
    assert page == 1 and f"{len(app.wb.library)} images" in page_info
    name, image_id = items[0]["caption"].split(" · ")
    hits, info = client.predict(image_id, 3, api_name="/search_similar")
    assert hits[0]["caption"].endswith(name) and name in info
    assert f"**Images:** {len(app.wb.library)}" in client.predict(api_name="/library_stats")
    n = len(app.wb.library)
    assert "Deleted" in client.predict(image_id, api_name="/remove_image")
    assert len(on_disk(app)) == n - 1
    with pytest.raises(AppError, match="No image with id"):
        client.predict(image_id, api_name="/remove_image")


def test_library_page_is_clamped(client):
    _, info, page = client.predict(10_000, api_name="/library_page")
    assert info.startswith(f"Page {page} of {page}")


def test_seed_adds_the_bundled_samples_once(app, client):
    from core.library.ingest import sample_files
    names = {p.name for p in sample_files()}
    client.predict(api_name="/seed_library")
    summary = client.predict(api_name="/seed_library")          # a second click adds nothing
    stored = {e.name for e in on_disk(app).entries()}
    assert names <= stored and f"Added 0, already present {len(names)}" in summary


def test_repair_readds_an_image_that_lost_its_row(app, client, tmp_path):
    lib = app.wb.library
    stray = lib.root / "images" / "ff" / ("f" * 64 + ".png")      # e.g. its journal record was lost
    stray.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (20, 20), (3, 141, 59)).save(stray)
    before = len(lib)
    summary = client.predict(api_name="/repair_library")
    assert "1 image without a row re-added" in summary and len(on_disk(app)) == before + 1
    assert "healthy" in client.predict(api_name="/verify_library")


def test_verify_and_compact(app, client):
    assert "healthy" in client.predict(api_name="/verify_library")
    assert "Compacted" in client.predict(api_name="/compact_library")
    assert on_disk(app).stats()["journal_records"] == 0


def test_caption_explains_missing_model(client):
    en, zh, status = client.predict(handle_file(CAT), api_name="/caption")
    assert en == "" and zh == ""
    assert "--captioner" in status and "HF_ENDPOINT" in status


def test_concurrent_clients_each_image_stored_once(app, tmp_path):
    """Four students upload at once, with overlapping files: every image present exactly once."""
    shared = make_images(tmp_path / "shared", 3, seed=50)
    batches = [make_images(tmp_path / f"s{i}", 4, seed=60 + i) + shared for i in range(4)]
    before = {e.sha256 for e in on_disk(app).entries()}

    def upload(paths):
        return Client(app.url, verbose=False).predict([handle_file(p) for p in paths], api_name="/add_to_library")

    with ThreadPoolExecutor(4) as pool:
        summaries = list(pool.map(upload, batches))
    assert all("unreadable 0" in s for s in summaries)
    lib = on_disk(app)
    shas = [e.sha256 for e in lib.entries()]
    assert len(shas) == len(set(shas))                   # nothing stored twice
    assert len(set(shas) - before) == 4 * 4 + 3          # nothing lost
    names = {e.name for e in lib.entries()}
    assert all(p.name in names for batch in batches for p in batch)
    assert not lib.verify()["missing_files"]


def test_gallery_serves_only_library_and_assets(app, client):
    import httpx
    client.predict([handle_file(CAT)], api_name="/add_to_library")
    from core.settings import PROJECT_ROOT
    for secret in ("/etc/passwd", PROJECT_ROOT / "demo.py", PROJECT_ROOT / "core" / "settings.py"):
        assert httpx.get(f"{app.url}gradio_api/file={secret}").status_code in (403, 404), secret
    assert httpx.get(f"{app.url}gradio_api/file={CAT}").status_code == 200
    thumb = next(iter(app.wb.library.entries()))
    r = httpx.get(f"{app.url}gradio_api/file={thumb_path(app.wb.root, thumb.sha256)}")
    assert r.status_code == 200



# ---------------------------------------------------------------- start-up problems are explained, not raised

def _markdown_texts(blocks) -> list[str]:
    import gradio as gr
    return [b.value for b in blocks.blocks.values() if isinstance(b, gr.Markdown) and isinstance(b.value, str)]


def test_library_of_another_model_starts_and_explains(tiny_clip_path, tmp_path):
    import demo
    from core.workbench import build_workbench
    from tiny_models import make_tiny_clip_file
    other = make_tiny_clip_file(tmp_path / "other_clip.pt", seed=1)
    build_workbench(str(other), tmp_path / "lib", device="cpu", offline=True, fallback=False)
    args = demo.parse_args(["--model", str(tiny_clip_path), "--library", str(tmp_path / "lib"),
                            "--device", "cpu", "--offline", "--lang", "en"])
    blocks, options = demo.build(args)
    text = "\n".join(_markdown_texts(blocks))
    assert "What is wrong" in text and "other_clip" in text
    assert f"python -m core library reindex --model {tiny_clip_path}" in text
    assert options["allowed_paths"] == [str(ASSETS_DIR / "samples"), str(ASSETS_DIR / "shapes")]   # never the library


def test_unknown_model_starts_and_explains(tmp_path):
    import demo
    blocks, _ = demo.build(demo.parse_args(["--model", str(tmp_path / "nope.pt"), "--library", str(tmp_path / "lib"),
                                            "--device", "cpu", "--offline", "--lang", "zh"]))
    text = "\n".join(_markdown_texts(blocks))
    assert "出了什么问题" in text and "nope.pt" in text


def test_fallback_notice_is_shown_in_a_banner(app):
    from ui import build_app
    app.wb.notice = "Could not download ViT-B/32. Using the bundled offline mini model instead."
    try:
        blocks = build_app(app.wb, lang="en")
    finally:
        app.wb.notice = None
    banner = [b for b in blocks.blocks.values() if getattr(b, "elem_id", None) == "notice"]
    assert banner and "bundled offline mini model" in banner[0].value


def test_share_without_auth_is_refused_unless_public(caplog, monkeypatch, tmp_path):
    import demo
    from ui import launch_options
    for name in ("CLIP_WB_AUTH", "CLIP_WB_ADMIN", "CLIP_WB_AUTH_FILE"):
        monkeypatch.delenv(name, raising=False)
    launched = {}
    fake = type("B", (), {"launch": lambda self, **kw: launched.update(kw), "block_thread": lambda self: None,
                          "local_url": "http://127.0.0.1:7860/", "share_url": None})
    monkeypatch.setattr(demo, "build", lambda args: (fake(), launch_options(None, args.access)))
    assert demo.main(["--share"]) == 2 and "--share without --auth" in caplog.text and not launched
    assert demo.main(["--share", "--share-public"]) == 0 and launched["share"] is True and launched["auth"] is None
    demo.main(["--share", "--auth", "ann:pw1", "--auth", "bob:pw2", "--admin", "teacher:secret"])
    check = launched["auth"]
    assert check("ann", "pw1") and check("bob", "pw2") and check("teacher", "secret") and not check("ann", "pw2")


def test_docs_api_snippets_run(app, client, tmp_path, monkeypatch, capsys):
    """The gradio_client snippets in docs/API.md run as written against a live app."""
    import re
    import shutil
    from core.settings import PROJECT_ROOT
    client.predict([handle_file(CAT)], api_name="/add_to_library")   # the id used in the docs
    monkeypatch.chdir(tmp_path)
    for name in ("photo.jpg", "a.jpg", "query.jpg"):
        shutil.copy(CAT if name != "a.jpg" else ASSETS_DIR / "samples" / "rocket.jpg", name)
    make_images(tmp_path, 1, seed=90)[0].rename("b.png")
    Path("not-an-image.jpg").write_text("hello")
    doc = (PROJECT_ROOT / "docs" / "API.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", doc, flags=re.S)
    code = "\n".join(blocks).replace('"http://127.0.0.1:7860/"', repr(app.url))
    exec(compile(code, "docs/API.md", "exec"), {})
    out = capsys.readouterr().out
    assert "unreadable: not-an-image.jpg" in out and "Deleted" in out


class _FakeTranslator:
    """Stands in for NLLB (no weights in tests): a fixed zh->en dictionary."""
    def translate(self, texts, to="en"):
        return [{"一只猫": "a cat"}.get(t, t) for t in texts]


def test_chinese_query_shows_the_english_query_used(app, client):
    client.predict([handle_file(CAT)], api_name="/add_to_library")
    lazy = app.wb._lazy   # the Workbench's lazily built services; inject the translator it would load
    saved = lazy.get("translator")
    lazy["translator"] = _FakeTranslator()
    try:
        _, info = client.predict("一只猫", None, "", 3, 0, api_name="/search")
    finally:
        lazy.pop("translator")
        if saved is not None:
            lazy["translator"] = saved
    assert "English query" in info and "'a cat'" in info


def test_chinese_query_without_translator_says_so(client):
    _, info = client.predict("一只猫", None, "", 3, 0, api_name="/search")
    assert "untranslated" in info


def test_library_pages_of_48_newest_first_and_thumbnails_rebuilt(app, client, tmp_path):
    files = make_images(tmp_path, 50, seed=30)
    client.predict([handle_file(p) for p in files], api_name="/add_to_library")
    n = len(app.wb.library)
    items, info, page = client.predict(1, api_name="/library_page")
    assert len(items) == 48 and items[0]["caption"].startswith("img_30_49.png")   # newest first
    last_page = -(-n // 48)
    items, info, page = client.predict(last_page, api_name="/library_page")
    assert page == last_page and len(items) == n - 48 * (last_page - 1)
    newest = app.wb.library.entry(n - 1)
    thumb = thumb_path(app.wb.root, newest.sha256)
    thumb.unlink()
    client.predict(1, api_name="/library_page")
    assert thumb.is_file()   # a missing thumbnail is made again from the stored image


def test_library_gallery_shows_stored_captions(app, client, tmp_path):
    from core.library.ingest import ingest
    (path,) = make_images(tmp_path, 1, seed=77)
    ingest(app.wb.library, app.wb.encoder, [path],
           annotate=lambda images: [{"caption_en": "a small test picture", "caption_zh": "一张小测试图"}])
    items, _, _ = client.predict(1, api_name="/library_page")
    assert items[0]["caption"].startswith(path.name) and items[0]["caption"].endswith("a small test picture")


class _FakeCaptioner:
    """Stands in for ViT-GPT2 (no weights in tests)."""
    def caption(self, images):
        return ["a cat sitting on a couch" for _ in images]


class _FakeZhTranslator:
    def translate(self, texts, to="zh"):
        return ["一只坐在沙发上的猫" for _ in texts]


def test_caption_in_english_and_chinese(app, client):
    lazy = app.wb._lazy   # inject the lazily built captioner/translator the Workbench would load
    saved = dict(lazy)
    lazy.update(captioner=_FakeCaptioner(), translator=_FakeZhTranslator())
    try:
        en, zh, status = client.predict(handle_file(CAT), api_name="/caption")
    finally:
        lazy.clear()
        lazy.update(saved)
    assert (en, zh, status) == ("a cat sitting on a couch", "一只坐在沙发上的猫", "Done.")


def test_the_user_file_follows_uploads(app, client, tmp_path):
    """After an upload batch the app rewrites features_library.pth in the background."""
    import time

    import torch
    image = make_images(tmp_path / "pth", 1, seed=77)[0]
    client.predict([handle_file(str(image))], api_name="/add_to_library")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        snap = torch.load(app.wb.root / "features_library.pth", weights_only=True)
        if any(m.get("name") == image.name for m in snap["meta"]):
            break
        time.sleep(0.2)
    else:
        raise AssertionError("features_library.pth never got the uploaded image")
    assert snap["features"].shape[0] == len(snap["files"]) == len(snap["ids"])
